"""The `train` stage: AV-CANet on one (dataset, variant) run, resumable, CPU or CUDA, DDP-ready.

Why it is built this way:
- Resumable by construction: the state at the end of every epoch (model, optimizer, scheduler,
  RNG, early-stopping counters) is one atomic checkpoint, and each epoch's data order is a pure
  function of (seed, epoch). A run killed mid-epoch redoes that epoch from identical state, so on
  CPU it ends with exactly the metrics of an uninterrupted run.
- The same loop serves a laptop and a GPU job: `runtime.resolve_runtime` picks CUDA + bf16
  autocast when present and joins the DDP process group under `torchrun` (gloo on CPU).
- Rank 0 alone logs (DVCLive), writes checkpoints and draws progress bars.
- A GPU is never left waiting on the host: the DataLoader is built once (persistent workers,
  pinned memory, prefetch; workers from the CPU count on CUDA), batches are copied without
  blocking, and the loss is read back only every `log_every_n_steps`. Validation is sharded
  over the ranks with its confusion matrix all-reduced, and `checkpoint_every_n_steps` adds
  resumable mid-epoch checkpoints (the sampler skips the batches already trained on).
- Per epoch DVCLive gets clips/s, step time, the data-wait share and an MFU estimate
  (emotions.training.throughput); they stay out of the history, which a resume reproduces exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, default_collate
from tqdm.auto import tqdm

from emotions.atomic import remove_leftovers
from emotions.cache.format import INDEX, STATS
from emotions.config import Params
from emotions.errors import StageError
from emotions.evaluation.metrics import AUTHORS_TEST, classification_summary
from emotions.layout import BEST, LAST, LIVE, META, TRAIN_SUMMARY, RunPaths
from emotions.models.avcanet import AVCANet, estimate_flops
from emotions.models.losses import build_criterion
from emotions.models.objective import objective
from emotions.training.checkpoints import (
    CheckpointError,
    atomic_torch_save,
    atomic_write_json,
    capture_rng,
    load_checkpoint,
    restore_rng,
)
from emotions.training.dataset import build_dataset
from emotions.training.optim import build_optimizer, ddp_sync, micro_group
from emotions.training.predict import move_batch, predict_split
from emotions.training.runtime import (
    Runtime,
    broadcast_object,
    resolve_compile,
    resolve_runtime,
    shutdown,
)
from emotions.training.samplers import EpochSampler
from emotions.training.schedule import build_scheduler
from emotions.training.throughput import EpochThroughput, ThroughputMeter, mfu, peak_tflops


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def code_digest() -> str:
    """The package's source: a finished checkpoint is reused only by the code that trained it
    (DVC reruns train when its code changes; that rerun must train, not reuse)."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]  # src/emotions
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def fingerprint(params: Params, paths: RunPaths) -> str:
    """What the checkpoint was trained on; a resume with a different fingerprint starts fresh."""
    digest = hashlib.sha256()
    for section in (params.model, params.loss, params.train, params.preprocess):
        digest.update(section.model_dump_json().encode())
    digest.update(str(params.seed).encode())
    if params.evaluate.protocol != "val_selected":  # the history then holds test scores too
        digest.update(params.evaluate.protocol.encode())
    for path in (paths.split, paths.cache / INDEX, paths.cache / STATS):
        digest.update(path.read_bytes() if path.is_file() else b"-")
    return digest.hexdigest()[:16]


def build_model(params: Params, num_classes: int) -> AVCANet:
    return AVCANet(params.model, num_classes=num_classes)


def set_input_stats(model: nn.Module, paths: RunPaths) -> None:
    """Tell an audio branch that rescales its input (AST normalisation) the cache's stats."""
    audio = getattr(model, "audio", None)
    if audio is not None and hasattr(audio, "set_input_stats"):
        stats = json.loads((paths.cache / STATS).read_text(encoding="utf-8"))
        audio.set_input_stats(float(stats["fbank_mean"]), float(stats["fbank_std"]))


