"""``serve.batch_size`` / ``max_latency_ms`` / ``decode_workers: auto`` (emotions.serve.sizing).

On a CPU auto must be exactly the sizes every CPU figure was measured with; off it the sizes
come from timing the predictor's real forward. The measuring path runs here on the CPU
(``force=True``) with an untrained model of params.yaml's architecture, and the result is
checked against the timings it measured, not against fixed numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from emotions.cache.format import STATS
from emotions.config import ConfigError, ServeConfig, load_params, parse_params
from emotions.layout import BEST, META, RunPaths
from emotions.models.avcanet import AVCANet
from emotions.models.settings import ModelSettings, without_weights
from emotions.serve import sizing
from emotions.serve.predictor import Predictor
from emotions.training.checkpoints import atomic_torch_save
from emotions.training.trainer import model_metadata

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    """An untrained model of params.yaml's architecture (the forward's cost needs no weights)."""
    root = tmp_path_factory.mktemp("untrained")
    params = load_params(REPO / "params.yaml")
    (root / STATS).write_text(json.dumps({"fbank_mean": 0.0, "fbank_std": 1.0}))
    model_dir = root / "model"
    model_dir.mkdir()
    paths = RunPaths(cache=root, split=root, model_dir=model_dir)
    meta = model_metadata(params, params.serve.run, paths)
    torch.manual_seed(0)
    settings = without_weights(ModelSettings.model_validate(meta["model"]))
    model = AVCANet(settings, num_classes=len(meta["classes"]))
    (model_dir / META).write_text(json.dumps(meta), encoding="utf-8")
    atomic_torch_save({"model": model.state_dict(), "epoch": 0}, model_dir / BEST)
    return Predictor(model_dir, device="cpu")


def _raw() -> dict:
    import yaml

    return yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def test_sizes_accept_auto_and_numbers_and_name_the_key() -> None:
    serve = load_params(REPO / "params.yaml").serve
    assert (serve.batch_size, serve.max_latency_ms, serve.decode_workers) == ("auto",) * 3
    raw = _raw()
    raw["serve"].update(batch_size=4, max_latency_ms=12.5, decode_workers=3)
    serve = parse_params(raw).serve
    assert (serve.batch_size, serve.max_latency_ms, serve.decode_workers) == (4, 12.5, 3)
    for key, bad in [("batch_size", 0), ("max_latency_ms", -1), ("decode_workers", "many")]:
        raw = _raw()
        raw["serve"][key] = bad
        with pytest.raises(ConfigError, match=rf"serve\.{key}"):
            parse_params(raw)


def test_auto_on_a_cpu_is_exactly_the_fixed_sizes(predictor: Predictor) -> None:
    sized = sizing.resolve_sizing(ServeConfig(), predictor)
    assert (sized.batch_size, sized.max_latency_ms, sized.decode_workers) == (8, 25.0, 2)
    assert set(sized.origin.values()) == {"auto (cpu)"}
    assert sized.forward_ms_per_clip == {}  # nothing timed on a CPU
    given = ServeConfig(batch_size=3, max_latency_ms=7, decode_workers=5)
    sized = sizing.resolve_sizing(given, predictor, force=True)  # nothing auto: nothing timed
    assert (sized.batch_size, sized.max_latency_ms, sized.decode_workers) == (3, 7.0, 5)
    assert set(sized.origin.values()) == {"configured"}


def test_measured_sizes_follow_the_rule_on_the_timings(predictor: Predictor) -> None:
    cores = 6
    sized = sizing.resolve_sizing(ServeConfig(), predictor, force=True, max_batch=8, cores=cores)
    per_clip = sized.forward_ms_per_clip
    assert 1 in per_clip and all(ms > 0 for ms in per_clip.values())
    # The chosen batch: reached from 1 by doublings that each paid, and the next one did not
    # (or was not measured: the cap).
    batch = sized.batch_size
    assert batch in per_clip and batch <= 8
    b = 1
    while b < batch:
        assert per_clip[2 * b] <= (1 - sizing.MIN_GAIN) * per_clip[b]
        b *= 2
    if 2 * batch in per_clip:
        assert per_clip[2 * batch] > (1 - sizing.MIN_GAIN) * per_clip[batch]
    low, high = sizing.LATENCY_CLAMP_MS
    assert sized.max_latency_ms == pytest.approx(
        min(high, max(low, per_clip[batch] * batch)), abs=1e-3
    )
    assert 1 <= sized.decode_workers <= cores - 1
    assert sized.decode_workers == sizing.decode_workers_for(per_clip[batch], cores - 1)
    assert set(sized.origin.values()) == {"auto (measured on cpu)"}
    line = sized.describe()
    assert f"batch_size {batch}" in line and "forward ms/clip" in line
    report = sized.report()
    assert report["batch_size"] == batch and report["sizing"]["batch_size"].startswith("auto")


def test_a_configured_number_stays_and_the_rest_is_measured_around_it(
    predictor: Predictor,
) -> None:
    config = ServeConfig(batch_size=2, decode_workers=1)
    sized = sizing.resolve_sizing(config, predictor, force=True, cores=4)
    assert (sized.batch_size, sized.decode_workers) == (2, 1)
    assert list(sized.forward_ms_per_clip) == [2]
    assert sized.origin == {
        "batch_size": "configured",
        "max_latency_ms": "auto (measured on cpu)",
        "decode_workers": "configured",
    }
    low, high = sizing.LATENCY_CLAMP_MS
    assert low <= sized.max_latency_ms <= high


def test_the_ladder_stops_where_doubling_stops_paying() -> None:
    """The rule on made-up timings: halving twice, then a 10 % gain (< 15 %): batch 4."""
    costs = {1: 40.0, 2: 20.0, 4: 10.0, 8: 9.0, 16: 1.0}
    calls: list[int] = []

    def timer(batch: int) -> tuple[float, float]:
        calls.append(batch)
        return costs[batch], costs[batch] * batch

    per_clip = sizing.measure_ladder(timer, max_batch=16)
    assert calls == [1, 2, 4, 8]  # 16 is never timed: 8 did not pay
    assert sizing.choose_batch(per_clip) == 4
    assert sizing.decode_workers_for(10.0, bound=15) == 15  # 200 ms decode / 10 ms forward = 20
    assert sizing.decode_workers_for(100.0, bound=15) == 2
    assert sizing.decode_workers_for(1000.0, bound=15) == 1


def test_a_batch_the_device_has_no_memory_for_ends_the_ladder() -> None:
    """A smaller card than the model was sized on still starts, with the batches that fit."""

    def timer(batch: int) -> tuple[float, float]:
        if batch >= 4:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return 10.0 / batch, 10.0

    per_clip = sizing.measure_ladder(timer, max_batch=32)
    assert list(per_clip) == [1, 2] and sizing.choose_batch(per_clip) == 2

    def no_room(batch: int) -> tuple[float, float]:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError):  # not even one clip: the service cannot start
        sizing.measure_ladder(no_room)


def test_predict_batch_size_auto_is_the_cpu_default_on_a_cpu(predictor: Predictor) -> None:
    assert sizing.predict_batch_size("auto", predictor) == sizing.CPU_BATCH_SIZE == 8
    assert sizing.predict_batch_size(3, predictor) == 3
    assert sizing.predict_batch_size("auto", predictor, files=2) == sizing.CPU_BATCH_SIZE


def test_bentoml_batching_keeps_the_batch_declared_at_import(predictor: Predictor) -> None:
    """BentoML's batchable API takes its batch size when the class is defined: off the CPU
    auto keeps that one (8), and the budget and decoders are measured at it."""
    timed: list[int] = []

    def timer(batch: int) -> tuple[float, float]:
        timed.append(batch)
        return 2.0, 2.0 * batch

    config = ServeConfig(batcher="bentoml")
    sized = sizing.resolve_sizing(config, predictor, force=True, timer=timer, cores=4)
    assert timed == [8] and sized.batch_size == sizing.static_batch_size("auto") == 8
    assert sized.origin["batch_size"] == "auto (cpu default: declared at import)"
    assert sized.max_latency_ms == 16.0 and sized.decode_workers == 3  # 200/2 > 4 - 1 cores
    only_batch = ServeConfig(batcher="bentoml", max_latency_ms=10, decode_workers=2)
    timed.clear()
    sized = sizing.resolve_sizing(only_batch, predictor, force=True, timer=timer)
    assert timed == [] and (sized.batch_size, sized.max_latency_ms) == (8, 10.0)
    assert sized.origin["batch_size"] == "auto (cpu default: declared at import)"
