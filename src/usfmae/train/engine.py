"""The training loops, one per kind, with explicit arguments only.

* :func:`train_one_epoch` / :func:`evaluate`: MAE pretraining and its reconstruction loss.
* :func:`train_supervised_epoch` / :func:`predict`: a model that maps images to outputs under a
  supervised loss (classification, segmentation).

Pretraining data arrive as an iterable of micro-batches (already on the host, uint8 or float) plus a
``batch_transform(x, step, micro)`` applied on the device: that is where the fast recipe plugs its
GPU augmentation in, and where the paper recipe just moves already-augmented floats.
Losses stay on the device and are read back only by :meth:`LossMeter.sync`, so a GPU step never
waits for the host.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from usfmae.data.sampling import BatchTransform
from usfmae.errors import UsfmaeError
from usfmae.train.distributed import all_reduce_mean
from usfmae.train.schedule import set_lr

# (x, target) on the device -> (model input, target): augmentation + normalisation, applied jointly
PairTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
MaskGenerator = Callable[[int, int], "torch.Generator | None"]  # (step, micro) -> masking generator


class NonFiniteLossError(UsfmaeError):
    """The training loss became NaN or infinite; the run stops (its last checkpoint is intact)."""


class LossMeter:
    """Running loss kept on the device; :meth:`sync` reads it back and checks it is finite."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._sum = torch.zeros((), dtype=torch.float64, device=device)
        self._count = 0
        self._first_bad = torch.full((), -1, dtype=torch.int64, device=device)

    def update(self, loss: torch.Tensor, step: int) -> None:
        """Add one optimiser step's loss (a detached scalar) without a host sync."""
        finite = torch.isfinite(loss)
        self._sum += torch.where(finite, loss.double(), torch.zeros_like(self._sum))
        # Remember the first step that went bad, still without leaving the device.
        self._first_bad = torch.where(~finite & (self._first_bad < 0), torch.full_like(self._first_bad, step),
                                      self._first_bad)
        self._count += 1

    def sync(self) -> float | None:
        """Mean loss since the last sync, averaged over ranks; raises :class:`NonFiniteLossError`."""
        bad = int(dist_max(self._first_bad))
        if bad >= 0:
            raise NonFiniteLossError(f"the loss became NaN or infinite at step {bad}; "
                                     "lower the learning rate or check the data")
        stats = torch.stack([self._sum, torch.tensor(float(self._count), dtype=torch.float64, device=self.device)])
        total, count = all_reduce_mean(stats).tolist()
        self._sum.zero_()
        self._count = 0
        return total / count if count else None


def dist_max(t: torch.Tensor) -> float:
    """Largest value of a scalar over ranks (one host sync)."""
    t = t.clone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.item()


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    # bf16 needs no loss scaling, so there is no GradScaler anywhere in this loop.
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_one_epoch(model: nn.Module, batches: Iterable[torch.Tensor], optimizer: torch.optim.Optimizer, *,
                    device: torch.device, first_step: int, accum_steps: int, lr_fn: Callable[[int], float],
                    batch_transform: BatchTransform, meter: LossMeter, mask_ratio: float | None = None,
                    mask_generator: MaskGenerator | None = None, clip_grad: float | None = 1.0,
                    amp: bool = False, on_step: Callable[[int], None] | None = None) -> dict:
    """Run optimiser steps over ``batches``: ``accum_steps`` micro-batches make one step.

    Args:
        model: the MAE, possibly wrapped in DistributedDataParallel; ``model(x, mask_ratio, generator)``
            returns ``(loss, pred, mask)``.
        batches: micro-batches (b, C, H, W) for this rank, starting at optimiser step ``first_step``.
        optimizer: AdamW over :func:`usfmae.train.schedule.param_groups`.
        device: where the model lives.
        first_step: global index of the first optimiser step here (the lr schedule's position).
        accum_steps: micro-batches per optimiser step (gradient accumulation).
        lr_fn: step -> learning rate, set before every optimiser step.
        batch_transform: (x on device, step, micro) -> normalised float batch (augmentation hook).
        meter: receives each step's loss on the device.
        mask_ratio: overrides the model's ratio when given.
        mask_generator: (step, micro) -> generator for the masking noise (reproducible masks).
        clip_grad: max global gradient norm (None: no clipping).
        amp: bf16 autocast on CUDA.
        on_step: called with the step index after each optimiser step (logging, checkpoints).

    Returns:
        {"steps": optimiser steps done, "images": images seen on this rank, "seconds": wall time}.
    """
    model.train()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    step, images, start = first_step, 0, time.perf_counter()
    it: Iterator[torch.Tensor] = iter(batches)
    while True:
        set_lr(optimizer, lr_fn(step))
        step_loss = None
        for micro in range(accum_steps):
            x = next(it, None)
            if x is None:
                if micro:
                    raise RuntimeError("the loader ended in the middle of an accumulation group")
                return {"steps": step - first_step, "images": images, "seconds": time.perf_counter() - start}
            x = batch_transform(x.to(device, non_blocking=True), step, micro)
            generator = mask_generator(step, micro) if mask_generator is not None else None
            # DDP all-reduces gradients only on the last micro-batch of a step.
            last = micro == accum_steps - 1
            sync_ctx = model.no_sync() if hasattr(model, "no_sync") and not last else contextlib.nullcontext()
            with sync_ctx:
                with _autocast(device, amp):
                    loss, _, _ = model(x, mask_ratio, generator)
                (loss / accum_steps).backward()
            loss = loss.detach() / accum_steps
            step_loss = loss if step_loss is None else step_loss + loss
            images += x.shape[0]
        if clip_grad is not None and clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(params, clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        meter.update(step_loss, step)
        if on_step is not None:
            on_step(step)
        step += 1


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[torch.Tensor], *, device: torch.device,
             batch_transform: BatchTransform, mask_ratio: float | None = None,
             mask_generator: MaskGenerator | None = None, amp: bool = False) -> dict:
    """Mean masked-reconstruction loss over ``batches`` (weighted by batch size), model in eval mode.

    Returns:
        {"loss": mean loss (NaN when there were no batches), "images": images scored}.
    """
    was_training = model.training
    model.eval()
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    for i, x in enumerate(batches):
        x = batch_transform(x.to(device, non_blocking=True), i, 0)
        generator = mask_generator(i, 0) if mask_generator is not None else None
        with _autocast(device, amp):
            loss, _, _ = model(x, mask_ratio, generator)
        total += loss.double() * x.shape[0]
        count += x.shape[0]
    model.train(was_training)
    return {"loss": total.item() / count if count else math.nan, "images": count}