def build_training_modules(
    params: Params, polarity: list[str], device: torch.device, *, channels_last: bool = False
) -> tuple[AVCANet, nn.Module]:
    """The model and the criterion, both on ``device``.

    The criterion is a module with buffers (the polarity groups and penalties): it must move
    with the model, or the first CUDA step fails on a device mismatch. ``channels_last`` is
    applied to the video branch only when the model has one (an audio-only model has none).
    """
    model = build_model(params, len(polarity)).to(device)
    video = getattr(model, "video", None)
    if channels_last and video is not None:
        video.to(memory_format=torch.channels_last_3d)
    criterion = build_criterion(polarity, params.loss).to(device)
    return model, criterion


def training_loss(
    model: nn.Module, criterion: nn.Module, batch: dict[str, Any], params: Params, runtime: Runtime
) -> torch.Tensor:
    """Forward pass and the training objective of one batch (already on the device).

    The fused clip loss plus the window and auxiliary audio/video terms
    (``emotions.models.objective``: weak supervision of the prediction timeline, and the
    authors' sum of fused and single-modality losses).
    """
    with runtime.autocast():
        out = model(
            batch["video"],
            batch["audio"],
            batch["has_audio"],
            audio_frames=batch.get("audio_frames"),
        )
    return objective(out, batch["label"], batch["has_audio"], criterion, params.loss)["loss"]


def model_metadata(params: Params, run: str, paths: RunPaths) -> dict[str, Any]:
    """Everything `predict` and serving need to rebuild the model and its inputs.

    The log-mel normalisation statistics travel with the model: a served model must scale
    its input exactly as the cache it was trained on did.
    """
    spec = params.run(run)
    taxonomy = params.taxonomy_for(spec.dataset)
    stats = json.loads((paths.cache / STATS).read_text(encoding="utf-8"))
    return {
        "fbank_mean": float(stats["fbank_mean"]),
        "fbank_std": float(stats["fbank_std"]),
        "run": run,
        "dataset": spec.dataset,
        "variant": spec.variant,
        "classes": list(taxonomy),
        "polarity": list(taxonomy.values()),
        "model": params.model.model_dump(mode="json"),
        "loss": params.loss.model_dump(mode="json"),
        "preprocess": params.preprocess.model_dump(mode="json"),
        # The spatial pipeline: the predictor builds its evaluation view the same way.
        "spatial": params.train.spatial,
    }


def resolve_workers(setting: int | str, runtime: Runtime) -> int:
    """DataLoader workers for ``train.num_workers``: "auto" means from the CPU count on CUDA.

    On CUDA the node's cores are shared among its ranks with one left per rank for the
    training process itself (at most 16 each: beyond that the workers mostly add memory). On
    CPU "auto" is 0: the workers would compete with the model for the same cores.
    """
    if setting != "auto":
        return int(setting)
    if runtime.device.type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(16, (cores or 1) // max(1, ranks) - 1))


def make_loader(
    dataset, sampler: EpochSampler, params: Params, runtime: Runtime, *, drop_last: bool
) -> DataLoader:
    """A DataLoader built once per run: persistent workers, pinned memory and prefetch on CUDA.

    Its own generator draws the workers' base seed, so creating an epoch's iterator never
    consumes the global RNG (a run resumed mid-epoch would otherwise see other dropout masks).
    """
    cfg = params.train
    workers = resolve_workers(cfg.num_workers, runtime)
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=runtime.device.type == "cuda",
        drop_last=drop_last,
        persistent_workers=workers > 0,
        prefetch_factor=cfg.prefetch_factor if workers > 0 else None,
        generator=torch.Generator().manual_seed(params.seed),
        collate_fn=getattr(dataset, "collate_fn", None),
    )


def score_validation(
    model: nn.Module, loader: DataLoader, runtime: Runtime, num_classes: int
) -> dict[str, float]:
    """Validation metrics over every rank's shard: the confusion matrices are all-reduced.

    Each rank predicts only its own disjoint shard (EpochSampler with ``pad=False``), so no
    rank waits idle while another validates the whole split, and no clip is counted twice.
    The metrics are computed from the summed confusion matrix, identically on every rank.
    """
    predicted = predict_split(model, loader, runtime, desc="val")
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64)
    if len(predicted["labels"]):
        pairs = predicted["labels"] * num_classes + predicted["logits"].argmax(1)
        confusion += torch.bincount(torch.from_numpy(pairs), minlength=num_classes**2)
    if runtime.distributed:
        confusion = confusion.to(runtime.device)
        dist.all_reduce(confusion)
    counts = confusion.cpu().view(num_classes, num_classes).numpy()
    if not counts.sum():
        return {}
    classes = np.arange(num_classes)
    truth = np.repeat(classes, counts.sum(axis=1))
    guess = np.concatenate([np.repeat(classes, row) for row in counts])
    summary = classification_summary(truth, guess, num_classes)
    return {f"val_{key}": value for key, value in summary.items()}


