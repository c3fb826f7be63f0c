"""Folders written by usfmae give their frames to embed and pack, not their masks and contact sheets."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from usfmae.data.images import list_images
from usfmae.downstream.embed import embed_inputs
from usfmae.shards.pack import list_corpus


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 8), 50, np.uint8))


def test_phantom_output_folder_lists_its_frames_only(tmp_path):
    from usfmae.phantom.generate import PhantomConfig, write_phantom_dataset

    write_phantom_dataset(tmp_path, 3, seed=0, cfg=PhantomConfig(size=64), progress=False)
    frames = [tmp_path / "images" / f"s0_{i:07d}.png" for i in range(3)]
    assert embed_inputs(tmp_path) == frames  # not clean/ and masks/ too (9 files)
    assert [item.path for item in list_corpus(tmp_path)] == [str(f) for f in frames]


def test_clean_layout_without_and_with_manifest(tmp_path):
    for rel in ("images/a.png", "images/b.png", "masks/a.png", "masks/b.png", "contact_sheet.png"):
        _png(tmp_path / rel)
    assert list_images(tmp_path) == [tmp_path / "images/a.png", tmp_path / "images/b.png"]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["b", "a"], "path": ["images/b.png", "images/a.png"],
                             "mask_path": ["masks/b.png", "masks/a.png"], "status": ["ok", "ok"]}),
                   tmp_path / "manifest.parquet")
    assert list_images(tmp_path) == [tmp_path / "images/b.png", tmp_path / "images/a.png"]  # manifest order
    assert [item.id for item in list_corpus(tmp_path)] == ["b", "a"]
