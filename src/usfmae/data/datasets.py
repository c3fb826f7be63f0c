"""Unlabelled image datasets for pretraining: folders, manifests, shards and the phantom generator.

:func:`build_pretrain_dataset` turns a source string into a map-style dataset whose items are
``uint8`` tensors of shape (C,H,W) at the model's image size. Augmentation and normalisation come
after (per image in the DataLoader, or per batch on the accelerator), see ``usfmae.data.transforms``.

Sources:

- an image folder, searched recursively for PNG, JPEG, BMP and TIFF files (a folder holding a
  ``manifest.parquet``, as ``usfmae phantom`` and ``usfmae ingest`` write, is read through it);
- a Parquet manifest (``.parquet``) with a ``path`` column relative to the manifest's folder and an
  optional ``status`` column (only rows with status ``ok`` are used);
- a shard folder written by ``usfmae pack`` (read through ``usfmae.shards.store.ShardReader``);
- ``phantom:N`` or ``phantom:N:SEED``: N clean phantom B-mode images generated on the fly.

A file that cannot be read is skipped with one log line and a row in the reject log; the item is
replaced by the next readable one so a long run never stops on one bad file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from usfmae.curate.frames import IMAGE_SUFFIXES
from usfmae.errors import DataError
from usfmae.fileio import RejectLog

log = logging.getLogger(__name__)

# Phantom items are cached in memory up to this many bytes (generation costs ~10 ms at 224 px).
_PHANTOM_CACHE_BYTES = 256 * 2**20


def to_chw_uint8(image: np.ndarray, img_size: int, in_chans: int, bgr: bool = True) -> torch.Tensor:
    """Any 2-D/3-D array from a decoder -> (in_chans, img_size, img_size) uint8 tensor.

    16-bit and float images are rescaled to 0-255 by their range; alpha is dropped; colour becomes
    grayscale for ``in_chans == 1`` (OpenCV luma weights) and grayscale is replicated for 3.
    Resizing uses area interpolation (the right filter for downscaling, smooth when upscaling).
    """
    if image.dtype != np.uint8:
        image = image.astype(np.float32)
        lo, hi = float(image.min()), float(image.max())
        image = np.zeros_like(image, np.uint8) if hi <= lo else ((image - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        image = image[:, :, :3]
        code = cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY
        if in_chans == 1:
            image = cv2.cvtColor(np.ascontiguousarray(image), code)
        elif bgr:
            image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2RGB)
    if image.ndim == 2 and in_chans == 3:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[0] != img_size or image.shape[1] != img_size:
        image = cv2.resize(image, (img_size, img_size), interpolation=cv2.INTER_AREA)
    if image.ndim == 2:
        image = image[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def read_image(path: str | Path, img_size: int, in_chans: int) -> torch.Tensor:
    """Decode an image file -> (in_chans, img_size, img_size) uint8; raises DataError if unreadable."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data is not None and data.size else None
    if image is None:
        raise DataError(f"{path}: not a readable image")
    return to_chw_uint8(image, img_size, in_chans)


class ImageFilesDataset(Dataset):
    """Images from a list of files; unreadable ones are rejected once and replaced by the next."""

    def __init__(self, files: Sequence[Path], img_size: int, in_chans: int,
                 reject_log: RejectLog | None = None) -> None:
        if not files:
            raise DataError("no images found in the pretraining source")
        self.files = [Path(f) for f in files]
        self.img_size, self.in_chans = img_size, in_chans
        self.reject_log = reject_log
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        for offset in range(len(self.files)):
            i = (index + offset) % len(self.files)
            if i in self._bad:
                continue
            try:
                return read_image(self.files[i], self.img_size, self.in_chans)
            except (DataError, cv2.error, OSError, ValueError) as exc:
                self._bad.add(i)
                reason = str(exc).split(": ", 1)[-1]
                if self.reject_log is not None:
                    self.reject_log.reject(self.files[i], reason)
                else:
                    log.warning("skipped %s: %s", self.files[i], reason)
        raise DataError("no readable image in the pretraining source")


