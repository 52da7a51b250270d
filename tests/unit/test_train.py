"""The train stage's promises: exact resumes after a kill, fresh starts when they are due,
DDP on gloo, the bf16 autocast path, early stopping and DVCLive logs.

All runs are CPU, fp32 unless said otherwise, one torch thread (``train.threads: 1``), on the
session's small corpus (tests/support/smallcorpus.py): a few seconds each.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch
from smallcorpus import (
    RUN,
    SmallCorpus,
    keep_torch_threads,
    run_command,
    run_python,
    shared_corpus,
    shared_model,
)
from torch.optim.optimizer import register_optimizer_step_post_hook

from emotions.layout import BEST, LAST, META, Layout
from emotions.model_folder import load as load_trained_model
from emotions.serve.predictor import Predictor
from emotions.training.checkpoints import load_checkpoint
from emotions.training.trainer import train_run

# A `emotions train` process that SIGKILLs itself right after its N-th optimizer step: the kill
# lands at an exact point inside an epoch (after the step, before the epoch's checkpoint), where
# polling from outside could only hope to land on an epoch this short (~0.3 s).
KILL_AFTER_STEP = """
import os, signal, sys
from torch.optim.optimizer import register_optimizer_step_post_hook

kill_at, steps = int(sys.argv[1]), 0

def count(optimizer, args, kwargs):
    global steps
    steps += 1
    if steps == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

register_optimizer_step_post_hook(count)
from emotions.cli import main
sys.exit(main(["--params", "params.yaml", "train", "--run", sys.argv[2]]))
"""


# A `emotions train` process that SIGKILLs itself halfway through writing the end-of-epoch
# checkpoint of epoch N: the temporary holds half of it, the previous last.pt stands.
KILL_IN_CHECKPOINT_WRITE = """
import os, signal, sys
import torch

kill_epoch, real_save = int(sys.argv[1]), torch.save

