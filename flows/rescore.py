"""Score the champion's model on the *current* test split (run as a process by flows/retrain.py).

A champion's recorded metrics were measured on the test split of its day; after a data refresh
the split holds other clips, and comparing numbers from two different test sets would promote or
reject on noise. So when the split changed, the retrain flow re-scores the champion here: its
model folder is read at its experiment's git revision through DVC's file system (from the local
DVC cache), then evaluated by the same `evaluate_run` the `evaluate` stage uses, on the current
cache and split. It runs in its own process, like every stage, so torch and the model's memory
never enter the flow process.

`python -m flows.rescore --rev REV --run RUN --out metrics.json` (in the repository root).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from emotions.layout import PLOTS, Layout


def model_dir_of(params, run: str) -> str:
    """Where a run's model lives (the `train` stage's output, relative to the repo root)."""
    spec = params.run(run)
    return Layout().model_dir(spec.dataset, spec.variant).as_posix()


def rescore(rev: str, run: str, out: Path, params_path: Path = Path("params.yaml")) -> dict:
    from dvc.api import DVCFileSystem

    from emotions.config import load_params
    from emotions.layout import RunPaths
    from emotions.stages.evaluate import evaluate_run

    params = load_params(params_path)
    current = RunPaths.for_run(params, run)
    tmp_root = Path(".dvc") / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="rescore-") as tmp:
        model_dir = Path(tmp) / "model"
        fs = DVCFileSystem(".", rev=rev)
        fs.get(model_dir_of(params, run), str(model_dir), recursive=True)
        paths = RunPaths(cache=current.cache, split=current.split, model_dir=model_dir)
        return evaluate_run(
            params,
            run,
            paths=paths,
            metrics_path=out,
            plots_dir=Path(tmp) / PLOTS,
            eval_dir=Path(tmp) / "eval",
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.rescore", description=__doc__)
    parser.add_argument("--rev", required=True, help="the champion's git revision")
    parser.add_argument("--run", required=True, help="a key under runs: in params.yaml")
    parser.add_argument("--out", required=True, help="where to write the metrics JSON")
    args = parser.parse_args(argv)
    try:
        metrics = rescore(args.rev, args.run, Path(args.out))
    except Exception as error:  # one line for the flow's log, whatever went wrong
        print(f"rescore: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    shown = {k: metrics[k] for k in ("accuracy", "uar", "weighted_f1", "macro_f1") if k in metrics}
    print(f"rescore {args.run} at {args.rev[:10]}: {json.dumps(shown)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
