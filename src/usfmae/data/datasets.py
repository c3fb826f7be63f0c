"""Unlabelled image datasets for pretraining: folders, manifests, shards and the phantom generator.

:func:`build_pretrain_dataset` turns a source string into a map-style dataset whose items are
``uint8`` tensors of shape (C,H,W) at the model's image size, decoded and fitted by
:mod:`usfmae.imaging` through :func:`usfmae.contract.prepare` (the same pixels as every downstream
stage for the same file and contract). Augmentation and normalisation come after (per image in the DataLoader, or per batch on the accelerator), see ``usfmae.data.transforms``.

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

from usfmae import imaging
from usfmae.contract import imagenet_contract, prepare
from usfmae.data.images import list_images, manifest_paths
from usfmae.errors import DataError
from usfmae.fileio import RejectLog
from usfmae.imaging import DEFAULT_MAX_PIXELS
from usfmae.phantom.generate import PhantomConfig, generate_sample
from usfmae.shards.store import ShardReader, is_shard_dir

log = logging.getLogger(__name__)

# Phantom items are cached in memory up to this many bytes (generation costs ~10 ms at 224 px).
_PHANTOM_CACHE_BYTES = 256 * 2**20


class ImageFilesDataset(Dataset):
    """Images from a list of files; unreadable ones are rejected once and replaced by the next."""

    def __init__(self, files: Sequence[Path], img_size: int, in_chans: int,
                 reject_log: RejectLog | None = None, fit: str = "pad",
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if not files:
            raise DataError("no images found in the pretraining source")
        self.files = [Path(f) for f in files]
        self.contract = imagenet_contract(img_size, in_chans, fit)  # prepare() reads size, channels, fit
        self.max_pixels = max_pixels
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
                return prepare(imaging.read_image(self.files[i], max_pixels=self.max_pixels), self.contract)
            except (DataError, cv2.error, OSError, ValueError) as exc:
                self._bad.add(i)
                reason = str(exc).removeprefix(f"{self.files[i]}: ")
                if self.reject_log is not None:
                    self.reject_log.reject(self.files[i], reason)
                else:
                    log.warning("skipped %s: %s", self.files[i], reason)
        raise DataError("no readable image in the pretraining source")


class PhantomDataset(Dataset):
    """Clean phantom B-mode images, item i = ``generate_sample(seed, i)``, cached in memory.

    Generated at the model's size (phantom frames are square, so every fit policy keeps them as they
    are), they equal the ``clean/`` images ``usfmae phantom --size img_size`` writes for that seed.
    """

    def __init__(self, n: int, seed: int, img_size: int, in_chans: int, fit: str = "pad") -> None:
        self.n, self.seed = n, seed
        self.contract = imagenet_contract(img_size, in_chans, fit)
        self.cfg = PhantomConfig(size=img_size, overlays=False)
        self._cache: dict[int, torch.Tensor] | None = {} if n * in_chans * img_size**2 <= _PHANTOM_CACHE_BYTES else None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        sample = generate_sample(self.seed, int(index), self.cfg)
        item = prepare(sample.clean, self.contract)
        if self._cache is not None:
            self._cache[index] = item
        return item


class ShardDataset(Dataset):
    """Frames from packed shards (``usfmae pack``), re-fitted only if the pack's size or channels differ.

    Packed at the model's size, channels and fit policy, the items equal those of the files they
    were packed from. Otherwise the stored (already fitted) frames are fitted again, with a warning:
    the pixels then differ from decoding the originals.
    """

    def __init__(self, root: Path, img_size: int, in_chans: int, fit: str = "pad") -> None:
        self.reader = ShardReader(root)
        self.contract = imagenet_contract(img_size, in_chans, fit)
        h, w, c = self.reader.frame_shape
        if (h, w, c) != (img_size, img_size, in_chans) or self.reader.fit != fit:
            log.warning("%s: frames packed as %dx%dx%d (fit %s), the model wants %dx%dx%d (fit %s); "
                        "re-fitting them (pack with --size %d --channels %d --fit %s to feed them unchanged)",
                        root, h, w, c, self.reader.fit, img_size, img_size, in_chans, fit, img_size, in_chans, fit)

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> torch.Tensor:
        return prepare(np.asarray(self.reader[int(index)]), self.contract)


def build_pretrain_dataset(source: str | Path, img_size: int, in_chans: int,
                           reject_log: RejectLog | None = None, *, fit: str = "pad",
                           max_pixels: int = DEFAULT_MAX_PIXELS) -> Dataset:
    """Map-style dataset of (in_chans, img_size, img_size) uint8 tensors for ``source``.

    Args:
        source: image folder, ``.parquet`` manifest, shard folder, or ``phantom:N[:SEED]``.
        img_size: side of the square output images.
        in_chans: 1 (grayscale) or 3 (RGB).
        reject_log: where unreadable files are recorded (default: log line only).
        fit: the model's fit policy, "pad" (letterbox) or "stretch" (``usfmae.imaging.fit``).
        max_pixels: larger images are rejected from their header, before decoding.

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
        return PhantomDataset(n, seed, img_size, in_chans, fit)
    path = Path(source)
    if path.is_file() and path.suffix == ".parquet":
        return ImageFilesDataset(manifest_paths(path), img_size, in_chans, reject_log, fit, max_pixels)
    if path.is_dir():
        if is_shard_dir(path):
            return ShardDataset(path, img_size, in_chans, fit)
        if (path / "manifest.parquet").is_file():  # e.g. a phantom or ingest output folder
            return ImageFilesDataset(manifest_paths(path / "manifest.parquet"), img_size, in_chans, reject_log,
                                     fit, max_pixels)
        return ImageFilesDataset(list_images(path), img_size, in_chans, reject_log, fit, max_pixels)
    raise DataError(f"{source}: not an image folder, .parquet manifest, shard folder or phantom:N")
