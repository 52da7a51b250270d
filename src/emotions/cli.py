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

from emotions.annotate.cli import QueueCommandError, add_queue_commands
from emotions.config import ConfigError, Params, load_params


class StageError(RuntimeError):
    """A stage cannot go on; the message is what the user reads."""


def _artifacts(dataset: str) -> Path:
    return Path("artifacts") / dataset


def cmd_synth(args: argparse.Namespace, params: Params) -> None:
    from emotions.synth import synthesize

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
    from emotions.data.ingest import NoUsableClipsError, ingest, listed_missing_line
    from emotions.data.sources import SourceOptions

    name = params.dataset(args.dataset).taxonomy if args.dataset else args.taxonomy
    options = SourceOptions()
    if args.dataset:
        dataset = params.dataset(args.dataset)
        options = SourceOptions(dataset.splits, dataset.split_index, dataset.fps)
    try:
        result = ingest(
            Path(args.root),
            Path(args.out),
            layout=args.layout,
            taxonomy=dict(params.taxonomies[name]),
            config=params.ingest,
            options=options,
            aliases=params.aliases_of(name),
        )
    except NoUsableClipsError as error:
        raise StageError(str(error)) from None
    print(
        f"ingest: {len(result.manifest)} usable clips, {len(result.quarantine)} quarantined "
        f"-> {Path(args.out) / 'manifest.parquet'}"
    )
    if "official_split" in result.stats:
        kept = result.stats["official_split"]["kept"]
        print(f"ingest: official split {kept['train']} train, {kept['test']} test clips")
    line = listed_missing_line(result.stats)
    if line:
        print(f"ingest: {line}")


def cmd_validate(args: argparse.Namespace, params: Params) -> None:
    import pandas as pd

    from emotions.data.validate import validate_manifest

    manifest_path = Path(args.manifest or _artifacts(args.dataset) / "manifest.parquet")
    out = Path(args.out or _artifacts(args.dataset) / "validation")
    outcome = validate_manifest(
        pd.read_parquet(manifest_path),
        out,
        taxonomy=params.taxonomy_for(args.dataset),
        config=params.validate_,
        bounds=params.ingest,
    )
    print(outcome.summary)
    if not outcome.success:
        raise StageError(f"validation of {manifest_path} failed (details in {out}/result.json)")


def cmd_variants(args: argparse.Namespace, params: Params) -> None:
    import pandas as pd

    from emotions.data.variants import SplitError, make_variants, write_variants

    dataset = params.dataset(args.dataset)
    manifest = pd.read_parquet(_artifacts(args.dataset) / "manifest.parquet")
    try:
        variants = make_variants(
            manifest, list(dataset.variants), config=params.variants, seed=params.seed
        )
    except SplitError as error:
        raise StageError(str(error)) from None
    written = write_variants(variants, _artifacts(args.dataset) / "variants")
    for name, path in written.items():
        counts = variants[name]["split"].value_counts().to_dict()
        print(f"variant {name}: {counts} -> {path}")


def cmd_preprocess(args: argparse.Namespace, params: Params) -> None:
    from emotions.data.preprocess import preprocess

    dataset = params.dataset(args.dataset)
    result = preprocess(
        Path(dataset.root),
        _artifacts(args.dataset) / "variants",
        _artifacts(args.dataset) / "cache",
        config=params.preprocess,
        frames_fps=dataset.fps,
    )
    print(f"preprocess: {result}")


def cmd_train(args: argparse.Namespace, params: Params) -> None:
    from emotions.liveview import curves_dir, publish_live_view, summary_path
    from emotions.train import RunPaths, train_run

    summary = train_run(params, args.run, resume=not args.no_resume)
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 speaks for the job
    spec = params.run(args.run)
    # The stage's git-tracked view of DVCLive's logs (dvc plots show / dvc exp show).
    publish_live_view(
        RunPaths.for_run(params, args.run).model_dir / "dvclive",
        curves_dir(spec.dataset, spec.variant),
        summary_path(spec.dataset, spec.variant),
    )
    print(
        f"train {args.run}: {summary['epochs']} epochs, best val weighted F1 "
        f"{summary['best_val_weighted_f1']:.3f} at epoch {summary['best_epoch']}"
    )


