"""The `train` stage: AV-CANet on one (dataset, variant) run, resumable, CPU or CUDA, DDP-ready.

Why it is built this way:
- Resumable by construction: the state at the end of every epoch (model, optimizer, scheduler,
  RNG, early-stopping counters) is one atomic checkpoint, and each epoch's data order is a pure
  function of (seed, epoch). A run killed mid-epoch redoes that epoch from identical state, so on
  CPU it ends with exactly the metrics of an uninterrupted run.
- The same loop serves a laptop and a GPU job: `runtime.resolve_runtime` picks CUDA + bf16
  autocast when present and joins the DDP process group under `torchrun` (gloo on CPU).
- Rank 0 alone logs (DVCLive), writes checkpoints and draws progress bars.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm.auto import tqdm

from emotions.checkpoints import (
    BEST,
    LAST,
    META,
    atomic_torch_save,
    atomic_write_json,
    capture_rng,
    load_checkpoint,
    restore_rng,
)
from emotions.config import Params
from emotions.data.loader import CachedClipDataset, SpecAugment
from emotions.metrics import classification_summary
from emotions.models.avcanet import AVCANet
from emotions.models.losses import build_criterion
from emotions.models.objective import objective
from emotions.optim import build_optimizer, ddp_sync, micro_group
from emotions.runtime import Runtime, broadcast_object, resolve_runtime, shutdown


@dataclass(frozen=True)
class RunPaths:
    """Where one run reads its data and writes its model."""

    cache: Path
    split: Path
    model_dir: Path

    @classmethod
    def for_run(cls, params: Params, run: str, artifacts: Path = Path("artifacts")) -> RunPaths:
        spec = params.run(run)
        base = artifacts / spec.dataset
        return cls(
            cache=base / "cache",
            split=base / "variants" / spec.variant / "split.parquet",
            model_dir=artifacts / "models" / spec.dataset / spec.variant,
        )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fingerprint(params: Params, paths: RunPaths) -> str:
    """What the checkpoint was trained on; a resume with a different fingerprint starts fresh."""
    digest = hashlib.sha256()
    for section in (params.model, params.loss, params.train, params.preprocess):
        digest.update(section.model_dump_json().encode())
    digest.update(str(params.seed).encode())
    for path in (paths.split, paths.cache / "index.parquet", paths.cache / "stats.json"):
        digest.update(path.read_bytes() if path.is_file() else b"-")
    return digest.hexdigest()[:16]


def build_dataset(params: Params, run: str, paths: RunPaths, split: str, train: bool):
    spec = params.run(run)
    classes = list(params.taxonomy_for(spec.dataset))
    augment = None
    if train and (params.train.spec_augment_time or params.train.spec_augment_freq):
        augment = SpecAugment(
            time_mask=params.train.spec_augment_time, freq_mask=params.train.spec_augment_freq
        )
    return CachedClipDataset(
        paths.cache,
        paths.split,
        split,
        crop=params.preprocess.crop,
        train=train,
        spec_augment=augment,
        seed=params.seed,
        classes=classes,
    )


def build_model(params: Params, num_classes: int) -> AVCANet:
    return AVCANet(params.model, num_classes=num_classes)


def set_input_stats(model: nn.Module, paths: RunPaths) -> None:
    """Tell an audio branch that rescales its input (AST normalisation) the cache's stats."""
    audio = getattr(model, "audio", None)
    if audio is not None and hasattr(audio, "set_input_stats"):
        stats = json.loads((paths.cache / "stats.json").read_text(encoding="utf-8"))
        audio.set_input_stats(float(stats["fbank_mean"]), float(stats["fbank_std"]))


def model_metadata(params: Params, run: str, paths: RunPaths) -> dict[str, Any]:
    """Everything `predict` and serving need to rebuild the model and its inputs.

    The log-mel normalisation statistics travel with the model: a served model must scale
    its input exactly as the cache it was trained on did.
    """
    spec = params.run(run)
    taxonomy = params.taxonomy_for(spec.dataset)
    stats = json.loads((paths.cache / "stats.json").read_text(encoding="utf-8"))
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
    }


