"""Fixtures shared by every stage's tests."""

from __future__ import annotations

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