def cmd_calibrate(args: argparse.Namespace, params: Params) -> None:
    from emotions.calibrate import calibrate_run

    record = calibrate_run(params, args.run)
    print(
        f"calibrate {args.run}: T={record['temperature']:.4g} ({record['status']}), "
        f"val NLL {record['val_nll_raw']:.4f} -> {record['val_nll']:.4f} on {record['n_val']} clips"
    )


def cmd_evaluate(args: argparse.Namespace, params: Params) -> None:
    from emotions.evaluate import evaluate_run

    metrics = evaluate_run(params, args.run)
    shown = ("accuracy", "uar", "weighted_f1", "macro_f1", "polarity_accuracy", "ece")
    scores = ", ".join(f"{key}={metrics[key]:.3f}" for key in shown)
    print(f"evaluate {args.run}: {scores}, n_test={metrics['n_test']}")


def cmd_predict(args: argparse.Namespace, params: Params) -> None:
    import json

    from emotions.calibrate import CalibrationError
    from emotions.inference import ModelFolderError, Predictor

    try:
        predictor = Predictor(args.model, threads=args.threads, calibration=args.calibration)
    except (ModelFolderError, CalibrationError) as error:
        raise StageError(str(error)) from None
    failures = 0
    for result in predictor.predict_files(args.files, batch_size=args.batch_size):
        failures += "error" in result
        print(json.dumps(result, ensure_ascii=False), flush=True)
    if failures == len(args.files):
        raise StageError(f"no prediction: all {failures} file(s) failed")


def cmd_ablate(args: argparse.Namespace, params: Params) -> None:
    from emotions.ablate import ablate

    rows = ablate(params)
    print(f"ablate: {len(rows)} cells -> reports/ablation.md")


def cmd_report(args: argparse.Namespace, params: Params) -> None:
    from emotions.report import write_report

    print(f"report: {write_report(params)}")


def _served_model_dir(args: argparse.Namespace, params: Params) -> Path:
    from emotions.serve.settings import default_model_dir

    if args.model:
        return Path(args.model)
    return default_model_dir(params, args.run or params.serve.run)


def cmd_package(args: argparse.Namespace, params: Params) -> None:
    from emotions.package import PackageError, package

    try:
        result = package(
            _served_model_dir(args, params),
            bentofile=Path(args.bentofile),
            out=Path(args.out),
        )
    except PackageError as error:
        raise StageError(str(error)) from None
    print(result.tag)


def cmd_serve(args: argparse.Namespace, params: Params) -> None:
    from emotions.checkpoints import BEST, META
    from emotions.serve.launch import exec_serve

    model_dir = _served_model_dir(args, params)
    if not (model_dir / META).is_file() or not (model_dir / BEST).is_file():
        raise StageError(
            f"{model_dir}: not a trained model folder (needs {META} and {BEST}; "
            "run `emotions train` or `dvc repro` first)"
        )
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
    from emotions.data.preprocess import CacheError
    from emotions.monitor.drift import check_log
    from emotions.monitor.reference import MonitorDataError
    from emotions.train import RunPaths

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
    from emotions.overlay import apply_overlay, leaves, read_yaml, set_args, write_merged

    base = read_yaml(args.params)
    overlay = read_yaml(args.overlay)
    _, merged = apply_overlay(args.params, args.overlay)  # validates: a bad key stops here
    if args.set_args:
        print(" ".join(set_args(base, overlay)))
        return
    if args.write:
        print(f"params: {args.params} + {args.overlay} -> {write_merged(merged, args.write)}")
        return
    for key, value in leaves(overlay):
        print(f"{key}: {value}")
    print(f"params: {args.params} + {args.overlay} is valid ({len(list(leaves(overlay)))} keys)")


