"""Batch prediction over a cached split: what evaluate and calibrate score.

Kept apart from the trainer so scoring a trained model never imports the training loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from emotions.training.dataset import CachedClipDataset
from emotions.training.runtime import Runtime
from emotions.training.transforms import decode_deferred


def move_batch(batch: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    device = runtime.device
    non_blocking = device.type == "cuda"
    moved = {
        key: value.to(device, non_blocking=non_blocking) if torch.is_tensor(value) else value
        for key, value in batch.items()
    }
    if "jpeg" in batch:  # a deferred jpeg batch: decoded here, on the device, in one call
        moved["video"] = decode_deferred(batch, device)
        del moved["jpeg"]  # consumed: a moved batch is never decoded again
    return moved


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
            out = model(
                batch["video"],
                batch["audio"],
                batch["has_audio"],
                audio_frames=batch.get("audio_frames"),
            )
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


def predict_views(
    model: nn.Module,
    dataset: CachedClipDataset,
    views: int,
    runtime: Runtime,
    *,
    batch_size: int,
    desc: str = "eval",
) -> dict[str, np.ndarray]:
    """:func:`predict_split` over ``views`` evenly shifted cached positions, averaged.

    Logits (and embeddings, window logits) are averaged over the views, the usual multi-view
    test of TSN-style models; one view is the centre view alone. The loader's order does not
    depend on the view, so the clips line up across passes.
    """
    outputs = []
    try:
        for position in dataset.layout.view_positions(views):
            dataset.view = position
            label = desc if views == 1 else f"{desc} view {position}"
            loader = DataLoader(dataset, batch_size=batch_size)
            outputs.append(predict_split(model, loader, runtime, desc=label))
    finally:
        dataset.view = None
    merged = dict(outputs[0])
    if len(outputs) > 1 and len(merged["labels"]):
        for key in ("logits", "embeddings", "window_logits"):
            merged[key] = np.mean([out[key] for out in outputs], axis=0)
    return merged