def _reduce_sums(runtime: Runtime, values: list[float]) -> list[float]:
    """Element-wise sums over the ranks (float64); the values themselves on one process."""
    if not runtime.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=runtime.device)
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def throughput_record(
    runtime: Runtime, meter: EpochThroughput, flops: float | None, peak: float | None
) -> dict[str, float]:
    """Per-epoch perf figures for DVCLive: per device, averaged over the ranks."""
    clips, seconds, wait, steps, first_s, first_clips = _reduce_sums(
        runtime,
        [
            meter.clips,
            meter.seconds,
            meter.data_wait_s,
            meter.steps,
            meter.first_step_s,
            meter.first_clips,
        ],
    )
    world = runtime.world_size
    per_device = EpochThroughput(
        int(clips / world),
        int(steps / world),
        seconds / world,
        wait / world,
        first_s / world,
        int(first_clips / world),
    )
    record = {
        "perf/clips_per_s": per_device.clips_per_s * world,
        "perf/step_time_s": per_device.step_time_s,
        "perf/first_step_s": per_device.first_step_s,
        "perf/data_wait_share": per_device.data_wait_share,
    }
    utilisation = mfu(flops, per_device.clips_per_s, peak)
    if utilisation is not None:
        record["perf/mfu"] = utilisation
    return record


def forward_flops_per_clip(model: nn.Module, dataset, runtime: Runtime) -> float:
    """Forward FLOPs of one training clip (the first), counted by PyTorch."""
    collate = getattr(dataset, "collate_fn", None) or default_collate
    batch = move_batch(collate([dataset[(0, 0)]]), runtime)
    inputs = {key: batch[key] for key in ("video", "audio", "has_audio")}
    with runtime.autocast():
        return float(estimate_flops(model, inputs))


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    best_score: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    finished: bool = False
    history: list[dict[str, float]] | None = None
    # Exactly what DVCLive got per epoch (history plus lr and perf/): a resume rewrites the
    # logs from these, so the logs never hold an epoch the checkpoint does not.
    logged: list[dict[str, float]] = field(default_factory=list)
    # Mid-epoch checkpoints: optimizer steps done in epoch `epoch` and their losses.
    step_in_epoch: int = 0
    epoch_losses: list[float] = field(default_factory=list)