def save(obj, f, *args, **kwargs):
    real_save(obj, f, *args, **kwargs)
    if isinstance(obj, dict) and "optimizer" in obj and obj["epoch"] == kill_epoch:
        os.truncate(f, os.path.getsize(f) // 2)
        os.kill(os.getpid(), signal.SIGKILL)

torch.save = save
from emotions.cli import main
sys.exit(main(["--params", "params.yaml", "train", "--run", sys.argv[2]]))
"""


# `dvc repro` in miniature: runs `emotions train` as its child and is SIGKILLed by the test.
PARENT_OF_TRAIN = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-m", "emotions", "train", "--run", sys.argv[1]])
print(child.pid, flush=True)
time.sleep(600)
"""


class Interrupted(Exception):
    """Raised from an optimizer hook to stop an in-process run mid-epoch (like a Ctrl-C)."""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> SmallCorpus:
    return shared_corpus(tmp_path_factory)


def steps_per_epoch(corpus: SmallCorpus, batch_size: int) -> int:
    split = pd.read_parquet(corpus.paths(Path("unused")).split)
    train = int((split["split"] == "train").sum())
    return train // batch_size if train > batch_size else 1


def train_here(corpus: SmallCorpus, model_dir: Path, sections=None, **train) -> dict:
    with keep_torch_threads():
        return train_run(
            corpus.params(sections, **train), RUN, paths=corpus.paths(model_dir), progress=False
        )


def interrupt_here(
    corpus: SmallCorpus, model_dir: Path, after_steps: int, sections=None, **train
) -> None:
    """Run in this process until the given optimizer step, then abort with an exception."""
    count = {"steps": 0}

    def hook(optimizer, args, kwargs) -> None:
        count["steps"] += 1
        if count["steps"] == after_steps:
            raise Interrupted

    handle = register_optimizer_step_post_hook(hook)
    try:
        with pytest.raises(Interrupted):
            train_here(corpus, model_dir, sections, **train)
    finally:
        handle.remove()


def state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def dvclive_plots(model_dir: Path, timing: bool = False) -> dict[str, str]:
    """The DVCLive metric logs; the throughput logs (perf/) only with ``timing``: clocks
    differ between any two runs, so no resume can reproduce them."""
    folder = model_dir / "dvclive" / "plots" / "metrics"
    return {
        path.relative_to(folder).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(folder.rglob("*.tsv"))
        if timing or not path.relative_to(folder).as_posix().startswith("perf/")
    }


@pytest.mark.slow
def test_killed_run_resumes_to_exactly_the_uninterrupted_result(corpus: SmallCorpus, tmp_path):
    epochs, batch = 4, 4
    per_epoch = steps_per_epoch(corpus, batch)
    assert per_epoch >= 3, "the corpus must give several steps per epoch to kill inside one"
    work = corpus.workdir(tmp_path / "killed", epochs=epochs, batch_size=batch)
    model_dir = corpus.model_dir(work)

    # Killed after the 2nd step of epoch 2: weights and optimizer moments have moved on from
    # the epoch-1 checkpoint, which is all that survives.
    killed = run_python(["-c", KILL_AFTER_STEP, str(per_epoch + 2), RUN], work)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    checkpoint = load_checkpoint(model_dir / LAST)
    assert checkpoint["epoch"] == 1
    assert not checkpoint["finished"]

    resumed = run_python(["-m", "emotions", "train", "--run", RUN], work)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming after epoch 1" in resumed.stdout

    reference = tmp_path / "reference"
    summary = train_here(corpus, reference, epochs=epochs, batch_size=batch)
    assert summary["epochs"] == epochs

    after, clean = load_checkpoint(model_dir / LAST), load_checkpoint(reference / LAST)
    assert after["history"] == clean["history"] == summary["history"]  # exact floats
    assert after["finished"] and clean["finished"]
    assert (after["best_epoch"], after["best_score"]) == (clean["best_epoch"], clean["best_score"])
    assert state_dicts_equal(after["model"], clean["model"])
    best, best_clean = load_checkpoint(model_dir / BEST), load_checkpoint(reference / BEST)
    assert best["epoch"] == best_clean["epoch"]
    assert state_dicts_equal(best["model"], best_clean["model"])
    for moments, moments_clean in zip(
        after["optimizer"]["state"].values(), clean["optimizer"]["state"].values(), strict=True
    ):
        assert state_dicts_equal(moments, moments_clean)
    written = json.loads((model_dir / "train_summary.json").read_text(encoding="utf-8"))
    assert written["history"] == summary["history"]
    # DVCLive resumed too: the killed + resumed logs read exactly like the uninterrupted ones.
    assert dvclive_plots(model_dir) == dvclive_plots(reference)


def test_changed_params_start_fresh_and_same_params_resume(corpus: SmallCorpus, tmp_path, capsys):
    model_dir = tmp_path / "model"
    per_epoch = steps_per_epoch(corpus, 8)
    interrupt_here(corpus, model_dir, per_epoch + 1, epochs=2)
    interrupted = load_checkpoint(model_dir / LAST)
    assert (interrupted["epoch"], interrupted["finished"]) == (1, False)
    capsys.readouterr()

    # Another learning rate is another fingerprint: the checkpoint is not this run's past.
    fresh = train_here(corpus, model_dir, epochs=2, lr=2e-3)
    assert "resuming" not in capsys.readouterr().out
    assert [record["epoch"] for record in fresh["history"]] == [1, 2]
    assert fresh["history"][0] != interrupted["history"][0]

    # Interrupted again with the original params, then resumed with them.
    interrupt_here(corpus, model_dir, per_epoch + 1, epochs=2)
    capsys.readouterr()
    resumed = train_here(corpus, model_dir, epochs=2)
    assert "resuming after epoch 1" in capsys.readouterr().out
    assert resumed["history"][0] == interrupted["history"][0]
    assert [record["epoch"] for record in resumed["history"]] == [1, 2]


def test_model_folder_stays_loadable_when_a_fresh_run_of_another_architecture_dies(
    corpus: SmallCorpus, tmp_path
):
    """The folder persists between runs (dvc.yaml: persist), so a fresh run must not pair its
    own model.json with the previous run's best.pt before it has a best.pt of its own."""
    model_dir = tmp_path / "model"
    train_here(corpus, model_dir, epochs=1)
    interrupt_here(corpus, model_dir, 1, {"model": {"dim": 64, "heads": 2}}, epochs=1)
    model, meta = load_trained_model(model_dir)
    assert meta["model"]["dim"] == corpus.params().model.dim
    assert model.fusion is not None


def test_finished_run_is_reused_not_retrained(corpus: SmallCorpus, tmp_path, capsys):
    """A kill after training but before DVC recorded it: the rerun reuses the finished
    checkpoint (same params, data and code) instead of training again; --no-resume retrains."""
    model_dir = tmp_path / "model"
    first = train_here(corpus, model_dir, epochs=2)
    assert load_checkpoint(model_dir / LAST)["finished"]
    written = (model_dir / LAST).stat().st_mtime_ns
    logs = dvclive_plots(model_dir, timing=True)
    capsys.readouterr()
    second = train_here(corpus, model_dir, epochs=2)
    assert "reusing it" in capsys.readouterr().out
    assert second["history"] == first["history"]
    assert (model_dir / LAST).stat().st_mtime_ns == written
    assert dvclive_plots(model_dir, timing=True) == logs
    with keep_torch_threads():
        again = train_run(
            corpus.params(epochs=2),
            RUN,
            paths=corpus.paths(model_dir),
            resume=False,
            progress=False,
        )
    out = capsys.readouterr().out
    assert "reusing" not in out and "resuming" not in out
    assert again["history"] == first["history"]  # retrained from scratch, same seed
    assert (model_dir / LAST).stat().st_mtime_ns != written


def test_kill_while_saving_a_checkpoint_leaves_no_temporary_and_logs_each_epoch_once(
    corpus: SmallCorpus, tmp_path
):
    epochs = 3
    work = corpus.workdir(tmp_path / "killed", epochs=epochs)
    model_dir = corpus.model_dir(work)
    killed = run_python(["-c", KILL_IN_CHECKPOINT_WRITE, "2", RUN], work)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert list(model_dir.glob(f".{LAST}.*.tmp")), "the kill must land inside the write"
    assert load_checkpoint(model_dir / LAST)["epoch"] == 1

    resumed = run_python(["-m", "emotions", "train", "--run", RUN], work)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming after epoch 1" in resumed.stdout
    assert not list(model_dir.rglob("*.tmp")), "the killed write's temporary must be gone"
    reference = tmp_path / "reference"
    train_here(corpus, reference, epochs=epochs)
    assert dvclive_plots(model_dir) == dvclive_plots(reference)
    curves = Layout(work).train_curves("emotions", "full")
    for name in ("val_weighted_f1.tsv", "lr.tsv", "train/train_loss.tsv"):
        rows = (curves / name).read_text(encoding="utf-8").splitlines()[1:]
        assert [row.split("\t")[0] for row in rows] == ["0", "1", "2"], name


def test_train_dies_with_its_parent_and_refuses_a_second_writer(corpus: SmallCorpus, tmp_path):
    """Killing `dvc repro` used to leave the stage training on, and a rerun resumed in the
    same folder while the orphan still wrote into it."""
    work = corpus.workdir(tmp_path / "orphan", epochs=1000, patience=1000)
    model_dir = corpus.model_dir(work)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT_OF_TRAIN, RUN],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 300
        while not (model_dir / LAST).is_file() and time.monotonic() < deadline:
            time.sleep(0.2)  # until the child has trained an epoch: it is writing
        assert (model_dir / LAST).is_file(), "the child never trained"
        second = run_python(["-m", "emotions", "train", "--run", RUN], work)
        assert second.returncode == 2, second.stderr[-2000:]
        assert second.stderr.count("\n") == 1 and f"pid {child} (" in second.stderr
        assert "is being written by" in second.stderr
    finally:
        parent.kill()
        parent.wait()
    assert exited(child), "the train process outlived its SIGKILLed parent"


