"""MAE reconstruction grid of a few images (``usfmae reconstruct``): what the pretrained model fills in.

Images are decoded and fitted at the model's data contract (:func:`usfmae.contract.prepare`, the one
decoder of :mod:`usfmae.imaging`), masked reproducibly (``seed``) and drawn by
:func:`usfmae.eval.figures.reconstruction_grid` as rows of input | masked | reconstruction |
reconstruction + visible patches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from usfmae import imaging
from usfmae.config import check, opt
from usfmae.contract import normalise, prepare, resolve_contract
from usfmae.data.images import list_images
from usfmae.errors import DataError
from usfmae.eval.figures import reconstruction_grid
from usfmae.models.checkpoint import build_from_checkpoint

log = logging.getLogger(__name__)


@dataclass
class ReconstructConfig:
    """Settings of ``usfmae reconstruct``."""

    images: list[str] = opt([], "image files and/or folders")
    weights: str = opt("", "MAE checkpoint (ours, released USF-MAE, MAE)")
    out: str = opt("", "PNG to write")
    model: str | None = opt(None, "registered model name, for files that do not record their architecture")
    in_chans: int | None = opt(None, "adapt the weights to 1 or 3 channels", choices=[1, 3])
    mask_ratio: float | None = opt(None, "fraction of patches hidden (none: the model's)")
    fit: str | None = opt(None, "how images become square, pad or stretch (none: the model's pretraining fit, "
                                "usually pad)", choices=["pad", "stretch"])
    seed: int = opt(0, "seed of the mask")
    max_images: int = opt(16, "at most this many rows")

    def __post_init__(self) -> None:
        check(self.mask_ratio is None or 0.0 <= self.mask_ratio < 1.0,
              f"--mask-ratio must be in [0, 1), got {self.mask_ratio}")
        check(self.max_images >= 1, f"--max-images must be positive, got {self.max_images}")
        # unlike other verbs' --out (a folder), this one is the figure itself
        check(Path(self.out).suffix.lower() == ".png", f"--out is the PNG to write (e.g. recon.png), got {self.out!r}")
        check(self.in_chans in (None, 1, 3), f"--in-chans must be 1 or 3, got {self.in_chans}")
        check(self.fit in (None, "pad", "stretch"), f"--fit must be pad or stretch, got {self.fit!r}")


def reconstruct(cfg: ReconstructConfig) -> dict[str, Any]:
    """Write the reconstruction grid of up to ``cfg.max_images`` readable images to ``cfg.out``.

    Unreadable files are skipped with one warning each.

    Returns:
        ``{"out", "images", "loss"}``: the PNG, the rows drawn, the masked-patch MSE.
    """
    overrides = {"in_chans": cfg.in_chans} if cfg.in_chans else {}
    model = build_from_checkpoint(Path(cfg.weights), model_name=cfg.model, **overrides)
    contract = resolve_contract(model, fit=cfg.fit)
    files: list[Path] = []
    for item in map(Path, cfg.images):
        if item.is_dir():
            files.extend(list_images(item))
        else:
            files.append(item)
    images = []
    for file in files:
        if len(images) == cfg.max_images:
            break
        try:
            images.append(normalise(prepare(imaging.read_image(file), contract), contract))  # (C, H, W)
        except DataError as exc:
            log.warning("skipped %s", exc)
    if not images:
        raise DataError("no readable images among " + ", ".join(map(str, cfg.images)))
    loss = reconstruction_grid(model, torch.stack(images), contract.to_dict(), Path(cfg.out), seed=cfg.seed,
                               mask_ratio=cfg.mask_ratio)
    return {"out": cfg.out, "images": len(images), "loss": float(loss)}
