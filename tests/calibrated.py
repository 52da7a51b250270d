"""The session's small model calibrated and evaluated, as the calibrate and evaluate stages do.

The small corpus has six validation clips, below ``evaluate.calibration.min_clips`` (20), which
would leave T = 1 and make "calibrated" indistinguishable from raw. The tests lower min_clips
to 1, so a real validation fit (an interior optimum, T ≈ 2.5 on the 2-epoch model) is applied
everywhere they compare probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smallcorpus import RUN, SmallCorpus, keep_torch_threads

from emotions.calibrate import TEMPERATURE_FILE, calibrate_run
from emotions.config import Params
from emotions.evaluate import evaluate_run

CALIBRATION = {"evaluate": {"calibration": {"min_clips": 1}}}


@dataclass(frozen=True)
class Calibrated:
    params: Params
    temperature_file: Path
    record: dict[str, Any]
    metrics: dict[str, Any]
    predictions: Path  # evaluate's predictions.parquet (calibrated test probabilities)


def calibrate_and_evaluate(corpus: SmallCorpus, model_dir: Path, out: Path) -> Calibrated:
    params = corpus.params(CALIBRATION)
    paths = corpus.paths(model_dir)
    temperature_file = out / "calibration" / TEMPERATURE_FILE
    with keep_torch_threads():
        record = calibrate_run(params, RUN, paths=paths, out=temperature_file)
        metrics = evaluate_run(
            params,
            RUN,
            paths=paths,
            metrics_path=out / "metrics" / "emotions" / "full.json",
            plots_dir=out / "plots",
            eval_dir=out / "eval",
            calibration=temperature_file,
        )
    return Calibrated(
        params, temperature_file, record, metrics, out / "eval" / "predictions.parquet"
    )
