"""Each preset in params/ trains and evaluates end to end at a reduced size on the small corpus.

The preset is merged onto the small corpus's params, then only sizes are overridden (frames
and snippets to the shared cache's, widths, one epoch, no weight files, CPU): every option the
preset turns on (per-snippet Swin, the authors' audio branch, mpam and the shared head, the
authors' spatial pipeline, the schedules, the authors' protocol) runs for real.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from smallcorpus import RUN, SmallCorpus, keep_torch_threads, shared_corpus

from emotions.config import parse_params
from emotions.params_overlay import merge, read_yaml
from emotions.stages.evaluate import evaluate_run
from emotions.training.trainer import train_run

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted((REPO / "params").glob("*.yaml"))


def reduced(corpus: SmallCorpus) -> dict:
    """Sizes only: the shared cache's frames (8 snippets of 1), small widths, one epoch."""
    pre = corpus.raw["preprocess"]
    return {
        "preprocess": {key: pre[key] for key in ("num_frames", "snippet_frames", "positions")}
        | {"resize": pre["resize"], "crop": pre["crop"], "audio": pre["audio"]},
        "model": {
            "windows": 8,
            "dim": 32,
            "heads": 4,
            "pyramid_levels": 2,
            "mpam_ffn": 64,
            "video": {"arch": "tiny", "weights": None},
            "audio": {"segments": 8, "weights": None, "embed": 32},
        },
        "train": {
            "epochs": 1,
            "batch_size": 8,
            "accumulate": 2,
            "device": "cpu",
            "precision": "fp32",
            "num_workers": 0,
            "threads": 1,
        },
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> SmallCorpus:
    return shared_corpus(tmp_path_factory)


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_trains_and_evaluates(corpus: SmallCorpus, preset: Path, tmp_path: Path) -> None:
    raw = merge(merge(corpus.raw, read_yaml(preset)), reduced(corpus))
    params = parse_params(raw, f"{preset.name}, reduced")
    model_dir = tmp_path / "model"
    with keep_torch_threads():
        summary = train_run(params, RUN, paths=corpus.paths(model_dir), progress=False)
        metrics = evaluate_run(
            params,
            RUN,
            paths=corpus.paths(model_dir),
            metrics_path=tmp_path / "metrics.json",
            plots_dir=tmp_path / "plots",
            eval_dir=tmp_path / "eval",
        )
    assert summary["epochs"] == 1 and math.isfinite(summary["history"][0]["train_loss"])
    assert 0.0 <= metrics["accuracy"] <= 1.0
    if params.evaluate.protocol == "authors":
        assert metrics["val_selected"]["accuracy"] == metrics["accuracy"]
        assert 0.0 <= metrics["authors_protocol"]["accuracy"] <= 1.0
    else:
        assert "authors_protocol" not in metrics