def train_run(
    params: Params,
    run: str,
    *,
    paths: RunPaths | None = None,
    resume: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train one run to completion (or early stop) and return its summary."""
    paths = paths or RunPaths.for_run(params, run)
    cfg = params.train
    runtime = resolve_runtime(cfg.device, cfg.precision)
    try:
        return _train(params, run, paths, runtime, resume=resume, progress=progress)
    finally:
        shutdown(runtime)


def _train(
    params: Params, run: str, paths: RunPaths, runtime: Runtime, *, resume: bool, progress: bool
) -> dict[str, Any]:
    cfg = params.train
    if runtime.is_main:
        remove_leftovers(paths.model_dir)  # temporaries of a write a kill interrupted
    print_fingerprint, code = fingerprint(params, paths), code_digest()
    last_path = paths.model_dir / LAST
    checkpoint = None
    if resume and last_path.is_file():
        try:
            checkpoint = load_checkpoint(last_path)
        except CheckpointError as error:
            raise CheckpointError(f"{error} (or --no-resume: start over)") from None
        if checkpoint.get("fingerprint") != print_fingerprint:
            checkpoint = None  # another run's past: start fresh
        elif checkpoint["finished"]:
            trained = all((paths.model_dir / name).is_file() for name in (BEST, META))
            if checkpoint.get("code") == code and trained:
                return _reuse_finished(run, paths, runtime, checkpoint)
            checkpoint = None  # finished by other code: train again
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(params.seed)
    train_set = build_dataset(params, run, paths, "train", train=True, device=runtime.device)
    val_set = build_dataset(params, run, paths, "val", train=False)
    if len(train_set) == 0:
        raise StageError(f"run {run}: the train split of {paths.split} is empty")
    classes = list(params.taxonomy_for(params.run(run).dataset))
    model, criterion = build_training_modules(
        params,
        list(params.taxonomy_for(params.run(run).dataset).values()),
        runtime.device,
        channels_last=cfg.channels_last and runtime.device.type == "cuda",
    )
    set_input_stats(model, paths)
    optimizer = build_optimizer(model, cfg)  # param groups: emotions.training.optim
    ranks = {"rank": runtime.rank, "world_size": runtime.world_size}
    train_sampler = EpochSampler(len(train_set), seed=params.seed, shuffle=True, **ranks)
    # Drop a ragged last batch only when a full one remains: decided on this rank's share of
    # the data, not the whole set, or a DDP rank holding fewer clips than one batch would get
    # no batch at all and train on nothing.
    loader = make_loader(
        train_set,
        train_sampler,
        params,
        runtime,
        drop_last=train_sampler.full_length > cfg.batch_size,
    )
    val_loader = make_loader(
        val_set,
        EpochSampler(len(val_set), shuffle=False, pad=False, **ranks),
        params,
        runtime,
        drop_last=False,
    )
    # The authors' protocol (evaluate.protocol: authors): the test split scored every epoch
    # on random views; evaluate reports its best epoch beside the val-selected test score.
    # It never chooses the checkpoint: validation does.
    test_sampler, test_loader = None, None
    if params.evaluate.protocol == "authors":
        test_set = build_dataset(params, run, paths, "test", train=False, random_views=True)
        test_sampler = EpochSampler(len(test_set), shuffle=False, pad=False, **ranks)
        test_loader = make_loader(test_set, test_sampler, params, runtime, drop_last=False)
    # Micro-batches of a whole epoch (the loader's length shrinks while a resume skips some);
    # optimizer steps, not micro-batches, drive the schedule under gradient accumulation.
    batches_per_epoch = len(loader)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.accumulate)
    scheduler = build_scheduler(
        optimizer,
        cfg.schedule,
        warmup_epochs=cfg.warmup_epochs,
        epochs=cfg.epochs,
        steps_per_epoch=steps_per_epoch,
    )
    state = TrainState(history=[])
    if checkpoint is not None and not checkpoint["finished"]:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        restore_rng(checkpoint["rng"])
        state = TrainState(
            epoch=checkpoint["epoch"],
            best_score=checkpoint["best_score"],
            best_epoch=checkpoint["best_epoch"],
            bad_epochs=checkpoint["bad_epochs"],
            history=list(checkpoint["history"]),
            step_in_epoch=checkpoint.get("step_in_epoch", 0),
            epoch_losses=list(checkpoint.get("epoch_losses", [])),
            logged=list(checkpoint.get("logged", [])),
        )
        if runtime.is_main:
            where = f" at step {state.step_in_epoch}" if state.step_in_epoch else ""
            print(f"train {run}: resuming after epoch {state.epoch}{where} from {last_path}")
    wrapped: nn.Module = model
    if runtime.distributed:
        wrapped = DistributedDataParallel(
            model,
            device_ids=[runtime.local_rank] if runtime.device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    remaining_steps = (cfg.epochs - state.epoch) * steps_per_epoch - math.ceil(
        state.step_in_epoch / cfg.accumulate
    )
    compile_choice = resolve_compile(
        cfg.compile, runtime.device, remaining_steps, cfg.compile_auto_min_steps
    )
    if runtime.is_main and runtime.device.type != "meta":
        state_word = "on" if compile_choice else "off"
        print(f"train {run}: torch.compile {state_word} ({compile_choice.reason})")
    if compile_choice:
        wrapped = torch.compile(wrapped, backend=cfg.compile_backend, mode=cfg.compile_mode)
    live = _open_live(paths.model_dir, state) if runtime.is_main else None
    metadata = model_metadata(params, run, paths)
    peak = peak_tflops(runtime.device, runtime.bf16, cfg.peak_tflops)
    flops = forward_flops_per_clip(model, train_set, runtime) if peak else None
    show = progress and runtime.is_main

    def save_last() -> None:
        """The resumable state (rank 0 writes): after an epoch, or after some of its steps."""
        if not runtime.is_main:
            return
        atomic_torch_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": capture_rng(),
                "epoch": state.epoch,
                "step_in_epoch": state.step_in_epoch,
                "epoch_losses": state.epoch_losses,
                "best_score": state.best_score,
                "best_epoch": state.best_epoch,
                "bad_epochs": state.bad_epochs,
                "finished": state.finished,
                "history": state.history,
                "logged": state.logged,
                "fingerprint": print_fingerprint,
                "code": code,
            },
            last_path,
        )

    started = time.perf_counter()
    while state.epoch < cfg.epochs and not state.finished:
        # The epoch's order and augmentation depend only on (seed, epoch): the key to exact
        # resumes. A mid-epoch resume leaves out the batches already trained on.
        skip = state.step_in_epoch
        train_sampler.set_epoch(state.epoch, skip=skip * cfg.batch_size)
        wrapped.train()
        losses: list[torch.Tensor] = []  # on the device: read back only every N steps
        meter = ThroughputMeter(runtime.device)
        bar = tqdm(
            meter.wrap(loader),
            total=len(loader),
            desc=f"{run} epoch {state.epoch + 1}/{cfg.epochs}",
            leave=False,
            disable=not show,
        )
        optimizer.zero_grad(set_to_none=True)
        for done, batch in enumerate(bar, start=skip + 1):
            # Gradient accumulation: a group of `accumulate` micro-batches (the last may be
            # shorter) makes one optimizer step; DDP all-reduces only on the group's last.
            group = micro_group(done - 1, batches_per_epoch, cfg.accumulate)
            final = done == group.stop
            batch = move_batch(batch, runtime)
            with ddp_sync(wrapped, final):
                loss = training_loss(wrapped, criterion, batch, params, runtime)
                (loss / len(group)).backward()
            if final:
                if cfg.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
            meter.step(len(batch["label"]))
            if show and done % cfg.log_every_n_steps == 0:
                recent = torch.stack(losses[-cfg.log_every_n_steps :]).mean()
                bar.set_postfix(loss=f"{recent.item():.3f}")
            # Step checkpoints fall on optimizer steps only (never inside an accumulation
            # group), so a resume starts at a group boundary.
            every = cfg.checkpoint_every_n_steps
            optimizer_steps = state.epoch * steps_per_epoch + math.ceil(done / cfg.accumulate)
            if every and final and optimizer_steps % every == 0 and done < batches_per_epoch:
                state.step_in_epoch = done
                state.epoch_losses = state.epoch_losses + torch.stack(losses).cpu().tolist()
                losses = []
                save_last()
        throughput = meter.finish()
        if losses:
            state.epoch_losses = state.epoch_losses + torch.stack(losses).cpu().tolist()
        loss_sum, loss_count = _reduce_sums(
            runtime, [math.fsum(state.epoch_losses), len(state.epoch_losses)]
        )
        record: dict[str, float] = {
            "epoch": state.epoch + 1,
            "train_loss": loss_sum / max(loss_count, 1),
        }
        record.update(score_validation(model, val_loader, runtime, len(classes)))
        if test_loader is not None and test_sampler is not None:
            test_sampler.set_epoch(state.epoch)  # new random views every epoch
            scores = score_validation(model, test_loader, runtime, len(classes))
            record.update({AUTHORS_TEST + k.removeprefix("val_"): v for k, v in scores.items()})
        perf = throughput_record(runtime, throughput, flops, peak)
        record = broadcast_object(runtime, record)
        state.epoch += 1
        state.step_in_epoch, state.epoch_losses = 0, []
        state.history.append(record)
        score = record.get("val_weighted_f1", -record["train_loss"])
        if score > state.best_score:
            state.best_score, state.best_epoch, state.bad_epochs = score, state.epoch, 0
            if runtime.is_main:
                # model.json travels with best.pt: written at start, it would describe the new
                # architecture next to the previous run's weights until the first epoch ends
                # (the model folder persists across runs), and the folder would not load.
                atomic_write_json(metadata, paths.model_dir / META)
                atomic_torch_save(
                    {"model": model.state_dict(), "epoch": state.epoch, "score": score},
                    paths.model_dir / BEST,
                )
        else:
            state.bad_epochs += 1
        state.finished = state.bad_epochs >= cfg.patience or state.epoch >= cfg.epochs
        row = live_row(record, perf, scheduler.get_last_lr()[0])
        state.logged.append(row)
        # Save, then log: a kill between the two leaves an epoch the checkpoint has and the
        # logs lack, which the resume writes from the checkpoint (never one logged twice).
        save_last()
        if live is not None:
            log_row(live, row)
        if runtime.is_main:
            shown = {key: round(value, 4) for key, value in record.items()}
            print(f"train {run}: " + json.dumps(shown) + " " + json.dumps(_rounded(perf)))
    summary = {
        "run": run,
        "epochs": state.epoch,
        "best_epoch": state.best_epoch,
        "best_val_weighted_f1": state.best_score,
        "seconds": time.perf_counter() - started,
        "device": str(runtime.device),
        "world_size": runtime.world_size,
        "bf16": runtime.bf16,
        "history": state.history,
    }
    if runtime.is_main:
        atomic_write_json(summary, paths.model_dir / TRAIN_SUMMARY)
        if live is not None:
            live.end()
    return summary


def _reuse_finished(
    run: str, paths: RunPaths, runtime: Runtime, checkpoint: dict[str, Any]
) -> dict[str, Any]:
    """The summary of a run whose finished checkpoint matches (params, data and code): a kill
    after training but before DVC recorded it must not cost a retraining."""
    history = list(checkpoint["history"])
    summary_path = paths.model_dir / TRAIN_SUMMARY
    summary: dict[str, Any] = {}
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    if summary.get("history") != history:
        summary = {
            "run": run,
            "epochs": checkpoint["epoch"],
            "best_epoch": checkpoint["best_epoch"],
            "best_val_weighted_f1": checkpoint["best_score"],
            "seconds": 0.0,
            "device": str(runtime.device),
            "world_size": runtime.world_size,
            "bf16": runtime.bf16,
            "history": history,
        }
    if runtime.is_main:
        print(
            f"train {run}: {paths.model_dir / LAST} already finished (epoch "
            f"{checkpoint['epoch']}) with these params, data and code; reusing it "
            "(--no-resume trains again)"
        )
        if checkpoint.get("logged") is not None and len(checkpoint["logged"]) == len(history):
            state = TrainState(epoch=checkpoint["epoch"], logged=list(checkpoint["logged"]))
            _open_live(paths.model_dir, state).end()
        atomic_write_json(summary, summary_path)
    return summary


def _rounded(perf: dict[str, float]) -> dict[str, float]:
    return {key.removeprefix("perf/"): round(value, 4) for key, value in perf.items()}


def live_row(record: dict[str, float], perf: dict[str, float], lr: float) -> dict[str, float]:
    """One epoch's DVCLive metrics by logged name (val_ and the authors' test scores plain,
    the others under train/)."""
    row = {}
    for key, value in record.items():
        if key != "epoch":
            plain = key.startswith(("val_", AUTHORS_TEST))
            row[key if plain else f"train/{key}"] = value
    return {**row, **perf, "lr": lr}


def log_row(live: Any, row: dict[str, float]) -> None:
    for key, value in row.items():
        live.log_metric(key, value)
    live.next_step()


def _open_live(model_dir: Path, state: TrainState):
    """DVCLive in the model folder, holding exactly the checkpoint's epochs: rewritten from
    ``state.logged`` (a checkpoint from before it was kept: appended to, as then)."""
    import shutil

    from dvclive import Live

    legacy = state.epoch > 0 and len(state.logged) != state.epoch
    if not legacy:
        shutil.rmtree(model_dir / LIVE, ignore_errors=True)
    live = Live(
        dir=str(model_dir / LIVE),
        resume=legacy,
        save_dvc_exp=False,
        dvcyaml=None,
        report=None,
    )
    if legacy:
        live.step = state.epoch
        return live
    for row in state.logged:
        log_row(live, row)
    return live
