"""AdamW parameter groups: who gets weight decay, and each part's learning rate.

- No weight decay on norms, biases (every parameter of ≤ 1 dimension), position tables
  (``pos_embed``, ``relative_position_bias_table``) and learned tokens (clip, missing, null,
  modality and window embeddings): decaying them pulls normalisation gains and embeddings towards
  zero, which only regularises away what they encode (the common practice of BEiT, Swin and
  timm's ``param_groups_weight_decay``).
- The branches (``video.``, ``audio.``) train at ``lr × backbone_lr_mult``: pretrained
  backbones want a smaller step than the fusion trained from scratch.
- Optional layer-wise decay: a branch parameter at depth i of n (``branch.layer_id``) gets
  ``layer_decay ** (n − 1 − i)`` more, so early layers (general features) move least.

Each group carries its own ``lr``; the LR schedulers scale every group alike.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from emotions.config import TrainConfig

BRANCHES = ("video", "audio")
# Leaf parameter names that are tables or learned tokens, whatever their shape.
NO_DECAY_NAMES = frozenset(
    {
        "pos_embed",
        "relative_position_bias_table",
        "cls_token",
        "clip_token",
        "window_embed",
        "null",
        "mask_token",
    }
)
NO_DECAY_PARENTS = frozenset({"missing", "modality_embed"})


def unwrap(model: nn.Module) -> nn.Module:
    """The AVCANet inside DDP and/or torch.compile wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def decays(name: str, param: nn.Parameter) -> bool:
    """Whether ``name`` gets weight decay (weight matrices and kernels only)."""
    parts = name.split(".")
    if param.ndim <= 1 or parts[-1] in NO_DECAY_NAMES:
        return False
    return not (len(parts) > 1 and parts[-2] in NO_DECAY_PARENTS)


def lr_scale(
    model: nn.Module, name: str, backbone_lr_mult: float, layer_decay: float | None
) -> float:
    """The lr multiplier of parameter ``name`` of ``model``."""
    branch_name, _, rest = name.partition(".")
    branch = getattr(model, branch_name, None) if branch_name in BRANCHES else None
    if branch is None:
        return 1.0
    scale = backbone_lr_mult
    if layer_decay is not None and hasattr(branch, "layer_id"):
        scale *= layer_decay ** (branch.num_layers - 1 - branch.layer_id(rest))
    return scale


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    backbone_lr_mult: float = 1.0,
    layer_decay: float | None = None,
) -> list[dict[str, Any]]:
    """AdamW groups, one per (lr scale, decay or not), with ``names`` for inspection."""
    model = unwrap(model)
    groups: dict[tuple[float, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = lr_scale(model, name, backbone_lr_mult, layer_decay)
        decay = decays(name, param)
        group = groups.setdefault(
            (scale, decay),
            {
                "params": [],
                "names": [],
                "lr": lr * scale,
                "lr_scale": scale,
                "weight_decay": weight_decay if decay else 0.0,
            },
        )
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """The train stage's AdamW over ``param_groups`` with the train settings."""
    groups = param_groups(
        model,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        backbone_lr_mult=cfg.backbone_lr_mult,
        layer_decay=cfg.layer_decay,
    )
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def micro_group(step: int, steps: int, accumulate: int) -> range:
    """The micro-batch indices of the accumulation group that micro-batch ``step`` is in.

    Groups are ``accumulate`` consecutive micro-batches of an epoch of ``steps``; the last
    group holds the remainder, so every micro-batch is used and the loss of a short group is
    averaged over its own size.
    """
    start = step - step % accumulate
    return range(start, min(start + accumulate, steps))


def ddp_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` on a non-final micro-step (gradients stay local), else a no-op.

    Finds the DistributedDataParallel under a torch.compile wrapper; a plain module needs none.
    """
    while not isinstance(model, DistributedDataParallel):
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return contextlib.nullcontext()
        model = inner
    return contextlib.nullcontext() if sync else model.no_sync()
