"""The pretraining batch plan: sharding by global batch, functions of (seed, epoch) only."""

from __future__ import annotations

import pytest
import torch

from usfmae.data.sampling import StepBatchSampler, epoch_order, local_rows, mix_seed


@pytest.mark.parametrize(("world", "accum", "rank", "micro", "expected"), [
    (1, 1, 0, 0, slice(0, 8)),
    (2, 1, 1, 0, slice(4, 8)),
    (2, 2, 0, 1, slice(4, 6)),
    (2, 2, 1, 1, slice(6, 8)),
])
def test_local_rows_layout(world: int, accum: int, rank: int, micro: int, expected: slice) -> None:
    assert local_rows(8, world, accum, rank, micro) == expected


def _batches(world: int, rank: int, accum: int = 1, epoch: int = 0, start: int = 0) -> list:
    sampler = StepBatchSampler(20, 8, seed=3, rank=rank, world_size=world, accum_steps=accum)
    sampler.set_epoch(epoch, start)
    return list(sampler)


def test_ranks_partition_the_single_process_global_batches() -> None:
    single = _batches(1, 0)
    assert len(single) == 2 and all(len(b) == 8 for b in single)  # 20 images: the last 4 are dropped
    r0, r1 = _batches(2, 0), _batches(2, 1)
    assert [a + b for a, b in zip(r0, r1, strict=True)] == single  # (index, augmentation seed) pairs included
    assert [x for pair in zip(_batches(1, 0, accum=2)[::2], _batches(1, 0, accum=2)[1::2], strict=True) for b in pair for x in b] \
        == [x for b in single for x in b]
    assert _batches(1, 0, start=1) == single[1:]  # mid-epoch resume skips consumed steps
    assert _batches(1, 0, epoch=1) != single and _batches(1, 0, epoch=1) == _batches(1, 0, epoch=1)


def test_order_and_seeds_are_functions_of_seed_and_epoch() -> None:
    assert torch.equal(epoch_order(50, 1, 2), epoch_order(50, 1, 2))
    assert not torch.equal(epoch_order(50, 1, 2), epoch_order(50, 2, 1))
    assert sorted(epoch_order(50, 0, 0).tolist()) == list(range(50))
    assert mix_seed(1, 0) != mix_seed(0, 1) and 0 <= mix_seed(2**70, -1) < 2**63
