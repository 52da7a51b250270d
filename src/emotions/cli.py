"""`emotions <stage>`: the command line dvc.yaml calls, one sub-command per stage.

Stage modules are imported lazily so `emotions --help` stays instant and a stage's heavy imports
(torch, Great Expectations) are paid only by the stage that needs them. Every failure a user can
cause (bad params, no usable clip, a failed critical expectation) ends with a one-line reason on
stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

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
    from emotions.data.ingest import NoUsableClipsError, ingest

    taxonomy = (
        params.taxonomy_for(args.dataset) if args.dataset else params.taxonomies[args.taxonomy]
    )
    try:
        result = ingest(
            Path(args.root),
            Path(args.out),
            layout=args.layout,
            taxonomy=taxonomy,
            config=params.ingest,
        )
    except NoUsableClipsError as error:
        raise StageError(str(error)) from None
    print(
        f"ingest: {len(result.manifest)} usable clips, {len(result.quarantine)} quarantined "
        f"-> {Path(args.out) / 'manifest.parquet'}"
    )


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
    )
    print(outcome.summary)
    if not outcome.success:
        raise StageError(f"validation of {manifest_path} failed (details in {out}/result.json)")


def cmd_variants(args: argparse.Namespace, params: Params) -> None:
    import pandas as pd

    from emotions.data.variants import make_variants, write_variants

    dataset = params.dataset(args.dataset)
    manifest = pd.read_parquet(_artifacts(args.dataset) / "manifest.parquet")
    variants = make_variants(
        manifest, list(dataset.variants), config=params.variants, seed=params.seed
    )
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
    )
    print(f"preprocess: {result}")


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
    synth.set_defaults(run=cmd_synth)

    ingest = sub.add_parser("ingest", help="probe a corpus into manifest.parquet + quarantine.csv")
    ingest.add_argument(
        "--layout", required=True, choices=["emotions", "videoemotion8", "ekman6", "folder", "csv"]
    )
    ingest.add_argument("--root", required=True)
    ingest.add_argument("--out", required=True)
    ingest.add_argument("--dataset", default=None, help="take the taxonomy from this dataset")
    ingest.add_argument("--taxonomy", default="emotions6")
    ingest.set_defaults(run=cmd_ingest)

    validate = sub.add_parser("validate", help="Great Expectations suite over a manifest")
    validate.add_argument("--dataset", required=True)
    validate.add_argument("--manifest", default=None)
    validate.add_argument("--out", default=None)
    validate.set_defaults(run=cmd_validate)

    variants = sub.add_parser("variants", help="seeded full / balanced / test-oriented splits")
    variants.add_argument("--dataset", required=True)
    variants.set_defaults(run=cmd_variants)

    prep = sub.add_parser("preprocess", help="decode every clip once into a memory-mapped cache")
    prep.add_argument("--dataset", required=True)
    prep.set_defaults(run=cmd_preprocess)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        params = load_params(args.params)
        args.run(args, params)
    except (ConfigError, StageError) as error:
        print(f"emotions {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"emotions {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