def move_batch(batch: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    device = runtime.device
    non_blocking = device.type == "cuda"
    return {
        key: value.to(device, non_blocking=non_blocking) if torch.is_tensor(value) else value
        for key, value in batch.items()
    }


@torch.no_grad()
def predict_split(
    model: nn.Module, loader: DataLoader, runtime: Runtime, desc: str = "eval"
) -> dict[str, np.ndarray]:
    """Logits, labels, embeddings and window logits of a whole split, in loader order."""
    model.eval()
    logits, labels, embeddings, windows, clip_ids = [], [], [], [], []
    for batch in tqdm(loader, desc=desc, leave=False, disable=not runtime.is_main):
        batch = move_batch(batch, runtime)
        with runtime.autocast():
            out = model(batch["video"], batch["audio"], batch["has_audio"])
        logits.append(out["logits"].float().cpu())
        embeddings.append(out["embedding"].float().cpu())
        windows.append(out["window_logits"].float().cpu())
        labels.append(batch["label"].cpu())
        clip_ids.extend(batch["clip_id"])
    if not logits:
        return {"logits": np.zeros((0, 0)), "labels": np.zeros(0, int), "clip_ids": np.array([])}
    return {
        "logits": torch.cat(logits).numpy(),
        "labels": torch.cat(labels).numpy(),
        "embeddings": torch.cat(embeddings).numpy(),
        "window_logits": torch.cat(windows).numpy(),
        "clip_ids": np.asarray(clip_ids),
    }


def _scheduler(optimizer: torch.optim.Optimizer, warmup: int, total: int):
    warmup = max(1, min(warmup, total - 1)) if total > 1 else 1
    return torch.optim.lr_scheduler.SequentialLR(
        optimizer,
        [
            torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.05, total_iters=warmup),
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup)),
        ],
        milestones=[warmup],
    )


def _epoch_loader(dataset, params: Params, runtime: Runtime, epoch: int) -> DataLoader:
    """The data order of an epoch depends only on (seed, epoch): the key to exact resumes."""
    dataset.set_epoch(epoch)  # augmentation streams too
    if runtime.distributed:
        sampler = DistributedSampler(dataset, shuffle=True, seed=params.seed, drop_last=False)
        sampler.set_epoch(epoch)
    else:
        generator = torch.Generator().manual_seed(params.seed * 1000 + epoch)
        sampler = RandomSampler(dataset, generator=generator)
    # Drop a ragged last batch only when a full one remains: decided on this rank's share of
    # the data (len(sampler)), not the whole set, or a DDP rank holding fewer clips than one
    # batch would get no batch at all and train on nothing.
    return DataLoader(
        dataset,
        batch_size=params.train.batch_size,
        sampler=sampler,
        num_workers=params.train.num_workers,
        pin_memory=runtime.device.type == "cuda",
        drop_last=len(sampler) > params.train.batch_size,
        persistent_workers=False,
    )


