"""A real full disk: every writing stage stops with one line and exit 2, loses nothing, and resumes.

The disk is a small tmpfs mounted for the test (root with CAP_SYS_ADMIN, as in the CI container), filled
with a ballast file until only a few KiB are left, so the stage runs out of space part-way through its
outputs exactly as it would on a full scratch disk. Where mounting is not allowed the test skips;
`tests/clean/test_clean.py::test_disk_full_is_one_line_and_keeps_earlier_outputs` covers the same
promise with a simulated ``OSError`` on every machine.

For each stage: the run on the full disk exits 2 with one line naming the problem and no traceback,
leaves no temporary files, and after the ballast is removed the same command finishes with outputs
byte-identical to those of a run that never lacked space.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from usfmae.cli import main


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Twelve distinct 64x64 grayscale noise PNGs (about 4 KiB each: they do not compress)."""
    folder = tmp_path_factory.mktemp("full_disk_inputs") / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(12):
        cv2.imwrite(str(folder / f"img{index:02d}.png"), rng.integers(0, 255, (64, 64), dtype=np.uint8))
    return folder


def _outputs(folder: Path, patterns: tuple[str, ...]) -> dict[str, bytes]:
    """``{relative path: bytes}`` of the data files a stage wrote (images, frames, shards)."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for pattern in patterns for p in sorted(folder.glob(pattern)) if p.is_file()}


def _rows(manifest: Path, drop: tuple[str, ...] = ("path", "source_path", "seconds")) -> list[dict]:
    """Manifest rows without the columns that hold the output folder's own location or a timing."""
    table = pq.read_table(manifest)
    return table.drop_columns([c for c in drop if c in table.column_names]).to_pylist()


# verb arguments ({src}, {out}), the KiB left free, the data files compared, the manifest compared
STAGES = [
    pytest.param(["ingest", "{src}", "--out", "{out}", "--workers", "1", "--no-progress"], 24,
                 ("frames/*.png",), "manifest.parquet", id="ingest"),
    pytest.param(["clean", "{src}", "--out", "{out}", "--workers", "1", "--no-progress", "--no-text-check"], 24,
                 ("images/*.png", "masks/*.png"), "manifest.parquet", id="clean"),
    # shards of 8: the first is whole on disk before the second finds no space (kept on resume)
    pytest.param(["pack", "{src}", "--out", "{out}", "--size", "64", "--shard-size", "8", "--no-progress"], 48,
                 ("shard_*.npy",), None, id="pack"),
]


@pytest.mark.parametrize(("argv", "leave_kib", "data_files", "manifest"), STAGES)
def test_full_disk_stops_in_one_line_and_resumes_to_the_same_outputs(
        small_disk: Path, fill_disk, images: Path, tmp_path: Path, capsys, argv, leave_kib, data_files, manifest) -> None:
    def run(out: Path) -> int:
        return main([a.format(src=images, out=out) for a in argv])

    reference = tmp_path / "reference"
    assert run(reference) == 0
    capsys.readouterr()

    ballast = fill_disk(small_disk, leave_kib)
    out = small_disk / "out"
    assert run(out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "disk full" in err or "No space left on device" in err, err
    assert not [p for p in out.rglob("*") if p.name.endswith((".tmp", ".part")) or ".tmp." in p.name]
    expected = _outputs(reference, data_files)
    before = _outputs(out, data_files)
    # it ran out part-way: some outputs were finished, and those are whole (equal to the reference)
    assert 0 < len(before) < len(expected) and all(expected[name] == data for name, data in before.items())

    ballast.unlink()
    assert run(out) == 0
    capsys.readouterr()
    assert _outputs(out, data_files) == expected
    if manifest:
        assert _rows(out / manifest) == _rows(reference / manifest)


PRETRAIN = ["pretrain", "--data", "phantom:8", "--model", "mae_vit_micro_patch8_64", "--steps", "4", "--batch-size", "4",
            "--ckpt-every", "2", "--log-every", "2", "--recon-images", "0", "--no-progress", "--seed", "3", "--num-workers", "0"]


def test_full_disk_during_pretraining_keeps_the_last_checkpoint_and_resumes_exactly(
        small_disk: Path, fill_disk, tmp_path: Path, capsys) -> None:
    reference = tmp_path / "reference"
    assert main([*PRETRAIN, "--out", str(reference)]) == 0
    capsys.readouterr()

    # room for one checkpoint (about 11 MB) but not for the second beside it (written, then renamed)
    ballast = fill_disk(small_disk, 16 * 1024)
    out = small_disk / "run"
    assert main([*PRETRAIN, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "disk full" in err or "No space left on device" in err, err
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == 2  # the step-2 one, whole

    ballast.unlink()
    assert main([*PRETRAIN, "--out", str(out), "--resume"]) == 0
    capsys.readouterr()
    got = torch.load(out / "checkpoints" / "final.pt", weights_only=True)["model"]
    want = torch.load(reference / "checkpoints" / "final.pt", weights_only=True)["model"]
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