Command = Callable[[argparse.Namespace, Params], None]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emotions", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: params.yaml)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")

    synth = sub.add_parser("synth", help="write a sample corpus with learnable audio-visual cues")
    synth.add_argument("out")
    synth.add_argument("--clips-per-class", type=int, default=None)
    synth.add_argument("--seed", type=int, default=None)
    synth.add_argument("--layout", choices=["emotions", "folder"], default="emotions")
    synth.add_argument("--taxonomy", default="emotions6")
    synth.set_defaults(run_command=cmd_synth)

    ingest = sub.add_parser("ingest", help="probe a corpus into manifest.parquet + quarantine.csv")
    ingest.add_argument(
        "--layout",
        required=True,
        choices=["emotions", "videoemotion8", "ekman6", "folder", "csv", "release", "frames"],
    )
    ingest.add_argument("--root", required=True)
    ingest.add_argument("--out", required=True)
    ingest.add_argument("--dataset", default=None, help="take the taxonomy from this dataset")
    ingest.add_argument("--taxonomy", default="emotions6")
    ingest.set_defaults(run_command=cmd_ingest)

    validate = sub.add_parser("validate", help="Great Expectations suite over a manifest")
    validate.add_argument("--dataset", required=True)
    validate.add_argument("--manifest", default=None)
    validate.add_argument("--out", default=None)
    validate.set_defaults(run_command=cmd_validate)

    variants = sub.add_parser(
        "variants", help="seeded full / balanced / test-oriented splits, official lists"
    )
    variants.add_argument("--dataset", required=True)
    variants.set_defaults(run_command=cmd_variants)

    prep = sub.add_parser("preprocess", help="decode every clip once into a memory-mapped cache")
    prep.add_argument("--dataset", required=True)
    prep.set_defaults(run_command=cmd_preprocess)

    train = sub.add_parser("train", help="train AV-CANet for one run (resumes after a kill)")
    train.add_argument("--run", required=True, help="a key under runs: in params.yaml")
    train.add_argument("--no-resume", action="store_true", help="ignore an unfinished checkpoint")
    train.add_argument("--resume", action="store_true", help="resume (the default; kept explicit)")
    train.set_defaults(run_command=cmd_train)

    calibrate = sub.add_parser("calibrate", help="fit the run's temperature on validation")
    calibrate.add_argument("--run", required=True)
    calibrate.set_defaults(run_command=cmd_calibrate)

    evaluate = sub.add_parser("evaluate", help="test metrics, calibration and plots for one run")
    evaluate.add_argument("--run", required=True)
    evaluate.set_defaults(run_command=cmd_evaluate)

    predict = sub.add_parser("predict", help="predict emotions of video files (JSON lines)")
    predict.add_argument("--model", required=True, help="a trained model folder")
    predict.add_argument("files", nargs="+")
    predict.add_argument("--batch-size", type=int, default=8)
    predict.add_argument("--threads", type=int, default=2, help="decoder threads per file")
    predict.add_argument(
        "--calibration",
        default=None,
        help="a temperature.json (default: the model folder's, else the run's calibrate output)",
    )
    predict.set_defaults(run_command=cmd_predict, needs_params=False)

    ablate = sub.add_parser("ablate", help="retrain with modality / fusion / loss switched off")
    ablate.set_defaults(run_command=cmd_ablate)

    over = sub.add_parser("params", help="validate / apply a params overlay (params/paper.yaml)")
    over.add_argument("--overlay", required=True, help="a partial params file to apply")
    out = over.add_mutually_exclusive_group()
    out.add_argument("--write", default=None, help="write the merged params here")
    out.add_argument(
        "--set-args", action="store_true", help="print `dvc exp run` -S overrides instead"
    )
    over.set_defaults(run_command=cmd_params)

    report = sub.add_parser("report", help="the paper-style results table from metrics/")
    report.set_defaults(run_command=cmd_report)

    pack = sub.add_parser("package", help="build the Bento of the service (BentoML store)")
    pack.add_argument("--model", default=None, help="model folder (default: serve.run's)")
    pack.add_argument("--run", default=None, help="serve this run's model folder")
    pack.add_argument("--bentofile", default="bentofile.yaml")
    pack.add_argument("--out", default="artifacts/bento.txt", help="where the tag is written")
    pack.set_defaults(run_command=cmd_package)

    serve = sub.add_parser("serve", help="run the BentoML service locally (POST /predict)")
    serve.add_argument("--model", default=None, help="model folder (default: serve.run's)")
    serve.add_argument("--run", default=None, help="serve this run's model folder")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3000)
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        needs_params = getattr(args, "needs_params", True)
        params = load_params(args.params) if needs_params else None
        args.run_command(args, params)
    except (ConfigError, StageError, QueueCommandError) as error:
        print(f"emotions {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"emotions {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
