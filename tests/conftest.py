"""Fixtures shared by every stage's tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One intra-op thread for every test: the models are tiny and CI's two cores are shared
    (two threads fighting over busy cores were measured 3x slower than one)."""
    import torch

    from usfmae import runtime

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    runtime.set_thread_option(1)  # what the verbs' configure_threads picks up, workers included
    yield
    runtime.set_thread_option(None)
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def phantom_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A written phantom set: 32 images at 64x64 with overlays, seed 0; returns its root folder.

    Layout: ``images/``, ``clean/``, ``masks/`` PNGs and ``manifest.parquet`` (see
    :func:`usfmae.phantom.generate.write_phantom_dataset`).
    """
    from usfmae.phantom.generate import PhantomConfig, write_phantom_dataset

    root = tmp_path_factory.mktemp("phantom64")
    write_phantom_dataset(root, n=32, seed=0, cfg=PhantomConfig(size=64, overlays=True), progress=False)
    return root


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real small disk: a 64 MiB tmpfs at ``tmp_path/disk`` (skips where this process may not mount one)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def fill_disk():
    """``fill_disk(disk, leave_kib) -> ballast``: a file that leaves only ``leave_kib`` KiB free on ``disk``."""
    return _fill


def _fill(disk: Path, leave_kib: int) -> Path:
    stat = os.statvfs(disk)
    ballast = disk / "ballast.bin"
    with open(ballast, "wb") as handle:
        handle.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave_kib * 1024))
    return ballast