@dataclass
class TrainState:
    epoch: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    finished: bool = False
    history: list[dict[str, float]] | None = None


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
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(params.seed)
    train_set = build_dataset(params, run, paths, "train", train=True)
    val_set = build_dataset(params, run, paths, "val", train=False)
    if len(train_set) == 0:
        raise RuntimeError(f"run {run}: the train split of {paths.split} is empty")
    classes = list(params.taxonomy_for(params.run(run).dataset))
    model = build_model(params, len(classes)).to(runtime.device)
    set_input_stats(model, paths)
    if cfg.channels_last and runtime.device.type == "cuda" and hasattr(model, "video"):
        model.video.to(memory_format=torch.channels_last_3d)
    criterion = build_criterion(
        list(params.taxonomy_for(params.run(run).dataset).values()), params.loss
    ).to(runtime.device)
    optimizer = build_optimizer(model, cfg)  # param groups: emotions.optim
    # Optimizer steps, not micro-batches, drive the schedule under gradient accumulation.
    steps_per_epoch = math.ceil(len(_epoch_loader(train_set, params, runtime, 0)) / cfg.accumulate)
    scheduler = _scheduler(
        optimizer, round(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch
    )
    state = TrainState(history=[])
    print_fingerprint = fingerprint(params, paths)
    last_path = paths.model_dir / LAST
    if resume and last_path.is_file():
        checkpoint = load_checkpoint(last_path)
        if checkpoint.get("fingerprint") == print_fingerprint and not checkpoint["finished"]:
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
            )
            if runtime.is_main:
                print(f"train {run}: resuming after epoch {state.epoch} from {last_path}")
    wrapped: nn.Module = model
    if runtime.distributed:
        wrapped = DistributedDataParallel(
            model,
            device_ids=[runtime.local_rank] if runtime.device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    if cfg.compile:
        wrapped = torch.compile(wrapped)
    live = _open_live(paths.model_dir, resumed=state.epoch > 0) if runtime.is_main else None
    if live is not None:
        live.step = state.epoch
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    metadata = model_metadata(params, run, paths)
    started = time.perf_counter()
    while state.epoch < cfg.epochs and not state.finished:
        loader = _epoch_loader(train_set, params, runtime, state.epoch)
        wrapped.train()
        losses = []
        bar = tqdm(
            loader,
            desc=f"{run} epoch {state.epoch + 1}/{cfg.epochs}",
            leave=False,
            disable=not (progress and runtime.is_main),
        )
        optimizer.zero_grad(set_to_none=True)
        for step, batch in enumerate(bar):
            # Gradient accumulation: a group of `accumulate` micro-batches (the last may be
            # shorter) makes one optimizer step; DDP all-reduces only on the group's last.
            group = micro_group(step, len(loader), cfg.accumulate)
            final = step + 1 == group.stop
            batch = move_batch(batch, runtime)
            with ddp_sync(wrapped, final):
                with runtime.autocast():
                    out = wrapped(batch["video"], batch["audio"], batch["has_audio"])
                # fused + window + auxiliary audio/video terms (emotions.models.objective)
                terms = objective(out, batch["label"], batch["has_audio"], criterion, params.loss)
                loss = terms["loss"]
                (loss / len(group)).backward()
            if final:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        record: dict[str, float] = {"epoch": state.epoch + 1, "train_loss": float(np.mean(losses))}
        if runtime.is_main:
            predicted = predict_split(model, val_loader, runtime, desc="val")
            if len(predicted["labels"]):
                summary = classification_summary(
                    predicted["labels"], predicted["logits"].argmax(1), len(classes)
                )
                record.update({f"val_{key}": value for key, value in summary.items()})
        record = broadcast_object(runtime, record)
        state.epoch += 1
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
        if live is not None:
            for key, value in record.items():
                if key != "epoch":
                    live.log_metric(f"train/{key}" if not key.startswith("val_") else key, value)
            live.log_metric("lr", scheduler.get_last_lr()[0])
            live.next_step()
        if runtime.is_main:
            atomic_torch_save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": capture_rng(),
                    "epoch": state.epoch,
                    "best_score": state.best_score,
                    "best_epoch": state.best_epoch,
                    "bad_epochs": state.bad_epochs,
                    "finished": state.finished,
                    "history": state.history,
                    "fingerprint": print_fingerprint,
                },
                last_path,
            )
            print(f"train {run}: " + json.dumps(record))
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
        atomic_write_json(summary, paths.model_dir / "train_summary.json")
        if live is not None:
            live.end()
    return summary


def _open_live(model_dir: Path, resumed: bool):
    from dvclive import Live

    return Live(
        dir=str(model_dir / "dvclive"),
        resume=resumed,
        save_dvc_exp=False,
        dvcyaml=None,
        report=None,
    )