class PhantomDataset(Dataset):
    """Clean phantom B-mode images, item i = ``generate_sample(seed, i)``, cached in memory."""

    def __init__(self, n: int, seed: int, img_size: int, in_chans: int) -> None:
        from usfmae.phantom.generate import PhantomConfig  # lazy: the simulator is only needed here

        self.n, self.seed, self.in_chans = n, seed, in_chans
        self.cfg = PhantomConfig(size=img_size, overlays=False)
        self._cache: dict[int, torch.Tensor] | None = {} if n * in_chans * img_size**2 <= _PHANTOM_CACHE_BYTES else None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        from usfmae.phantom.generate import generate_sample

        sample = generate_sample(self.seed, int(index), self.cfg)
        item = to_chw_uint8(sample.clean, self.cfg.size, self.in_chans)
        if self._cache is not None:
            self._cache[index] = item
        return item


class ShardDataset(Dataset):
    """Frames from packed shards (``usfmae pack``), resized only if the pack size differs."""

    def __init__(self, root: Path, img_size: int, in_chans: int) -> None:
        from usfmae.shards.store import ShardReader  # lazy: owned by the curation/speed stage

        self.reader = ShardReader(root)
        self.img_size, self.in_chans = img_size, in_chans

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> torch.Tensor:
        return to_chw_uint8(np.asarray(self.reader[int(index)]), self.img_size, self.in_chans, bgr=False)


def list_images(root: Path) -> list[Path]:
    """Image files under ``root`` (recursive), sorted so the order is the same on every machine."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _manifest_files(manifest: Path) -> list[Path]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(manifest)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise DataError(f"{manifest}: not a readable Parquet manifest ({exc.__class__.__name__})") from exc
    if "path" not in table.column_names:
        raise DataError(f"{manifest}: manifest has no 'path' column")
    paths = table.column("path").to_pylist()
    if "status" in table.column_names:
        paths = [p for p, s in zip(paths, table.column("status").to_pylist(), strict=True) if s == "ok"]
    return [manifest.parent / p for p in paths if p]


def _is_shard_folder(root: Path) -> bool:
    try:
        from usfmae.shards.store import is_shard_dir
    except ImportError:  # the store module is optional for this reader; fall back to its file names
        return (root / "shards.json").is_file() and (root / "index.parquet").is_file()
    return is_shard_dir(root)


def build_pretrain_dataset(source: str | Path, img_size: int, in_chans: int,
                           reject_log: RejectLog | None = None) -> Dataset:
    """Map-style dataset of (in_chans, img_size, img_size) uint8 tensors for ``source``.

    Args:
        source: image folder, ``.parquet`` manifest, shard folder, or ``phantom:N[:SEED]``.
        img_size: side of the square output images.
        in_chans: 1 (grayscale) or 3 (RGB).
        reject_log: where unreadable files are recorded (default: log line only).

    Raises:
        DataError: the source does not exist, is empty, or is malformed.
    """
    text = str(source)
    if text.startswith("phantom:"):
        parts = text.split(":")
        try:
            n = int(parts[1])
            seed = int(parts[2]) if len(parts) > 2 else 0
        except (IndexError, ValueError) as exc:
            raise DataError(f"{text}: expected phantom:N or phantom:N:SEED") from exc
        if n <= 0 or len(parts) > 3:
            raise DataError(f"{text}: expected phantom:N or phantom:N:SEED with N > 0")
        return PhantomDataset(n, seed, img_size, in_chans)
    path = Path(source)
    if path.is_file() and path.suffix == ".parquet":
        return ImageFilesDataset(_manifest_files(path), img_size, in_chans, reject_log)
    if path.is_dir():
        if _is_shard_folder(path):
            return ShardDataset(path, img_size, in_chans)
        if (path / "manifest.parquet").is_file():  # e.g. a phantom or ingest output folder
            return ImageFilesDataset(_manifest_files(path / "manifest.parquet"), img_size, in_chans, reject_log)
        return ImageFilesDataset(list_images(path), img_size, in_chans, reject_log)
    raise DataError(f"{source}: not an image folder, .parquet manifest, shard folder or phantom:N")
