"""Images for downstream stages: decode files into uint8 batches and normalise them.

Used by ``finetune`` and ``probe`` (images preloaded once as uint8 tensors) and by ``embed`` (streamed).
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

from usfmae.contract import DataContract
from usfmae.contract import normalise as contract_normalise
from usfmae.errors import DataError
from usfmae.fileio import RejectLog
from usfmae.imaging import IMAGE_SUFFIXES

log = logging.getLogger(__name__)



# Used when a model carries no data contract (torchvision / timm baselines): ImageNet statistics,
# averaged over RGB for a single grayscale channel.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_norm(in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet mean/std for ``in_chans`` channels (1 channel: the RGB average)."""
    if in_chans == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (float(np.mean(IMAGENET_MEAN)),) * in_chans, (float(np.mean(IMAGENET_STD)),) * in_chans



def load_image(path: str | Path, img_size: int, in_chans: int) -> np.ndarray:
    """Read one image file as ``(img_size, img_size, in_chans)`` uint8.

    Accepts 8/16-bit gray, RGB, RGBA and palette files. Grayscale is replicated to 3 channels and
    colour is converted to luminance for 1 channel. Resizing stretches to a square, as the paper's
    224x224 preprocessing does; area interpolation when shrinking avoids aliasing of speckle.

    Raises:
        DataError: the file is missing, unreadable or empty.
    """
    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else None
    if data is None or data.size == 0:
        raise DataError(f"{path}: file missing or empty")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise DataError(f"{path}: not a readable image")
    if image.dtype != np.uint8:
        # 16-bit (or float) images: scale the used range to 8 bits rather than truncating.
        image = image.astype(np.float32)
        lo, hi = float(image.min()), float(image.max())
        image = ((image - lo) * (255.0 / max(hi - lo, 1e-6))).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if in_chans == 1:
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        image = image[:, :, None]
    else:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    if (h, w) != (img_size, img_size):
        interp = cv2.INTER_AREA if min(h, w) >= img_size else cv2.INTER_LINEAR
        image = cv2.resize(image, (img_size, img_size), interpolation=interp)
        if image.ndim == 2:
            image = image[:, :, None]
    if image.shape[2] != in_chans:
        image = np.repeat(image[:, :, :1], in_chans, axis=2)
    return np.ascontiguousarray(image)


class ImageFiles(Dataset):
    """Image files as uint8 ``(C, H, W)`` tensors; a bad file yields ``(index, None, reason)``."""

    def __init__(self, paths: Sequence[str | Path], img_size: int, in_chans: int) -> None:
        self.paths = [Path(p) for p in paths]
        self.img_size = img_size
        self.in_chans = in_chans

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str]:
        try:
            image = load_image(self.paths[index], self.img_size, self.in_chans)
        except (DataError, cv2.error, OSError, ValueError) as exc:
            return index, None, str(exc)
        return index, torch.from_numpy(image).permute(2, 0, 1).contiguous(), ""


def collate_skip(items: list[tuple[int, torch.Tensor | None, str]]) -> dict[str, Any]:
    """Stack the good items of a batch; keep the bad ones' indices and reasons for the RejectLog."""
    good = [(i, x) for i, x, _ in items if x is not None]
    bad = [(i, why) for i, x, why in items if x is None]
    images = torch.stack([x for _, x in good]) if good else None
    return {"index": torch.tensor([i for i, _ in good], dtype=torch.long), "images": images, "bad": bad}


def iter_image_batches(paths: Sequence[str | Path], img_size: int, in_chans: int, batch_size: int = 64,
                       num_workers: int = 0, rejects: RejectLog | None = None,
                       progress: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(indices (B,), images uint8 (B,C,H,W))`` in input order, skipping unreadable files.

    Each skipped file is logged in one line and recorded in ``rejects`` when given.
    """
    files = ImageFiles(paths, img_size, in_chans)
    loader = DataLoader(files, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_skip)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(files), unit="img", desc="images")
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
                   rejects: RejectLog | None = None, progress: bool = False) -> tuple[torch.Tensor, np.ndarray]:
    """Decode every image once into memory (labelled sets are small: 1,875 x 224^2 x 3 = 282 MB).

    Returns:
        ``(images uint8 (N_kept, C, H, W), kept indices into paths (N_kept,))``.
    """
    chunks, kept = [], []
    for index, images in iter_image_batches(paths, img_size, in_chans, 64, num_workers, rejects, progress):
        chunks.append(images)
        kept.append(index.numpy())
    if not chunks:
        raise DataError(f"none of the {len(paths)} images could be read")
    return torch.cat(chunks), np.concatenate(kept)


def normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``(B,C,H,W)`` (or float in [0,1]) -> float32: :func:`usfmae.contract.normalise`."""
    return contract_normalise(images, DataContract(images.shape[-1], len(mean), mean, std))


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted for a stable order."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


