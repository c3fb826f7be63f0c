"""The pretraining batch plan: which images reach which optimiser step, on which rank, and the
:class:`DataPipeline` contract a data recipe hands to the training loop.

Sharding is by *global batch*: every optimiser step consumes ``global_batch`` consecutive entries
of a permutation that depends only on (seed, epoch), and each (micro-step, rank) takes a fixed slice
of it (:func:`local_rows`). The same images therefore reach the same optimiser step whatever the
number of processes, which is what makes 2 processes equal 1 process with the same global batch,
and a resumed run equal an uninterrupted one (it simply starts at a later step).

This lives with the data (not with training) because both recipes build their pipelines on it:
``usfmae.train.pretrain.paper_pipeline`` and ``usfmae.data.fast_loader.pretrain_pipeline``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

_MASK64 = (1 << 63) - 1

BatchTransform = Callable[[torch.Tensor, int, int], torch.Tensor]  # (x on device, step, micro) -> float


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

    def __init__(self, n: int, global_batch: int, seed: int, *, rank: int = 0, world_size: int = 1,
                 accum_steps: int = 1) -> None:
        if global_batch % (accum_steps * world_size):
            raise ValueError(f"global batch {global_batch} is not divisible by accum_steps x world_size "
                             f"= {accum_steps * world_size}")
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.rank, self.world_size, self.accum_steps = rank, world_size, accum_steps
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.global_batch

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch and skip its first ``start_step`` optimiser steps (mid-epoch resume)."""
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accum_steps

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = epoch_order(self.n, self.seed, self.epoch).tolist()
        for step in range(self.start_step, self.steps_per_epoch):
            base = step * self.global_batch
            for micro in range(self.accum_steps):
                rows = local_rows(self.global_batch, self.world_size, self.accum_steps, self.rank, micro)
                yield [(order[base + i], mix_seed(self.seed, self.epoch, base + i))
                       for i in range(rows.start, rows.stop)]


@dataclass
class DataPipeline:
    """What the pretraining loop needs from a data recipe.

    Attributes:
        steps_per_epoch: optimiser steps in one epoch (incomplete global batches are dropped).
        batches: (epoch, start_step) -> this rank's micro-batches (b, C, H, W) from that step on,
            laid out as :func:`local_rows`.
        transform: (x on device, step, micro) -> normalised float batch for the model.
    """

    steps_per_epoch: int
    batches: Callable[[int, int], Iterable[torch.Tensor]]
    transform: BatchTransform
