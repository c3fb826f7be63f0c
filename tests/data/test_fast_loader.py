"""Shard batch loader: exact epoch coverage over DDP ranks, seeded order, resume, fast pipeline."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from usfmae.data.fast_loader import ShardBatchLoader, build_fast_pipeline
from usfmae.shards.store import ShardReader, ShardWriter

torch.set_num_threads(1)


def _indexed_shards(root, n: int, shard_size: int = 8):
    """Frames (1, 2, 1) whose two pixels spell the frame's own index (i // 256, i % 256)."""
    with ShardWriter(root, (1, 2, 1), shard_size) as writer:
        for i in range(n):
            writer.add(np.array([[[i // 256], [i % 256]]], np.uint8), f"f{i}")
    return ShardReader(root)


def _decode(batch: torch.Tensor) -> np.ndarray:
    """(B, 1, 1, 2) uint8 -> (B,) frame indices."""
    flat = batch.reshape(len(batch), 2).numpy().astype(np.int64)
    return flat[:, 0] * 256 + flat[:, 1]


def _epoch(loader: ShardBatchLoader) -> list[np.ndarray]:
    return [_decode(b) for b in loader]


def test_two_ranks_cover_each_index_exactly_once(tmp_path):
    reader = _indexed_shards(tmp_path, 50)
    seen = []
    for rank in (0, 1):
        loader = ShardBatchLoader(reader, 4, seed=3, rank=rank, world_size=2, drop_last=False)
        loader.set_epoch(5)
        batches = _epoch(loader)
        assert len(batches) == len(loader) == 7  # 25 per rank: 6 full batches + 1
        for got, want in zip(batches, loader.batch_indices(), strict=True):
            np.testing.assert_array_equal(got, want)  # delivered frames are the planned ones
            assert np.all(np.diff(got) > 0)  # sorted inside the batch: one slice per shard
        seen.append(np.concatenate(batches))
    assert not set(seen[0]) & set(seen[1])
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(50))


def test_drop_last_gives_equal_disjoint_rank_shares(tmp_path):
    reader = _indexed_shards(tmp_path, 51)
    loaders = [ShardBatchLoader(reader, 5, seed=0, rank=r, world_size=2) for r in (0, 1)]
    plans = [np.concatenate(ld.batch_indices(0)) for ld in loaders]
    assert [len(ld) for ld in loaders] == [5, 5] and [len(p) for p in plans] == [25, 25]
    assert len(set(plans[0]) | set(plans[1])) == 50


def test_order_is_a_function_of_seed_and_epoch(tmp_path):
    reader = _indexed_shards(tmp_path, 40)

    def order(seed: int, epoch: int) -> np.ndarray:
        loader = ShardBatchLoader(reader, 8, seed=seed)
        loader.set_epoch(epoch)
        return np.concatenate(_epoch(loader))

    np.testing.assert_array_equal(order(1, 2), order(1, 2))
    assert not np.array_equal(order(1, 2), order(1, 3))
    assert not np.array_equal(order(1, 2), order(2, 2))
    np.testing.assert_array_equal(np.sort(order(1, 2)), np.arange(40))
    in_order = ShardBatchLoader(reader, 8, shuffle=False, prefetch=0)
    np.testing.assert_array_equal(np.concatenate(_epoch(in_order)), np.arange(40))


@pytest.mark.parametrize("prefetch", [0, 3])
def test_resume_from_step_offset(tmp_path, prefetch):
    reader = _indexed_shards(tmp_path, 40)
    loader = ShardBatchLoader(reader, 6, seed=9, prefetch=prefetch)
    loader.set_epoch(1)
    full = _epoch(loader)
    loader.set_epoch(1, start_step=4)
    rest = _epoch(loader)
    assert len(full) == 6 and len(rest) == 2
    for a, b in zip(full[4:], rest, strict=True):
        np.testing.assert_array_equal(a, b)


def test_early_stop_ends_the_prefetch_thread(tmp_path):
    loader = ShardBatchLoader(_indexed_shards(tmp_path, 64), 2, prefetch=2)
    it = iter(loader)
    next(it)
    it.close()
    assert not [t for t in threading.enumerate() if t.name == "shard-prefetch"]


def test_reader_error_reaches_the_consumer(tmp_path):
    loader = ShardBatchLoader(_indexed_shards(tmp_path, 16), 4, prefetch=2)

    def broken(*args, **kwargs):
        raise OSError("disk gone")

    loader.reader.read_batch = broken  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk gone"):
        next(iter(loader))


def test_fast_pipeline_is_seeded_and_resumable(tmp_path):
    rng = np.random.default_rng(0)
    with ShardWriter(tmp_path, (16, 16, 1), 8) as writer:
        for i in range(20):
            writer.add(rng.integers(0, 256, (16, 16, 1), dtype=np.uint8), f"f{i}")
    make = lambda: build_fast_pipeline(tmp_path, 4, 8, 3, [0.5] * 3, [0.25] * 3, seed=4)  # noqa: E731
    pipe = make()
    pipe.set_epoch(2)
    full = list(pipe)
    assert len(full) == len(pipe) == 5
    assert full[0].shape == (4, 3, 8, 8) and full[0].dtype == torch.float32
    assert torch.equal(full[0][:, 0], full[0][:, 2])  # grayscale frames repeated for 3 channels
    resumed = make()
    resumed.set_epoch(2, start_step=3)
    rest = list(resumed)
    assert len(rest) == 2 and all(torch.equal(a, b) for a, b in zip(full[3:], rest, strict=True))
    other = make()
    other.set_epoch(3)
    assert not torch.equal(next(iter(other)), full[0])


def test_fast_pipeline_without_augmentation_is_the_normalised_frames(tmp_path):
    reader = _indexed_shards(tmp_path, 12)
    pipe = build_fast_pipeline(reader, 4, 2, 1, [0.0], [1.0], augment=False, shuffle=False)
    frames = torch.cat(list(pipe))  # (12, 1, 2, 2): the (1, 2) frames resized to 2 x 2
    np.testing.assert_allclose(frames[:, 0, 0, 1].numpy() * 255, np.arange(12), atol=1e-3)


def _pretrain_setup(tmp_path, **overrides):
    from usfmae.data.datasets import build_pretrain_dataset
    from usfmae.train.pretrain import PretrainConfig

    rng = np.random.default_rng(1)
    with ShardWriter(tmp_path / "s", (16, 16, 1), 8) as writer:
        for i in range(24):
            writer.add(rng.integers(0, 256, (16, 16, 1), dtype=np.uint8), f"f{i}")
    cfg = PretrainConfig(data=str(tmp_path / "s"), out=str(tmp_path / "run"), batch_size=8, seed=5, **overrides)
    data_config = {"img_size": 16, "in_chans": 1, "mean": [0.5], "std": [0.25]}
    return cfg, build_pretrain_dataset(cfg.data, 16, 1), data_config


def _run_pipeline(pipe, epoch: int, start_step: int, accum: int) -> list[torch.Tensor]:
    out = []
    for k, x in enumerate(pipe.batches(epoch, start_step)):
        step, micro = start_step + k // accum, k % accum
        out.append(pipe.transform(x, step, micro))
    return out


def test_fast_recipe_feeds_the_paper_recipes_images(tmp_path):
    from usfmae.data.fast_loader import pretrain_pipeline
    from usfmae.train.distributed import DistInfo
    from usfmae.train.pretrain import paper_pipeline

    cfg, dataset, data_config = _pretrain_setup(tmp_path, augment=False, accum_steps=2, num_workers=0)
    fast = pretrain_pipeline(cfg, dataset, data_config, DistInfo())
    paper = paper_pipeline(cfg, dataset, data_config, DistInfo())
    assert fast.steps_per_epoch == paper.steps_per_epoch == 3
    a, b = _run_pipeline(fast, 1, 1, 2), _run_pipeline(paper, 1, 1, 2)
    assert len(a) == len(b) == 4  # 2 steps x 2 micro-batches, resumed at step 1
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)  # same images, same rows, same normalisation


def test_fast_recipe_augmentation_is_independent_of_world_size(tmp_path):
    from usfmae.data.fast_loader import pretrain_pipeline
    from usfmae.train.distributed import DistInfo

    cfg1, dataset, data_config = _pretrain_setup(tmp_path, accum_steps=2)
    single = torch.cat(_run_pipeline(pretrain_pipeline(cfg1, dataset, data_config, DistInfo()), 0, 0, 2))
    cfg2 = type(cfg1)(**{**vars(cfg1), "accum_steps": 1})
    ranks = [_run_pipeline(pretrain_pipeline(cfg2, dataset, data_config, DistInfo(rank=r, world_size=2)), 0, 0, 1)
             for r in (0, 1)]
    # per step: rank 0's block then rank 1's block == micro 0 then micro 1 of the single process
    two = torch.cat([torch.cat([r0, r1]) for r0, r1 in zip(*ranks, strict=True)])
    assert single.shape == (24, 1, 16, 16)
    torch.testing.assert_close(single, two, atol=0, rtol=0)
