"""Weight files are written atomically and a failed write is the OSError, on a real full disk."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from usfmae.errors import os_error_line
from usfmae.models.serialize import save_checkpoint, save_safetensors

STATE = {"w": torch.arange(300_000, dtype=torch.float32).reshape(600, 500)}  # 1.2 MB


def _load_torch(path: Path) -> dict:
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize(("save", "load"), [(save_checkpoint, _load_torch), (save_safetensors, load_file)],
                         ids=["torch", "safetensors"])
def test_round_trip_and_full_disk_is_an_oserror_naming_the_file(small_disk, fill_disk, save, load) -> None:
    path = small_disk / "weights.bin"
    save(STATE, path)
    assert torch.equal(load(path)["w"], STATE["w"])

    fill_disk(small_disk, 256)  # room for far less than a second copy
    with pytest.raises(OSError) as caught:
        save({"w": STATE["w"] + 1}, path)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert os_error_line(caught.value) == f"{path}: disk full (no space left on the device)"
    assert torch.equal(load(path)["w"], STATE["w"])  # the previous file is whole
    assert sorted(p.name for p in small_disk.iterdir()) == ["ballast.bin", "weights.bin"]  # no temporary left
