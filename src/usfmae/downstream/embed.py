"""Stream image files through a frozen encoder (``usfmae embed``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from usfmae.data.images import iter_image_batches, normalise
from usfmae.errors import DataError
from usfmae.fileio import RejectLog
from usfmae.models.encoder import PooledEncoder, forward_pooled, pick_device
from usfmae.runtime import configure_threads

log = logging.getLogger(__name__)


@torch.no_grad()
def extract_features_from_files(model: nn.Module, paths: Sequence[str | Path], img_size: int, in_chans: int,
                                mean: Sequence[float], std: Sequence[float], pool: str = "cls",
                                batch_size: int = 64, device: str | torch.device | None = None,
                                num_workers: int = 0, rejects: RejectLog | None = None,
                                progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Stream files through the encoder (memory flat in N apart from the (N, D) output).

    Returns:
        ``(features float32 (N_kept, D), kept indices into paths (N_kept,))``.
    """
    configure_threads(None, num_workers)
    device = pick_device(str(device) if device is not None else None)
    encoder = model if isinstance(model, PooledEncoder) else PooledEncoder(model, pool)
    encoder.eval().to(device)
    feats, kept = [], []
    for index, images in iter_image_batches(paths, img_size, in_chans, batch_size, num_workers, rejects, progress):
        batch = normalise(images.to(device, non_blocking=True), mean, std)
        feats.append(forward_pooled(encoder, batch, device))
        kept.append(index.numpy())
    if not feats:
        raise DataError(f"none of the {len(paths)} images could be read")
    return torch.cat(feats).numpy(), np.concatenate(kept)


