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
- The loop is `Trainer`, in named phases (set up, restore, wrap, open the logs, then per epoch
  train, score, end); what last.pt holds and whether it is used is emotions.training.resume,
  what an epoch reports (perf figures, DVCLive rows) emotions.training.reporting.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from emotions.atomic import remove_leftovers
from emotions.cache.format import STATS
from emotions.config import Params
from emotions.errors import StageError
from emotions.evaluation.metrics import AUTHORS_TEST, classification_summary
from emotions.layout import BEST, LAST, META, TRAIN_SUMMARY, RunPaths
from emotions.models.avcanet import AVCANet
from emotions.models.losses import build_criterion
from emotions.models.objective import objective
from emotions.training.checkpoints import (
    atomic_torch_save,
    atomic_write_json,
    restore_rng,
)
from emotions.training.dataset import build_dataset
from emotions.training.optim import build_optimizer, ddp_sync, micro_group
from emotions.training.predict import move_batch, predict_split
from emotions.training.prefetch import prefetched, prefetches
from emotions.training.reporting import (
    forward_flops_per_clip,
    live_row,
    log_row,
    open_live,
    reduce_sums,
    rounded,
    throughput_record,
)
from emotions.training.resume import (
    RunIdentity,
    TrainState,
    code_digest,
    fingerprint,
    last_checkpoint,
    resumable_checkpoint,
    reuse_finished,
)
from emotions.training.runtime import (
    Runtime,
    broadcast_object,
    resolve_compile,
    resolve_runtime,
    shutdown,
)
from emotions.training.samplers import EpochSampler
from emotions.training.schedule import build_scheduler
from emotions.training.throughput import EpochThroughput, ThroughputMeter, peak_tflops


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
    """Reuse a finished run, or set one up, restore its checkpoint and train it to the end."""
    if runtime.is_main:
        remove_leftovers(paths.model_dir)  # temporaries of a write a kill interrupted
    identity = RunIdentity(fingerprint(params, paths), code_digest())
    checkpoint = resumable_checkpoint(paths, identity) if resume else None
    if checkpoint is not None and checkpoint["finished"]:
        trained = all((paths.model_dir / name).is_file() for name in (BEST, META))
        if checkpoint.get("code") == identity.code and trained:
            return reuse_finished(run, paths, runtime, checkpoint)
        checkpoint = None  # finished by other code: train again
    trainer = Trainer(params, run, paths, runtime, identity, progress=progress)
    if checkpoint is not None:
        trainer.restore(checkpoint)
    trainer.wrap()
    trainer.open_logs()
    return trainer.fit()


