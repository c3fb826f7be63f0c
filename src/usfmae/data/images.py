"""Images for downstream stages: decode files into uint8 batches at the encoder's data contract.

Used by ``finetune``, ``probe`` and ``benchmark`` (images preloaded once as uint8 tensors) and by
``embed`` (streamed). Decoding and fitting are :mod:`usfmae.imaging`'s, through
:func:`usfmae.contract.prepare`, so these batches equal the pretraining datasets' pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from usfmae import imaging
from usfmae.contract import imagenet_contract, prepare
from usfmae.errors import DataError
from usfmae.fileio import RejectLog
from usfmae.imaging import DEFAULT_MAX_PIXELS, image_files
from usfmae.runtime import init_worker_threads, progress_bar, worker_start_method

log = logging.getLogger(__name__)



def load_image(path: str | Path, img_size: int, in_chans: int, fit: str = "pad",
               max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read one image file as ``(img_size, img_size, in_chans)`` uint8 (``usfmae.imaging`` policy).

    Decoded by :func:`usfmae.imaging.read_image` and fitted by :func:`usfmae.imaging.fit`: ``fit``
    ``"pad"`` keeps the aspect ratio (black borders), ``"stretch"`` ignores it; area interpolation.

    Raises:
        DataError: the file is missing, unreadable, empty or larger than ``max_pixels``.
    """
    return imaging.fit(imaging.read_image(path, max_pixels=max_pixels), img_size, in_chans, fit)


class ImageFiles(Dataset):
    """Image files as uint8 ``(C, H, W)`` tensors; a bad file yields ``(index, None, reason)``."""

    def __init__(self, paths: Sequence[str | Path], img_size: int, in_chans: int, fit: str = "pad",
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.paths = [Path(p) for p in paths]
        self.contract = imagenet_contract(img_size, in_chans, fit)  # prepare() reads size, channels, fit
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str]:
        try:
            image = imaging.read_image(self.paths[index], max_pixels=self.max_pixels)
            return index, prepare(image, self.contract), ""
        except (DataError, cv2.error, OSError, ValueError) as exc:
            return index, None, str(exc)


def collate_skip(items: list[tuple[int, torch.Tensor | None, str]]) -> dict[str, Any]:
    """Stack the good items of a batch; keep the bad ones' indices and reasons for the RejectLog."""
    good = [(i, x) for i, x, _ in items if x is not None]
    bad = [(i, why) for i, x, why in items if x is None]
    images = torch.stack([x for _, x in good]) if good else None
    return {"index": torch.tensor([i for i, _ in good], dtype=torch.long), "images": images, "bad": bad}


def iter_image_batches(paths: Sequence[str | Path], img_size: int, in_chans: int, batch_size: int = 64,
                       num_workers: int = 0, rejects: RejectLog | None = None,
                       progress: bool = False, *, fit: str = "pad",
                       max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(indices (B,), images uint8 (B,C,H,W))`` in input order, skipping unreadable files.

    Each skipped file is logged in one line and recorded in ``rejects`` when given. ``fit`` is the
    encoder's fit policy (``"pad"`` or ``"stretch"``, :func:`usfmae.imaging.fit`).
    """
    files = ImageFiles(paths, img_size, in_chans, fit, max_pixels)
    loader = DataLoader(files, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_skip, worker_init_fn=init_worker_threads,
                        multiprocessing_context=worker_start_method(num_workers))
    bar = None
    if progress:
        bar = progress_bar(total=len(files), unit="img", desc="images")
    for batch in loader:
        for index, reason in batch["bad"]:
            if rejects is not None:
                rejects.reject(files.paths[index], reason)
            else:
                log.warning("skipped %s: %s", files.paths[index], reason)
        if bar is not None:
            bar.update(len(batch["index"]) + len(batch["bad"]))
        if batch["images"] is not None:
            yield batch["index"], batch["images"]
    if bar is not None:
        bar.close()


def preload_images(paths: Sequence[str | Path], img_size: int, in_chans: int, num_workers: int = 0,
                   rejects: RejectLog | None = None, progress: bool = False, *, fit: str = "pad",
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[torch.Tensor, np.ndarray]:
    """Decode every image once into memory (labelled sets are small: 1,875 x 224^2 x 3 = 282 MB).

    Returns:
        ``(images uint8 (N_kept, C, H, W), kept indices into paths (N_kept,))``.
    """
    chunks, kept = [], []
    for index, images in iter_image_batches(paths, img_size, in_chans, 64, num_workers, rejects, progress,
                                            fit=fit, max_pixels=max_pixels):
        chunks.append(images)
        kept.append(index.numpy())
    if not chunks:
        raise DataError(f"none of the {len(paths)} images could be read")
    return torch.cat(chunks), np.concatenate(kept)


# What usfmae writes beside the frames of an output folder: masks and contact sheets are not frames.
ARTIFACT_DIRS = ("masks",)
ARTIFACT_FILES = ("contact_sheet.png",)


def manifest_paths(manifest: str | Path) -> list[Path]:
    """Frame files a usfmae manifest names (rows with ``status`` ok when it has one), in row order.

    Raises:
        DataError: unreadable, or no ``path`` column.
    """
    import pyarrow.parquet as pq

    manifest = Path(manifest)
    try:
        table = pq.read_table(manifest)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise DataError(f"{manifest}: not a readable Parquet manifest ({exc.__class__.__name__})") from exc
    if "path" not in table.column_names:
        raise DataError(f"{manifest}: manifest has no 'path' column")
    paths = table.column("path").to_pylist()
    if "status" in table.column_names:
        paths = [p for p, s in zip(paths, table.column("status").to_pylist(), strict=True) if s == "ok"]
    return [Path(p) if Path(p).is_absolute() else manifest.parent / p for p in paths if p]


def list_images(folder: str | Path) -> list[Path]:
    """The frames of ``folder``: what its ``manifest.parquet`` names when usfmae wrote it (phantom,
    ingest, clean), else its image files (recursive, sorted), without ``masks/`` folders and contact
    sheets, which usfmae writes beside frames."""
    folder = Path(folder)
    if (folder / "manifest.parquet").is_file():
        return manifest_paths(folder / "manifest.parquet")
    return [p for p in image_files(folder) if p.name not in ARTIFACT_FILES
            and not any(part in ARTIFACT_DIRS for part in p.relative_to(folder).parts[:-1])]


