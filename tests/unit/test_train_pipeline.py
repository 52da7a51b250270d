"""The input pipeline of the train stage: a loader built once, step checkpoints that resume
mid-epoch exactly, and validation sharded over DDP ranks with all-reduced metrics.

CPU, fp32, one torch thread, on the session's small corpus (tests/support/smallcorpus.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from smallcorpus import RUN, SmallCorpus, keep_torch_threads, shared_corpus
from torch.optim.optimizer import register_optimizer_step_post_hook

from emotions.layout import LAST
from emotions.training.checkpoints import load_checkpoint
from emotions.training.runtime import Runtime
from emotions.training.samplers import EpochSampler
from emotions.training.trainer import (
    build_dataset,
    build_model,
    make_loader,
    resolve_workers,
    score_validation,
    train_run,
)


class Interrupted(Exception):
    """Raised from an optimizer hook to stop an in-process run mid-epoch."""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> SmallCorpus:
    return shared_corpus(tmp_path_factory)


def train_clips(corpus: SmallCorpus) -> int:
    split = pd.read_parquet(corpus.paths(Path("unused")).split)
    return int((split["split"] == "train").sum())


def train_here(corpus: SmallCorpus, model_dir: Path, **train) -> dict:
    with keep_torch_threads():
        return train_run(corpus.params(**train), RUN, paths=corpus.paths(model_dir), progress=False)


def test_sampler_shards_cover_the_epoch_and_skip_resumes_it():
    whole = EpochSampler(10, seed=3)
    whole.set_epoch(2)
    keys = list(whole)
    assert sorted(i for _, i in keys) == list(range(10)) and {e for e, _ in keys} == {2}
    whole.set_epoch(2, skip=4)
    assert list(whole) == keys[4:] and len(whole) == 6
    whole.set_epoch(3)
    assert list(whole) != keys  # another epoch, another order
    # Validation shards: disjoint, every clip exactly once, no padding duplicates.
    shards = [EpochSampler(7, shuffle=False, rank=r, world_size=2, pad=False) for r in (0, 1)]
    seen = [i for shard in shards for _, i in shard]
    assert sorted(seen) == list(range(7)) and [len(s) for s in shards] == [4, 3]
    # Training shards: padded to equal length, so every rank takes the same number of steps.
    padded = [EpochSampler(7, seed=1, rank=r, world_size=2) for r in (0, 1)]
    assert [len(s) for s in padded] == [4, 4]
    assert {i for shard in padded for _, i in shard} == set(range(7))


@pytest.mark.slow
def test_step_checkpoint_resumes_mid_epoch_to_exactly_the_uninterrupted_result(
    corpus: SmallCorpus, tmp_path, capsys
):
    batch, every = 4, 2
    per_epoch = train_clips(corpus) // batch
    assert per_epoch >= 3
    train = {"epochs": 2, "batch_size": batch, "checkpoint_every_n_steps": every}
    model_dir = tmp_path / "stepped"
    kill_at = per_epoch + 3  # inside epoch 2, after at least one step checkpoint there
    count = {"steps": 0}

    def hook(optimizer, args, kwargs) -> None:
        count["steps"] += 1
        if count["steps"] == kill_at:
            raise Interrupted

    handle = register_optimizer_step_post_hook(hook)
    try:
        with pytest.raises(Interrupted):
            train_here(corpus, model_dir, **train)
    finally:
        handle.remove()
    saved = load_checkpoint(model_dir / LAST)
    last_saved_step = (kill_at - 1) // every * every  # global steps, the killed one excluded
    assert saved["epoch"] == 1 and not saved["finished"]
    assert saved["step_in_epoch"] == last_saved_step - per_epoch > 0
    assert len(saved["epoch_losses"]) == saved["step_in_epoch"]
    capsys.readouterr()

    resumed = train_here(corpus, model_dir, **train)
    assert f"resuming after epoch 1 at step {saved['step_in_epoch']}" in capsys.readouterr().out
    reference = train_here(corpus, tmp_path / "reference", **train)
    assert resumed["history"] == reference["history"]  # exact floats
    after = load_checkpoint(model_dir / LAST)["model"]
    clean = load_checkpoint(tmp_path / "reference" / LAST)["model"]
    assert after.keys() == clean.keys()
    assert all(torch.equal(after[key], clean[key]) for key in after)


def _validate_rank(rank: int, world: int, corpus: SmallCorpus, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        params = corpus.params()
        val = build_dataset(params, RUN, corpus.paths(Path(out)), "val", train=False)
        runtime = Runtime(torch.device("cpu"), rank=rank, world_size=world)
        sampler = EpochSampler(len(val), shuffle=False, rank=rank, world_size=world, pad=False)
        loader = make_loader(val, sampler, params, runtime, drop_last=False)
        torch.manual_seed(0)
        model = build_model(params, len(val.classes))
        metrics = score_validation(model, loader, runtime, len(val.classes))
        shard = [i for _, i in sampler]
        torch.save({"metrics": metrics, "shard": shard}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_validation_sharded_over_two_gloo_ranks_matches_one_process(corpus: SmallCorpus, tmp_path):
    params = corpus.params()
    val = build_dataset(params, RUN, corpus.paths(tmp_path), "val", train=False)
    torch.manual_seed(0)
    model = build_model(params, len(val.classes))
    one = Runtime(torch.device("cpu"))
    loader = make_loader(
        val, EpochSampler(len(val), shuffle=False, pad=False), params, one, drop_last=False
    )
    with keep_torch_threads():
        single = score_validation(model, loader, one, len(val.classes))
    assert {"val_accuracy", "val_weighted_f1", "val_macro_f1"} <= single.keys()

    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_validate_rank, args=(2, corpus, init, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    shards = [set(r["shard"]) for r in ranks]
    assert not shards[0] & shards[1], "a clip was validated on both ranks"
    assert shards[0] | shards[1] == set(range(len(val)))
    assert ranks[0]["metrics"] == ranks[1]["metrics"] == single


@pytest.mark.slow
def test_persistent_workers_train_exactly_like_in_process_loading(corpus: SmallCorpus, tmp_path):
    """Workers keep their dataset copy for the whole run and never see a set_epoch: the
    (epoch, index) keys alone must give each epoch its augmentation."""
    in_process = train_here(corpus, tmp_path / "w0", epochs=2, num_workers=0)
    workers = train_here(corpus, tmp_path / "w2", epochs=2, num_workers=2, prefetch_factor=2)
    assert workers["history"] == in_process["history"]
    a = load_checkpoint(tmp_path / "w0" / LAST)["model"]
    b = load_checkpoint(tmp_path / "w2" / LAST)["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_worker_count_auto_is_from_the_cpus_on_cuda_and_zero_on_cpu():
    cpus = len(os.sched_getaffinity(0))
    assert resolve_workers("auto", Runtime(torch.device("cpu"))) == 0
    assert resolve_workers("auto", Runtime(torch.device("cuda"))) == max(1, min(16, cpus - 1))
    assert resolve_workers(3, Runtime(torch.device("cpu"))) == 3


def test_throughput_and_mfu_are_logged_per_epoch(corpus: SmallCorpus, tmp_path):
    model_dir = tmp_path / "perf"
    # On a CPU the peak comes from the param; the figure is then the share of that peak.
    summary = train_here(corpus, model_dir, epochs=2, peak_tflops=0.05, log_every_n_steps=1)
    folder = model_dir / "dvclive" / "plots" / "metrics" / "perf"
    rows = {
        path.stem: [float(line.split("\t")[1]) for line in path.read_text().splitlines()[1:]]
        for path in folder.glob("*.tsv")
    }
    assert rows.keys() == {"clips_per_s", "step_time_s", "first_step_s", "data_wait_share", "mfu"}
    assert all(len(values) == summary["epochs"] == 2 for values in rows.values())
    assert all(value > 0 for value in rows["clips_per_s"] + rows["step_time_s"])
    assert all(0 <= value < 1 for value in rows["data_wait_share"])
    assert all(0 < value < 1 for value in rows["mfu"])
    # clips/s and step time describe the same steady state: clips/s × step time ≈ the batch.
    batch = corpus.params().train.batch_size
    assert rows["clips_per_s"][0] * rows["step_time_s"][0] == pytest.approx(batch, rel=0.01)
    assert all(value > 0 for value in rows["first_step_s"])


def test_the_first_step_is_timed_apart_from_the_steady_state():
    """A one-time cost in the first step (a compile warm-up) shows as first_step_s and leaves
    the steady clips/s and step time alone."""
    from emotions.training.throughput import EpochThroughput, ThroughputMeter

    figures = EpochThroughput(
        clips=40, steps=5, seconds=10.0, data_wait_s=0.5, first_step_s=6.0, first_clips=8
    )
    assert figures.clips_per_s == pytest.approx(32 / 4.0)
    assert figures.step_time_s == pytest.approx(1.0)
    assert figures.data_wait_share == pytest.approx(0.05)
    one_step = EpochThroughput(clips=8, steps=1, seconds=2.0, data_wait_s=0.0, first_step_s=2.0)
    assert one_step.step_time_s == pytest.approx(2.0)  # nothing else to call steady

    meter = ThroughputMeter(torch.device("cpu"))
    for index, _ in enumerate(meter.wrap(range(3))):
        if index == 0:
            time.sleep(0.2)  # the one-time cost
        meter.step(8)
    measured = meter.finish()
    assert measured.first_step_s >= 0.2 and measured.first_clips == 8
    assert measured.steps == 3 and measured.clips == 24
    assert measured.step_time_s < measured.first_step_s


def test_mfu_is_null_on_cpu_without_a_peak_and_known_gpus_have_one():
    from emotions.training.throughput import PEAK_TFLOPS, mfu, peak_tflops

    assert peak_tflops(torch.device("cpu"), bf16=True) is None
    assert mfu(1e9, 100.0, None) is None
    assert mfu(1e9, 100.0, 1.0) == pytest.approx(3 * 1e9 * 100 / 1e12)
    assert {"H100", "H200", "A100", "L4", "RTX 4090"} <= {name for name, _, _ in PEAK_TFLOPS}
    assert all(bf16 > fp32 > 0 for _, bf16, fp32 in PEAK_TFLOPS)