class Trainer:
    """One run's training, phase by phase: set up (the constructor), ``restore`` a checkpoint,
    ``wrap`` for DDP and torch.compile, ``open_logs``, then ``fit``: per epoch
    ``train_epoch``, ``score_epoch``, ``end_epoch`` (``keep_if_best``, save then log), and
    the ``summary``.

    The phases run in this order because it fixes every random draw: a resumed run must build
    its datasets and model exactly as the original did before restoring the RNG, and consume
    it afterwards exactly as the original did after its own checkpoint.
    """

    def __init__(
        self,
        params: Params,
        run: str,
        paths: RunPaths,
        runtime: Runtime,
        identity: RunIdentity,
        *,
        progress: bool,
    ) -> None:
        """Set up: seed, then datasets, model, optimizer, loaders and schedule, in that order."""
        self.params, self.run, self.paths, self.runtime = params, run, paths, runtime
        self.cfg = cfg = params.train
        self.identity = identity
        self.last_path = paths.model_dir / LAST
        self.show = progress and runtime.is_main
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(params.seed)
        self.train_set = build_dataset(
            params, run, paths, "train", train=True, device=runtime.device
        )
        val_set = build_dataset(params, run, paths, "val", train=False)
        if len(self.train_set) == 0:
            raise StageError(f"run {run}: the train split of {paths.split} is empty")
        taxonomy = params.taxonomy_for(params.run(run).dataset)
        self.classes = list(taxonomy)
        self.model, self.criterion = build_training_modules(
            params,
            list(taxonomy.values()),
            runtime.device,
            channels_last=cfg.channels_last and runtime.device.type == "cuda",
        )
        set_input_stats(self.model, paths)
        self.optimizer = build_optimizer(self.model, cfg)  # param groups: emotions.training.optim
        self._build_loaders(val_set)
        self.prefetch = prefetches(cfg.device_prefetch, runtime.device)
        # Micro-batches of a whole epoch (the loader's length shrinks while a resume skips
        # some); optimizer steps, not micro-batches, drive the schedule under accumulation.
        self.batches_per_epoch = len(self.loader)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.accumulate)
        self.scheduler = build_scheduler(
            self.optimizer,
            cfg.schedule,
            warmup_epochs=cfg.warmup_epochs,
            epochs=cfg.epochs,
            steps_per_epoch=self.steps_per_epoch,
        )
        self.state = TrainState(history=[])
        self.wrapped: nn.Module = self.model
        self.live: Any = None
        self.metadata: dict[str, Any] = {}
        self.peak: float | None = None
        self.flops: float | None = None

    def _build_loaders(self, val_set: Any) -> None:
        """The train, val and (authors' protocol) test loaders, each sharded over the ranks."""
        params, runtime, cfg = self.params, self.runtime, self.cfg
        ranks = {"rank": runtime.rank, "world_size": runtime.world_size}
        self.train_sampler = EpochSampler(
            len(self.train_set), seed=params.seed, shuffle=True, **ranks
        )
        # Drop a ragged last batch only when a full one remains: decided on this rank's share
        # of the data, not the whole set, or a DDP rank holding fewer clips than one batch
        # would get no batch at all and train on nothing.
        self.loader = make_loader(
            self.train_set,
            self.train_sampler,
            params,
            runtime,
            drop_last=self.train_sampler.full_length > cfg.batch_size,
        )
        self.val_loader = make_loader(
            val_set,
            EpochSampler(len(val_set), shuffle=False, pad=False, **ranks),
            params,
            runtime,
            drop_last=False,
        )
        # The authors' protocol (evaluate.protocol: authors): the test split scored every
        # epoch on random views; evaluate reports its best epoch beside the val-selected test
        # score. It never chooses the checkpoint: validation does.
        self.test_sampler: EpochSampler | None = None
        self.test_loader: DataLoader | None = None
        if params.evaluate.protocol == "authors":
            test_set = build_dataset(
                params, self.run, self.paths, "test", train=False, random_views=True
            )
            self.test_sampler = EpochSampler(len(test_set), shuffle=False, pad=False, **ranks)
            self.test_loader = make_loader(
                test_set, self.test_sampler, params, runtime, drop_last=False
            )

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from an unfinished checkpoint: weights, optimizer, schedule, RNG, counters.

        Before ``wrap``: DDP broadcasts rank 0's restored weights when it wraps the model, and
        the compile choice depends on the steps left.
        """
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        restore_rng(checkpoint["rng"])
        self.state = TrainState.from_checkpoint(checkpoint)
        if self.runtime.is_main:
            state = self.state
            where = f" at step {state.step_in_epoch}" if state.step_in_epoch else ""
            print(
                f"train {self.run}: resuming after epoch {state.epoch}{where} from {self.last_path}"
            )

    def wrap(self) -> None:
        """DDP across the ranks, then torch.compile when the steps left repay its warm-up."""
        runtime, cfg, state = self.runtime, self.cfg, self.state
        if runtime.distributed:
            self.wrapped = DistributedDataParallel(
                self.model,
                device_ids=[runtime.local_rank] if runtime.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        remaining_steps = (cfg.epochs - state.epoch) * self.steps_per_epoch - math.ceil(
            state.step_in_epoch / cfg.accumulate
        )
        choice = resolve_compile(
            cfg.compile, runtime.device, remaining_steps, cfg.compile_auto_min_steps
        )
        if runtime.is_main and runtime.device.type != "meta":
            word = "on" if choice else "off"
            print(f"train {self.run}: torch.compile {word} ({choice.reason})")
            if self.prefetch:
                setting = str(cfg.device_prefetch).lower()
                print(
                    f"train {self.run}: next batches moved to {runtime.device.type} ahead of "
                    f"the step in a thread (train.device_prefetch: {setting})"
                )
        if choice:
            self.wrapped = torch.compile(
                self.wrapped, backend=cfg.compile_backend, mode=cfg.compile_mode
            )

    def open_logs(self) -> None:
        """DVCLive (rank 0) rewritten to the checkpoint's epochs, the metadata best.pt gets,
        and the FLOPs behind MFU (counted after ``restore``, as the RNG has always seen it)."""
        runtime = self.runtime
        if runtime.is_main:
            self.live = open_live(self.paths.model_dir, self.state.epoch, self.state.logged)
        self.metadata = model_metadata(self.params, self.run, self.paths)
        self.peak = peak_tflops(runtime.device, runtime.bf16, self.cfg.peak_tflops)
        if self.peak:
            self.flops = forward_flops_per_clip(self.model, self.train_set, runtime)

    def fit(self) -> dict[str, Any]:
        """Epochs until the last one or early stopping; the run's summary."""
        started = time.perf_counter()
        while self.state.epoch < self.cfg.epochs and not self.state.finished:
            throughput = self.train_epoch()
            record, perf = self.score_epoch(throughput)
            self.end_epoch(record, perf)
        return self.summary(time.perf_counter() - started)

    def train_epoch(self) -> EpochThroughput:
        """One pass over this rank's share of the epoch (what is left of it after a resume).

        The epoch's order and augmentation depend only on (seed, epoch): the key to exact
        resumes. A mid-epoch resume leaves out the batches already trained on. The losses stay
        on the device and are read back only every ``log_every_n_steps``.
        """
        cfg, state = self.cfg, self.state
        skip = state.step_in_epoch
        self.train_sampler.set_epoch(state.epoch, skip=skip * cfg.batch_size)
        self.wrapped.train()
        losses: list[torch.Tensor] = []
        meter = ThroughputMeter(self.runtime.device)
        batches = prefetched(self.loader, self.runtime) if self.prefetch else self.loader
        bar = tqdm(
            meter.wrap(batches),
            total=len(self.loader),
            desc=f"{self.run} epoch {state.epoch + 1}/{cfg.epochs}",
            leave=False,
            disable=not self.show,
        )
        self.optimizer.zero_grad(set_to_none=True)
        for done, batch in enumerate(bar, start=skip + 1):
            loss, final = self.train_step(done, batch)
            losses.append(loss)
            meter.step(len(batch["label"]))
            if self.show and done % cfg.log_every_n_steps == 0:
                recent = torch.stack(losses[-cfg.log_every_n_steps :]).mean()
                bar.set_postfix(loss=f"{recent.item():.3f}")
            if final and self._step_checkpoint_due(done):
                state.step_in_epoch = done
                state.epoch_losses = state.epoch_losses + torch.stack(losses).cpu().tolist()
                losses = []
                self.save_last()
        throughput = meter.finish()
        if losses:
            state.epoch_losses = state.epoch_losses + torch.stack(losses).cpu().tolist()
        return throughput

    def train_step(self, done: int, batch: dict[str, Any]) -> tuple[torch.Tensor, bool]:
        """One micro-batch (the ``done``-th of the epoch); True with the optimizer step.

        Gradient accumulation: a group of ``accumulate`` micro-batches (the last may be
        shorter) makes one optimizer step; DDP all-reduces only on the group's last.
        """
        cfg = self.cfg
        group = micro_group(done - 1, self.batches_per_epoch, cfg.accumulate)
        final = done == group.stop
        if not self.prefetch:  # the prefetch thread has moved it already
            batch = move_batch(batch, self.runtime)
        with ddp_sync(self.wrapped, final):
            loss = training_loss(self.wrapped, self.criterion, batch, self.params, self.runtime)
            (loss / len(group)).backward()
        if final:
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach(), final

    def _step_checkpoint_due(self, done: int) -> bool:
        """Whether the optimizer step just ended by micro-batch ``done`` gets a checkpoint.

        Step checkpoints fall on optimizer steps only (never inside an accumulation group), so
        a resume starts at a group boundary; an epoch's last step has the epoch's checkpoint.
        """
        cfg = self.cfg
        every = cfg.checkpoint_every_n_steps
        steps = self.state.epoch * self.steps_per_epoch + math.ceil(done / cfg.accumulate)
        return bool(every) and steps % every == 0 and done < self.batches_per_epoch

    def score_epoch(self, throughput: EpochThroughput) -> tuple[dict[str, float], dict[str, float]]:
        """The epoch's record (train loss, val and authors' test scores, the same on every
        rank) and its perf figures; the collectives run in the same order on every rank."""
        runtime, state = self.runtime, self.state
        loss_sum, loss_count = reduce_sums(
            runtime, [math.fsum(state.epoch_losses), len(state.epoch_losses)]
        )
        record: dict[str, float] = {
            "epoch": state.epoch + 1,
            "train_loss": loss_sum / max(loss_count, 1),
        }
        record.update(score_validation(self.model, self.val_loader, runtime, len(self.classes)))
        if self.test_loader is not None and self.test_sampler is not None:
            self.test_sampler.set_epoch(state.epoch)  # new random views every epoch
            scores = score_validation(self.model, self.test_loader, runtime, len(self.classes))
            record.update({AUTHORS_TEST + k.removeprefix("val_"): v for k, v in scores.items()})
        perf = throughput_record(runtime, throughput, self.flops, self.peak)
        return broadcast_object(runtime, record), perf

    def end_epoch(self, record: dict[str, float], perf: dict[str, float]) -> None:
        """Count the epoch, keep the model if best, decide on stopping; save, then log."""
        state = self.state
        state.epoch += 1
        state.step_in_epoch, state.epoch_losses = 0, []
        state.history.append(record)
        self.keep_if_best(record.get("val_weighted_f1", -record["train_loss"]))
        state.finished = state.bad_epochs >= self.cfg.patience or state.epoch >= self.cfg.epochs
        row = live_row(record, perf, self.scheduler.get_last_lr()[0])
        state.logged.append(row)
        # Save, then log: a kill between the two leaves an epoch the checkpoint has and the
        # logs lack, which the resume writes from the checkpoint (never one logged twice).
        self.save_last()
        if self.live is not None:
            log_row(self.live, row)
        if self.runtime.is_main:
            shown = {key: round(value, 4) for key, value in record.items()}
            print(f"train {self.run}: " + json.dumps(shown) + " " + json.dumps(rounded(perf)))

    def keep_if_best(self, score: float) -> None:
        """best.pt (and model.json) for a new best score; otherwise one more bad epoch."""
        state = self.state
        if not score > state.best_score:  # not `<=`: a NaN score is a bad epoch
            state.bad_epochs += 1
            return
        state.best_score, state.best_epoch, state.bad_epochs = score, state.epoch, 0
        if self.runtime.is_main:
            # model.json travels with best.pt: written at start, it would describe the new
            # architecture next to the previous run's weights until the first epoch ends (the
            # model folder persists across runs), and the folder would not load.
            model_dir = self.paths.model_dir
            atomic_write_json(self.metadata, model_dir / META)
            atomic_torch_save(
                {"model": self.model.state_dict(), "epoch": state.epoch, "score": score},
                model_dir / BEST,
            )

    def save_last(self) -> None:
        """The resumable state (rank 0 writes): after an epoch, or after some of its steps."""
        if not self.runtime.is_main:
            return
        checkpoint = last_checkpoint(
            self.state, self.identity, self.model, self.optimizer, self.scheduler
        )
        atomic_torch_save(checkpoint, self.last_path)

    def summary(self, seconds: float) -> dict[str, Any]:
        """The run's summary (rank 0 writes it and closes DVCLive); what `train_run` returns."""
        state, runtime = self.state, self.runtime
        summary = {
            "run": self.run,
            "epochs": state.epoch,
            "best_epoch": state.best_epoch,
            "best_val_weighted_f1": state.best_score,
            "seconds": seconds,
            "device": str(runtime.device),
            "world_size": runtime.world_size,
            "bf16": runtime.bf16,
            "history": state.history,
        }
        if runtime.is_main:
            atomic_write_json(summary, self.paths.model_dir / TRAIN_SUMMARY)
            if self.live is not None:
                self.live.end()
        return summary
