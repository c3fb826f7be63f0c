"""Learning-rate schedule and optimiser parameter groups, as pure functions.

The paper's recipe (section 2.4): AdamW, linear warmup over the first 10% of the optimiser steps,
then a half-cycle cosine decay to ``min_lr``. The absolute learning rate follows the MAE
convention ``lr = blr * global_batch / 256``; :func:`effective_lr` is the one place that rule lives.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Parameters that are never decayed whatever their shape: learned tokens and positional embeddings
# (decaying them pulls them towards zero, which is not a prior anyone wants for an embedding).
NO_DECAY_NAMES = ("cls_token", "mask_token", "pos_embed", "decoder_pos_embed", "dist_token", "reg_token")


def effective_lr(blr: float, global_batch: int) -> float:
    """The absolute learning rate for a base rate ``blr`` at ``global_batch`` images per step.

    ``global_batch`` counts every image that contributes to one optimiser step: per-device batch x
    devices x accumulation steps. ``blr`` is stated for a batch of 256 (MAE convention), so the
    paper's nominal 1e-3 at batch 64 gives 2.5e-4.
    """
    if blr <= 0 or global_batch <= 0:
        raise ValueError(f"blr and global_batch must be positive, got {blr} and {global_batch}")
    return blr * global_batch / 256


def warmup_steps_for(total_steps: int, warmup_fraction: float = 0.1) -> int:
    """Number of warmup steps: ``warmup_fraction`` of ``total_steps``, rounded to nearest."""
    return int(round(total_steps * warmup_fraction))


def lr_at(step: int, total_steps: int, base_lr: float, warmup_steps: int, min_lr: float = 0.0) -> float:
    """Learning rate for optimiser step ``step`` (0-based).

    Linear warmup ``base_lr * step / warmup_steps`` for ``step < warmup_steps``, then half-cycle
    cosine from ``base_lr`` at ``step == warmup_steps`` down to ``min_lr`` at ``step == total_steps``.

    Args:
        step: optimiser step, 0 <= step <= total_steps.
        total_steps: steps in the whole run.
        base_lr: peak learning rate (see :func:`effective_lr`).
        warmup_steps: length of the linear warmup, 0 <= warmup_steps <= total_steps.
        min_lr: floor reached at the end of the cosine.
    """
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, {total_steps}], got {warmup_steps}")
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 0:
        return base_lr
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def is_no_decay(name: str, param: torch.Tensor) -> bool:
    """True for biases, norm weights (any 1-D tensor), tokens and positional embeddings."""
    leaf = name.split(".")[-1]
    return param.ndim <= 1 or name.endswith(".bias") or leaf in NO_DECAY_NAMES


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weight matrices, and everything in :func:`is_no_decay` at 0.

    Frozen parameters (e.g. fixed sin-cos positional embeddings) are left out. Works through a
    DistributedDataParallel wrapper: names are taken from ``model.module`` when present.
    """
    module = getattr(model, "module", model)
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if is_no_decay(name, param) else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set ``lr`` on every group, honouring an optional per-group ``lr_scale`` (layer decay)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
