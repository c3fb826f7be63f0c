"""Data-parallel set-up detected from the environment (``torchrun``), and deterministic sharding.

``torchrun --nproc_per_node 8 -m usfmae.cli pretrain ...`` (or ``--nnodes``/``--rdzv-endpoint`` for
several machines) sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_from_env` reads them,
starts the process group (NCCL on CUDA, Gloo on CPU) and returns a :class:`DistInfo`. Without those
variables it returns a single-process DistInfo and starts nothing.

Sharding is by *global batch*: every optimiser step consumes ``global_batch`` consecutive entries
of a permutation that depends only on (seed, epoch), and each (micro-step, rank) takes a fixed slice
of it (:func:`local_rows`). The same images therefore reach the same optimiser step whatever the
number of processes, which is what makes 2 processes equal 1 process with the same global batch,
and a resumed run equal an uninterrupted one (it simply starts at a later step).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from usfmae.errors import ConfigError

log = logging.getLogger(__name__)

_MASK64 = (1 << 63) - 1


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes files, logs progress and shows bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_from_env(device: str | None = None) -> DistInfo:
    """Join the ``torchrun`` process group if the environment says so.

    Args:
        device: "cpu" or "cuda" to force one; None picks CUDA when available.

    Returns:
        DistInfo with this process's rank, world size, local rank and device
        (``cuda:LOCAL_RANK`` on GPU machines).
    """
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for, but PyTorch sees no CUDA GPU here; use --device cpu")
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        kwargs = {"device_id": dev} if use_cuda else {}
        dist.init_process_group(backend=backend, **kwargs)
        log.debug("rank %d/%d joined the %s process group", rank, world_size, backend)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup() -> None:
    """Leave the process group (safe to call when none was started)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Average ``t`` over ranks in place and return it (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, epoch, step, ...): SplitMix64-style mixing, no collisions
    between e.g. (seed=1, epoch=0) and (seed=0, epoch=1)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & _MASK64


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The dataset permutation of ``epoch``: (n,) int64, a function of (seed, epoch) only."""
    g = torch.Generator().manual_seed(mix_seed(seed, epoch, 0x0D47A))
    return torch.randperm(n, generator=g)


def local_rows(global_batch: int, world_size: int, accum_steps: int, rank: int, micro: int) -> slice:
    """Rows of a global batch that ``rank`` processes in micro-step ``micro``.

    Layout: micro-step major, then rank, so the global batch splits into ``accum_steps * world_size``
    equal blocks of ``global_batch // (accum_steps * world_size)`` rows.
    """
    per = global_batch // (accum_steps * world_size)
    start = (micro * world_size + rank) * per
    return slice(start, start + per)


class StepBatchSampler(torch.utils.data.Sampler):
    """Batch sampler for a DataLoader: this rank's micro-batches of one epoch, from a given step.

    Yields lists of ``(dataset_index, sample_seed)``; ``sample_seed`` depends on (seed, epoch,
    position in the epoch) only, so per-image augmentation is the same on any rank or worker.
    The last incomplete global batch is dropped (every step sees ``global_batch`` images).
    """

    def __init__(self, n: int, global_batch: int, seed: int, dist_info: DistInfo, accum_steps: int = 1) -> None:
        if global_batch % (accum_steps * dist_info.world_size):
            raise ValueError(f"global batch {global_batch} is not divisible by accum_steps x world_size "
                             f"= {accum_steps * dist_info.world_size}")
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.dist, self.accum_steps = dist_info, accum_steps
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.global_batch

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch and skip its first ``start_step`` optimiser steps (mid-epoch resume)."""
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accum_steps

    def __iter__(self):
        order = epoch_order(self.n, self.seed, self.epoch).tolist()
        for step in range(self.start_step, self.steps_per_epoch):
            base = step * self.global_batch
            for micro in range(self.accum_steps):
                rows = local_rows(self.global_batch, self.dist.world_size, self.accum_steps, self.dist.rank, micro)
                yield [(order[base + i], mix_seed(self.seed, self.epoch, base + i))
                       for i in range(rows.start, rows.stop)]