def train_supervised_epoch(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                           loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                           optimizer: torch.optim.Optimizer, lr_at_step: Callable[[int], float], start_step: int,
                           device: torch.device, amp: bool, clip_grad: float | None,
                           transform: PairTransform | None = None) -> dict:
    """One pass over ``batches`` with one optimiser step per batch (classifier or segmenter).

    Per step: the lr is set to ``lr_at_step(step)`` (times each group's ``lr_scale``), the batch
    moves to ``device``, ``transform`` runs there, the forward runs under bf16 autocast on CUDA
    when ``amp``, ``loss_fn`` sees float32 outputs, gradients are clipped to a global norm of
    ``clip_grad`` (None or 0: no clipping) and the optimiser steps. Nothing is read back to the
    host until the epoch ends: the loss is accumulated on the device.

    Args:
        model: maps ``x`` to outputs, e.g. logits (B, K) or mask logits (B, K, H, W).
        batches: ``(x, target)`` pairs on the host or the device, e.g. uint8 (B, C, H, W) and (B,).
        loss_fn: (outputs float32, target) -> scalar mean loss over the batch.
        optimizer: its groups may carry ``lr_scale`` (layer-wise decay).
        lr_at_step: global step -> learning rate.
        start_step: global index of this epoch's first step.
        device: where the model lives.
        amp: bf16 autocast on CUDA (ignored elsewhere).
        clip_grad: max global gradient norm.
        transform: (x, target) -> (x, target) on the device (augmentation + normalisation).

    Returns:
        ``{"loss": mean loss per sample (NaN for no batches), "steps": optimiser steps, "images": n}``.

    Raises:
        NonFiniteLossError: a step's loss was NaN or infinite (checked once, at the end).
    """
    model.train()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    total = torch.zeros((), dtype=torch.float64, device=device)
    first_bad = torch.full((), -1, dtype=torch.int64, device=device)
    step, images = start_step, 0
    for x, y in batches:
        set_lr(optimizer, lr_at_step(step))
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if transform is not None:
            x, y = transform(x, y)
        with _autocast(device, amp):
            out = model(x)
        loss = loss_fn(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad is not None and clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(params, clip_grad)
        optimizer.step()
        detached = loss.detach()
        finite = torch.isfinite(detached)
        total += torch.where(finite, detached.double(), torch.zeros_like(total)) * x.shape[0]
        first_bad = torch.where(~finite & (first_bad < 0), torch.full_like(first_bad, step), first_bad)
        images += x.shape[0]
        step += 1
    bad = int(first_bad)  # the epoch's only host syncs: this and the loss below
    if bad >= 0:
        raise NonFiniteLossError(f"the training loss became NaN or infinite at step {bad}; lower the learning rate")
    return {"loss": float(total) / images if images else math.nan, "steps": step - start_step, "images": images}


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[torch.Tensor | tuple[torch.Tensor, ...]], *, device: torch.device,
            amp: bool, transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Outputs of ``model`` over ``batches``, in order, in eval mode (the mode is restored after).

    Args:
        batches: inputs (B, C, H, W), or tuples whose first element is the input (targets are ignored).
        device: where the model lives.
        amp: bf16 autocast on CUDA.
        transform: x -> model input on the device (e.g. normalisation of uint8 images).

    Returns:
        float32 outputs on the CPU, concatenated over the batches along dim 0 (an empty tensor
        for no batches).
    """
    was_training = model.training
    model.eval()
    out = []
    for item in batches:
        x = item[0] if isinstance(item, (tuple, list)) else item
        x = x.to(device, non_blocking=True)
        if transform is not None:
            x = transform(x)
        with _autocast(device, amp):
            y = model(x)
        out.append(y.float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)
