"""Masks per rank, and 2 Gloo processes under torchrun == 1 process with the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from usfmae.fileio import read_jsonl
from usfmae.train.distributed import DistInfo, init_from_env
from usfmae.train.pretrain import PretrainConfig, mask_generator_fn, read_run_state, run


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


@pytest.mark.slow
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
    a, b = (read_run_state(tmp_path / d / "checkpoints" / "final.pt")["model"] for d in ("ddp", "one"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
