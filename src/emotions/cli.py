"""`emotions <stage>`: the command line dvc.yaml calls, one sub-command per stage.

Stage modules are imported lazily so `emotions --help` stays instant and a stage's heavy imports
(torch, Great Expectations) are paid only by the stage that needs them. Every failure a user can
cause (bad params, no usable clip, a failed critical expectation) ends with a one-line reason on
stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from emotions import __version__
from emotions.annotation.labelstudio.cli import QueueCommandError, add_queue_commands
from emotions.config import ConfigError, Params, load_params
from emotions.diskspace import is_disk_full, no_space
from emotions.errors import StageError, one_line
from emotions.layout import Layout, RunPaths
from emotions.lifetime import die_with_parent, hold_output, stop_on_signals

LAYOUT = Layout()


def cmd_synth(args: argparse.Namespace, params: Params) -> None:
    from emotions.synth.corpus import synthesize

    taxonomy = params.taxonomies[args.taxonomy]
    summary = synthesize(
        Path(args.out),
        taxonomy=taxonomy,
        config=params.synth,
        clips_per_class=args.clips_per_class or params.synth.clips_per_class,
        seed=params.synth.seed if args.seed is None else args.seed,
        layout=args.layout,
        second_stage_below=params.ingest.second_stage_below,
    )
    print(
        f"wrote {summary.n_clips} clips ({summary.total_bytes / 1e6:.1f} MB, "
        f"{summary.n_conflict} with conflicting modalities) to {summary.out}"
    )


def cmd_ingest(args: argparse.Namespace, params: Params) -> None:
    from emotions.stages.ingest import main as ingest

    ingest(
        params,
        root=Path(args.root),
        out=Path(args.out),
        layout=args.layout,
        dataset=args.dataset,
        taxonomy=args.taxonomy,
    )


def cmd_validate(args: argparse.Namespace, params: Params) -> None:
    from emotions.stages.validate import main as validate

    validate(
        params,
        dataset=args.dataset,
        manifest=Path(args.manifest) if args.manifest else None,
        out=Path(args.out) if args.out else None,
    )


def cmd_variants(args: argparse.Namespace, params: Params) -> None:
    from emotions.stages.variants import main as variants

    variants(params, dataset=args.dataset)


def cmd_preprocess(args: argparse.Namespace, params: Params) -> None:
    from emotions.stages.preprocess import main as preprocess

    preprocess(params, dataset=args.dataset)


def cmd_train(args: argparse.Namespace, params: Params) -> None:
    from emotions.stages.train import main as train

    train(params, run=args.run, resume=not args.no_resume)


def cmd_calibrate(args: argparse.Namespace, params: Params) -> None:
    from emotions.stages.calibrate import main as calibrate

    calibrate(params, run=args.run)


def cmd_evaluate(args: argparse.Namespace, params: Params) -> None:
    from emotions.stages.evaluate import main as evaluate

    evaluate(params, run=args.run)


def _clip_bounds(params_path: str):
    """The clip bounds ingest and the service screen files with (params.yaml's ``ingest``), or
    None (the still-image and no-video rules alone) outside a project folder."""
    from emotions.media.clipcheck import ClipBounds

    if not Path(params_path).is_file():
        return None
    return ClipBounds.of(load_params(params_path).ingest)


def _batch_size(text: str) -> int | str:
    """``--batch-size``: ``auto`` or a positive integer (argparse names the option otherwise)."""
    if text == "auto":
        return text
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def cmd_predict(args: argparse.Namespace, params: Params) -> None:
    import json

    from emotions.serve.predictor import Predictor
    from emotions.serve.sizing import predict_batch_size

    # A folder that is no model, a temperature for other weights, CUDA asked for but absent:
    # StageErrors, one line and exit 2 (main).
    predictor = Predictor(
        args.model,
        device=args.device,
        precision=args.precision,
        threads=args.threads,
        calibration=args.calibration,
        bounds=_clip_bounds(args.params),
    )
    batch_size = predict_batch_size(args.batch_size, predictor, len(args.files))
    failures = 0
    for result in predictor.predict_files(args.files, batch_size=batch_size):
        failures += "error" in result
        print(json.dumps(result, ensure_ascii=False), flush=True)
    if failures == len(args.files):
        raise StageError(f"no prediction: all {failures} file(s) failed")


def cmd_ablate(args: argparse.Namespace, params: Params) -> None:
    from emotions.stages.ablate import main as ablate

    ablate(params)


def cmd_check_params(args: argparse.Namespace, params: Params) -> None:
    from emotions.stages.check_params import main as check_params

    check_params(params)


def cmd_report(args: argparse.Namespace, params: Params) -> None:
    from emotions.stages.report import main as report

    report(params)


def _served_model_dir(args: argparse.Namespace, params: Params) -> Path:
    from emotions.serve.settings import default_model_dir

    if args.model:
        return Path(args.model)
    return default_model_dir(params, args.run or params.serve.run)


def cmd_package(args: argparse.Namespace, params: Params) -> None:
    from emotions.stages.package import main as package

    package(_served_model_dir(args, params), bentofile=Path(args.bentofile), out=Path(args.out))


def cmd_serve(args: argparse.Namespace, params: Params) -> None:
    from emotions import model_folder
    from emotions.serve.launch import exec_serve

    try:
        model_dir = model_folder.require(_served_model_dir(args, params))
    except model_folder.ModelFolderError as error:
        raise StageError(str(error)) from None
    log = Path(args.log) if args.log else None
    calibration = Path(args.calibration) if args.calibration else None
    if calibration is not None and not calibration.is_file():
        raise StageError(f"{calibration}: no such calibration file")
    exec_serve(
        model_dir,
        Path(args.params),
        host=args.host,
        port=args.port,
        log_path=log,
        calibration=calibration,
    )


def cmd_monitor(args: argparse.Namespace, params: Params) -> None:
    from emotions.cache.format import CacheError
    from emotions.monitor.drift import check_log
    from emotions.monitor.reference import MonitorDataError

    run = args.run or params.serve.run
    paths = RunPaths.for_run(params, run)
    config = params.monitor
    threshold = config.threshold if args.threshold is None else args.threshold
    try:
        summary = check_log(
            Path(args.log or params.serve.log_path),
            Path(args.out or config.out),
            model_dir=Path(args.model) if args.model else paths.model_dir,
            cache_dir=paths.cache,
            split_file=paths.split,
            split=config.reference_split,
            threshold=threshold,
            min_rows=config.min_rows if args.min_rows is None else args.min_rows,
            workspace=Path(config.workspace),
            plot_rows=config.embedding_plot_rows,
            threads=config.threads,
            device=params.serve.device,
            precision=params.serve.precision,
        )
    except (MonitorDataError, CacheError, FileNotFoundError) as error:
        raise StageError(str(error)) from None
    verdict = "DRIFT" if summary.drifted else "no drift"
    torn = int(summary.window.get("torn_lines") or 0)
    print(
        f"monitor: {verdict} (share {summary.drift_share:.2f}, threshold {threshold:.2f}; "
        f"drifted: {', '.join(summary.drifted_checks) or 'none'}) -> {summary.report_html}"
        + (f" [{torn} torn log line(s) skipped]" if torn else "")
    )


def cmd_queue(args: argparse.Namespace, params: Params) -> None:
    from emotions.annotation.queue import queue_from_params

    config = params.queue
    if args.max_clips is not None:
        config = config.model_copy(update={"max_clips": args.max_clips})
    result = queue_from_params(
        params,
        config,
        log=Path(args.log) if args.log else None,
        monitor_out=Path(args.monitor_out) if args.monitor_out else None,
        out_root=Path(args.out) if args.out else None,
    )
    reasons = ", ".join(f"{n} {r}" for r, n in result.reasons.items() if n) or "none"
    where = result.queue_dir or "no queue written"
    print(
        f"queue: {result.clips} clip(s) ({reasons}) of {result.candidates} kept, "
        f"{result.already_labelled} already labelled or queued -> {where}"
    )


def cmd_params(args: argparse.Namespace, params: Params) -> None:
    from emotions.params_overlay import apply_overlay, changed, read_yaml, set_args, write_overlay

    base = read_yaml(args.params)
    overlay = read_yaml(args.overlay)
    apply_overlay(args.params, args.overlay)  # validates: a bad key stops here
    if args.set_args:
        print(" ".join(set_args(base, overlay)))
        return
    changes = changed(base, overlay)
    if args.write:
        written = write_overlay(args.params, overlay, args.write)
        print(
            f"params: {args.params} + {args.overlay} -> {written} ({len(changes)} values changed)"
        )
        return
    for key, value in changes:
        print(f"{key}: {value}")
    print(f"params: {args.params} + {args.overlay} is valid ({len(changes)} values change)")


Command = Callable[[argparse.Namespace, Params], None]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emotions", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: params.yaml)"
    )
    parser.add_argument("--version", action="version", version=f"emotions {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")

    synth = sub.add_parser("synth", help="write a sample corpus with learnable audio-visual cues")
    synth.add_argument("out", help="the corpus folder to write")
    synth.add_argument(
        "--clips-per-class", type=int, default=None, help="default: synth.clips_per_class"
    )
    synth.add_argument("--seed", type=int, default=None, help="default: synth.seed")
    synth.add_argument(
        "--layout",
        choices=["emotions", "folder"],
        default="emotions",
        help="emotions: the release layout with annotation stages; folder: one folder per class",
    )
    synth.add_argument("--taxonomy", default="emotions6", help="a key under taxonomies:")
    synth.set_defaults(run_command=cmd_synth)

    ingest = sub.add_parser("ingest", help="probe a corpus into manifest.parquet + quarantine.csv")
    ingest.add_argument(
        "--layout",
        required=True,
        choices=["emotions", "videoemotion8", "ekman6", "folder", "csv", "release", "frames"],
    )
    ingest.add_argument("--root", required=True, help="the corpus folder")
    ingest.add_argument("--out", required=True, help="where the manifest and quarantine go")
    ingest.add_argument("--dataset", default=None, help="take the taxonomy from this dataset")
    ingest.add_argument(
        "--taxonomy", default="emotions6", help="a key under taxonomies: (without --dataset)"
    )
    ingest.set_defaults(run_command=cmd_ingest)

    validate = sub.add_parser("validate", help="Great Expectations suite over a manifest")
    validate.add_argument("--dataset", required=True, help="a key under datasets:")
    validate.add_argument("--manifest", default=None, help="default: the dataset's manifest")
    validate.add_argument("--out", default=None, help="default: the dataset's validation folder")
    validate.set_defaults(run_command=cmd_validate)

    variants = sub.add_parser(
        "variants", help="seeded full / balanced / test-oriented splits, official lists"
    )
    variants.add_argument("--dataset", required=True, help="a key under datasets:")
    variants.set_defaults(run_command=cmd_variants)

    prep = sub.add_parser("preprocess", help="decode every clip once into a memory-mapped cache")
    prep.add_argument("--dataset", required=True, help="a key under datasets:")
    prep.set_defaults(run_command=cmd_preprocess)

    train = sub.add_parser("train", help="train AV-CANet for one run (resumes after a kill)")
    train.add_argument("--run", required=True, help="a key under runs: in params.yaml")
    train.add_argument("--no-resume", action="store_true", help="ignore an unfinished checkpoint")
    train.add_argument("--resume", action="store_true", help="resume (the default; kept explicit)")
    train.set_defaults(run_command=cmd_train)

    calibrate = sub.add_parser("calibrate", help="fit the run's temperature on validation")
    calibrate.add_argument("--run", required=True, help="a key under runs:")
    calibrate.set_defaults(run_command=cmd_calibrate)

    evaluate = sub.add_parser("evaluate", help="test metrics, calibration and plots for one run")
    evaluate.add_argument("--run", required=True, help="a key under runs:")
    evaluate.set_defaults(run_command=cmd_evaluate)

    predict = sub.add_parser("predict", help="predict emotions of video files (JSON lines)")
    predict.add_argument("--model", required=True, help="a trained model folder")
    predict.add_argument("files", nargs="+", help="video files")
    predict.add_argument(
        "--batch-size",
        type=_batch_size,
        default="auto",
        help="clips per forward pass; auto: 8 on a CPU, else measured as the service sizes "
        "its batches (default: auto)",
    )
    predict.add_argument("--threads", type=int, default=2, help="decoder threads per file")
    predict.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when torch sees one) | cpu | cuda | cuda:N (default: auto)",
    )
    predict.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="auto: bf16 autocast on CUDA, fp32 on CPU",
    )
    predict.add_argument(
        "--calibration",
        default=None,
        help="a temperature.json (default: the model folder's, else the run's calibrate output)",
    )
    predict.set_defaults(run_command=cmd_predict, needs_params=False)

    ablate = sub.add_parser("ablate", help="retrain with modality / fusion / loss switched off")
    ablate.set_defaults(run_command=cmd_ablate)

    over = sub.add_parser("params", help="validate / apply a params overlay (params/*.yaml)")
    over.add_argument("--overlay", required=True, help="a partial params file to apply")
    out = over.add_mutually_exclusive_group()
    out.add_argument("--write", default=None, help="write the merged params here")
    out.add_argument(
        "--set-args", action="store_true", help="print `dvc exp run` -S overrides instead"
    )
    over.set_defaults(run_command=cmd_params)

    check = sub.add_parser(
        "check_params", help="validate params.yaml (dvc.yaml's first stage; one line per bad key)"
    )
    check.set_defaults(run_command=cmd_check_params)

    report = sub.add_parser("report", help="the paper-style results table from metrics/")
    report.set_defaults(run_command=cmd_report)

    pack = sub.add_parser("package", help="build the Bento of the service (BentoML store)")
    pack.add_argument("--model", default=None, help="model folder (default: serve.run's)")
    pack.add_argument("--run", default=None, help="serve this run's model folder")
    pack.add_argument("--bentofile", default="bentofile.yaml", help="the Bento definition")
    pack.add_argument("--out", default=str(LAYOUT.bento_tag), help="where the tag is written")
    pack.set_defaults(run_command=cmd_package)

    serve = sub.add_parser("serve", help="run the BentoML service locally (POST /predict)")
    serve.add_argument("--model", default=None, help="model folder (default: serve.run's)")
    serve.add_argument("--run", default=None, help="serve this run's model folder")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=3000, help="port to listen on")
    serve.add_argument("--log", default=None, help="prediction log (default: serve.log_path)")
    serve.add_argument(
        "--calibration",
        default=None,
        help="a temperature.json (default: the model folder's, else the run's calibrate output)",
    )
    serve.set_defaults(run_command=cmd_serve)

    mon = sub.add_parser("monitor", help="Evidently drift of the prediction log vs. validation")
    mon.add_argument("--log", default=None, help="prediction log (default: serve.log_path)")
    mon.add_argument("--out", default=None, help="report folder (default: monitor.out)")
    mon.add_argument("--model", default=None, help="model folder (default: serve.run's)")
    mon.add_argument("--run", default=None, help="the run whose split is the reference")
    mon.add_argument("--threshold", type=float, default=None, help="default: monitor.threshold")
    mon.add_argument("--min-rows", type=int, default=None, help="default: monitor.min_rows")
    mon.set_defaults(run_command=cmd_monitor)

    queue = sub.add_parser(
        "queue", help="pick kept uploads for re-annotation into a queue folder (queue: params)"
    )
    queue.add_argument("--log", default=None, help="prediction log (default: serve.log_path)")
    queue.add_argument("--out", default=None, help="queue folders go here (default: queue.out)")
    queue.add_argument(
        "--monitor-out",
        default=None,
        help="the drift check whose drifted features define drifted_slice (default: monitor.out)",
    )
    queue.add_argument("--max-clips", type=int, default=None, help="default: queue.max_clips")
    queue.set_defaults(run_command=cmd_queue)
    add_queue_commands(queue)
    return parser


# The DVC stages: each dies with the `dvc repro` (or flow) that runs it (emotions.lifetime).
STAGES = frozenset(
    {"ingest", "validate", "variants", "preprocess", "train", "calibrate", "evaluate", "ablate"}
    | {"report", "package"}
)


def output_folder(args: argparse.Namespace, params: Params | None) -> Path | None:
    """The folder a stage writes and holds the lock of while it runs (None: no lock).

    Under torchrun rank 0 alone writes, so only it holds the lock."""
    if params is None or os.environ.get("RANK", "0") != "0":
        return None
    if args.command == "ingest":
        out, root = Path(args.out).resolve(), Path(args.root).resolve()
        return None if out.is_relative_to(root) else out  # refused by ingest: write nothing
    if args.command == "preprocess":
        return LAYOUT.cache(args.dataset)
    if args.command == "train":
        return RunPaths.for_run(params, args.run).model_dir
    return None


def run(args: argparse.Namespace, params: Params | None) -> None:
    """Run the sub-command; a stage holds its output folder's lock meanwhile."""
    folder = output_folder(args, params)
    if folder is None:
        args.run_command(args, params)
        return
    with hold_output(folder):
        args.run_command(args, params)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in STAGES and argv is None:  # a process of its own, not a call in a test
        die_with_parent()
        stop_on_signals()
    try:
        needs_params = getattr(args, "needs_params", True)
        params = load_params(args.params) if needs_params else None
        run(args, params)
    except (ConfigError, StageError, QueueCommandError) as error:
        print(f"emotions {args.command}: {one_line(str(error))}", file=sys.stderr)
        return 2
    except OSError as error:
        where = error.filename or Path.cwd()
        if not is_disk_full(error, where):
            raise
        full = no_space(where)
        print(f"emotions {args.command}: {full}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"emotions {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
