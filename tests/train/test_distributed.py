"""Sharding by global batch, and 2 Gloo processes under torchrun == 1 process with the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from usfmae.fileio import read_jsonl
from usfmae.train.distributed import (
    DistInfo,
    StepBatchSampler,
    epoch_order,
    init_from_env,
    local_rows,
    mix_seed,
)
from usfmae.train.pretrain import PretrainConfig, load_checkpoint, mask_generator_fn, run


@pytest.mark.parametrize(("world", "accum", "rank", "micro", "expected"), [
    (1, 1, 0, 0, slice(0, 8)),
    (2, 1, 1, 0, slice(4, 8)),
    (2, 2, 0, 1, slice(4, 6)),
    (2, 2, 1, 1, slice(6, 8)),
])
def test_local_rows_layout(world: int, accum: int, rank: int, micro: int, expected: slice) -> None:
    assert local_rows(8, world, accum, rank, micro) == expected


def _batches(world: int, rank: int, accum: int = 1, epoch: int = 0, start: int = 0) -> list:
    sampler = StepBatchSampler(20, 8, seed=3, dist_info=DistInfo(rank=rank, world_size=world), accum_steps=accum)
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


def test_mask_noise_of_a_rank_is_its_rows_of_the_global_noise() -> None:
    cfg = PretrainConfig(batch_size=8, accum_steps=1)
    full = torch.rand(8, 16, generator=mask_generator_fn(cfg, DistInfo(), 16)(5, 0))
    rank1 = torch.rand(4, 16, generator=mask_generator_fn(cfg, DistInfo(rank=1, world_size=2), 16)(5, 0))
    assert torch.equal(rank1, full[4:])


def test_init_from_env_single_process(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = init_from_env("cpu")
    assert (info.rank, info.world_size, info.is_main, info.distributed, info.device.type) == (0, 1, True, False, "cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_equal_one_process(tmp_path: Path) -> None:
    flags = ["--data", "phantom:32", "--model", "mae_vit_micro_patch8_64", "--steps", "3", "--batch-size", "8",
             "--log-every", "1", "--ckpt-every", "3", "--num-workers", "0", "--recon-images", "2", "--blr", "0.01",
             "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "usfmae.cli", "pretrain",
           "--out", str(tmp_path / "ddp"), *flags]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(PretrainConfig(data="phantom:32", out=str(tmp_path / "one"), model="mae_vit_micro_patch8_64", steps=3,
                           batch_size=8, log_every=1, ckpt_every=3, num_workers=0, recon_images=2, blr=0.01,
                           device="cpu", progress=False))
    finally:
        torch.set_num_threads(before)
    ddp, one = (read_jsonl(tmp_path / d / "log.jsonl") for d in ("ddp", "one"))
    assert [r["step"] for r in ddp] == [1, 2, 3]  # rank 0 alone writes the log
    torch.testing.assert_close([r["loss"] for r in ddp], [r["loss"] for r in one], rtol=1e-5, atol=0)
    a, b = (load_checkpoint(tmp_path / d / "checkpoints" / "final.pt")["model"] for d in ("ddp", "one"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
