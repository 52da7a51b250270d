"""The `calibrate` stage: one temperature per run, fitted on the validation split only.

Why validation and why bounded: see :mod:`emotions.evaluation.calibration`. The temperature is
written beside, not into, the train stage's model folder (a DVC output of its own); everything
that turns logits into probabilities reads it through :mod:`emotions.model_folder`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emotions import model_folder
from emotions.atomic import atomic_write_json
from emotions.config import Params
from emotions.evaluation.calibration import fit_temperature
from emotions.layout import Layout, RunPaths
from emotions.training.dataset import build_dataset
from emotions.training.predict import predict_views
from emotions.training.runtime import resolve_runtime


def calibrate_run(
    params: Params,
    run: str,
    *,
    paths: RunPaths | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """Fit the run's temperature on its validation split and write ``temperature.json``."""

    spec = params.run(run)
    paths = paths or RunPaths.for_run(params, run)
    out = out or Layout().calibration(spec.dataset, spec.variant)
    runtime = resolve_runtime("cpu" if params.train.device == "cpu" else "auto", "fp32")
    model, _ = model_folder.load(paths.model_dir)
    model.to(runtime.device)
    dataset = build_dataset(params, run, paths, "val", train=False)
    # The same view average as evaluate applies (evaluate.views), so T fits those logits.
    val = predict_views(
        model,
        dataset,
        params.evaluate.views,
        runtime,
        batch_size=params.train.batch_size,
        desc="val",
    )
    record = {
        **fit_temperature(val["logits"], val["labels"], params.evaluate.calibration),
        "split": "val",
        "run": run,
        "clip_ids": [str(c) for c in val["clip_ids"]],
        "checkpoint_sha256": model_folder.checkpoint_sha256(model_folder.weights(paths.model_dir)),
    }
    atomic_write_json(record, out)
    return record


def main(params: Params, *, run: str) -> None:
    """`emotions calibrate`: :func:`calibrate_run` with a one-line summary."""
    record = calibrate_run(params, run)
    print(
        f"calibrate {run}: T={record['temperature']:.4g} ({record['status']}), "
        f"val NLL {record['val_nll_raw']:.4f} -> {record['val_nll']:.4f} on {record['n_val']} clips"
    )