def exited(pid: int, wait_s: float = 60) -> bool:
    """Whether ``pid`` exits within ``wait_s`` (a zombie awaiting its reaper has exited)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_ddp_on_gloo_with_two_processes(corpus: SmallCorpus, tmp_path):
    epochs = 2
    # 16 per batch but only ~9 train clips per rank: each rank must still get its one batch.
    # Each rank reads its loader through the prefetch thread, as DDP on CUDA does by default.
    work = corpus.workdir(tmp_path / "ddp", epochs=epochs, batch_size=16, device_prefetch=True)
    torchrun = Path(sys.executable).parent / "torchrun"
    # `-m --`: torchrun's own parser would take `--run` for an abbreviation of its
    # `--run-path` and stop; after `--` everything is handed to the module unparsed.
    launched = run_command(
        [
            str(torchrun),
            "--nproc_per_node=2",
            "--standalone",
            "-m",
            "--",
            "emotions",
            "--params",
            "params.yaml",
            "train",
            "--run",
            RUN,
        ],
        work,
    )
    assert launched.returncode == 0, launched.stdout[-2000:] + launched.stderr[-3000:]
    epoch_lines = [line for line in launched.stdout.splitlines() if '{"epoch": ' in line]
    assert len(epoch_lines) == epochs, launched.stdout  # rank 0 alone reports each epoch

    model_dir = corpus.model_dir(work)
    assert {path.name for path in model_dir.iterdir()} == {
        BEST,
        LAST,
        META,
        "dvclive",
        "train_summary.json",
    }
    assert not list(model_dir.rglob("*.tmp")), "no half-written file may be left behind"
    summary = json.loads((model_dir / "train_summary.json").read_text(encoding="utf-8"))
    assert summary["world_size"] == 2
    assert summary["epochs"] == epochs
    assert all(math.isfinite(record["train_loss"]) for record in summary["history"])
    rows = (model_dir / "dvclive/plots/metrics/val_weighted_f1.tsv").read_text().splitlines()
    assert len(rows) == 1 + epochs  # one writer: a header and one row per epoch

    model, meta = load_trained_model(model_dir)
    assert meta["classes"] == list(corpus.params().taxonomy_for("emotions"))
    clip = next(iter(sorted((corpus.root / "videos").glob("*.mp4"))))
    result = next(Predictor(model_dir).predict_files([clip]))
    assert result["label"] in meta["classes"]
    assert model.training is False


def test_bf16_autocast_path_trains_on_cpu(corpus: SmallCorpus, tmp_path):
    model_dir = tmp_path / "bf16"
    summary = train_here(corpus, model_dir, epochs=1, precision="bf16")
    assert summary["bf16"] is True
    assert summary["device"] == "cpu"
    assert math.isfinite(summary["history"][0]["train_loss"])
    best = load_checkpoint(model_dir / BEST)["model"]
    # Autocast changes the compute precision only: the master weights stay fp32.
    assert {tensor.dtype for tensor in best.values() if tensor.is_floating_point()} == {
        torch.float32
    }
    model, _ = load_trained_model(model_dir)
    assert model is not None


def test_early_stopping_ends_before_the_epoch_budget(corpus: SmallCorpus, tmp_path):
    # A learning rate far below fp32 resolution of the weights: nothing can improve.
    model_dir = tmp_path / "stopped"
    summary = train_here(
        corpus, model_dir, epochs=5, patience=1, lr=1e-12, weight_decay=0.0, warmup_epochs=0
    )
    assert summary["epochs"] == 2 < 5
    assert summary["best_epoch"] == 1
    scores = [record["val_weighted_f1"] for record in summary["history"]]
    assert scores[1] == scores[0]
    last = load_checkpoint(model_dir / LAST)
    assert last["finished"] and last["bad_epochs"] == 1


def test_dvclive_logs_metrics_in_the_model_folder(tmp_path_factory):
    model_dir = shared_model(tmp_path_factory)
    live = model_dir / "dvclive"
    metrics = json.loads((live / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["step"] == 1  # two epochs: steps 0 and 1
    assert {"val_accuracy", "val_weighted_f1", "val_macro_f1", "lr"} <= metrics.keys()
    assert "train_loss" in metrics["train"]
    plots = dvclive_plots(model_dir)
    assert {"train/train_loss.tsv", "val_weighted_f1.tsv", "lr.tsv"} <= plots.keys()
    history = load_checkpoint(model_dir / LAST)["history"]
    rows = plots["val_weighted_f1.tsv"].splitlines()
    assert rows[0] == "step\tval_weighted_f1"
    assert [float(row.split("\t")[1]) for row in rows[1:]] == [
        record["val_weighted_f1"] for record in history
    ]
