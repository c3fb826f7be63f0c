"""Features of images from a frozen encoder (``usfmae embed``): files, manifests, specs or shards.

Every path feeds the encoder :func:`usfmae.contract.normalise` of :func:`usfmae.contract.prepare`
(the one decoder and fit policy of :mod:`usfmae.imaging`) at the encoder's data contract, so a
folder and the shards ``usfmae pack`` wrote from it at the same size, channels and fit give the
same features.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn
from tqdm import tqdm

from usfmae.config import check, opt
from usfmae.contract import DataContract, normalise, prepare
from usfmae.data import labelled
from usfmae.data.images import iter_image_batches, list_images
from usfmae.errors import DataError, UsfmaeError
from usfmae.fileio import RejectLog, atomic_open, atomic_path
from usfmae.imaging import DEFAULT_MAX_PIXELS
from usfmae.models.encoder import PooledEncoder, forward_pooled, load_encoder, pick_device
from usfmae.runtime import configure_threads
from usfmae.shards import store

log = logging.getLogger(__name__)


@torch.no_grad()
def extract_features_from_files(model: nn.Module, paths: Sequence[str | Path], contract: DataContract,
                                pool: str = "cls", batch_size: int = 64, device: str | torch.device | None = None,
                                num_workers: int = 0, rejects: RejectLog | None = None, progress: bool = False,
                                max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """Stream files through the encoder (memory flat in N apart from the (N, D) output).

    Args:
        contract: the encoder's input contract (size, channels, statistics, fit policy).

    Returns:
        ``(features float32 (N_kept, D), kept indices into paths (N_kept,))``.
    """
    configure_threads(None, num_workers)
    device = pick_device(str(device) if device is not None else None)
    encoder = model if isinstance(model, PooledEncoder) else PooledEncoder(model, pool)
    encoder.eval().to(device)
    feats, kept = [], []
    for index, images in iter_image_batches(paths, contract.img_size, contract.in_chans, batch_size, num_workers,
                                            rejects, progress, fit=contract.fit, max_pixels=max_pixels):
        feats.append(forward_pooled(encoder, normalise(images.to(device, non_blocking=True), contract), device))
        kept.append(index.numpy())
    if not feats:
        raise DataError(f"none of the {len(paths)} images could be read")
    return torch.cat(feats).numpy(), np.concatenate(kept)


@torch.no_grad()
def embed_shards(reader: store.ShardReader, model: nn.Module, contract: DataContract, pool: str = "cls",
                 batch_size: int = 256, device: str | None = None, progress: bool = False) -> np.ndarray:
    """Features of every frame of a ``usfmae pack`` shard folder, in index order.

    Frames packed at the contract's size, channels and fit go to the device as they are (no
    decoding: the fast path). Others are fitted again on the CPU (:func:`usfmae.contract.prepare`),
    with a warning, since their pixels then differ from decoding the original files.

    Returns:
        float32 ``(N, D)``.
    """
    dev = pick_device(device)
    encoder = PooledEncoder(model, pool).eval().to(dev)
    as_is = reader.frame_shape == (contract.img_size, contract.img_size, contract.in_chans) and reader.fit == contract.fit
    if not as_is:
        h, w, c = reader.frame_shape
        log.warning("%s: frames packed as %dx%dx%d (fit %s), the encoder wants %dx%dx%d (fit %s); re-fitting them",
                    reader.root, h, w, c, reader.fit, contract.img_size, contract.img_size, contract.in_chans,
                    contract.fit)
    out = []
    for start in tqdm(range(0, len(reader), batch_size), unit="batch", desc="features", disable=not progress):
        frames = reader.read_batch(np.arange(start, min(start + batch_size, len(reader))))  # (B, H, W, C)
        if as_is:
            x = torch.from_numpy(frames).permute(0, 3, 1, 2)
        else:
            x = torch.stack([prepare(frame, contract) for frame in frames])
        out.append(forward_pooled(encoder, normalise(x.to(dev, non_blocking=True), contract), dev))
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def embed_inputs(source: str | Path) -> list[Path]:
    """Image paths of a folder (recursive), a Parquet manifest (``path`` column) or a KIND:PATH spec.

    (A ``usfmae pack`` shard folder is read directly by :func:`embed_shards` instead.)
    """
    text = str(source)
    path = Path(source)
    if path.is_dir():
        paths = list_images(path)
    elif path.suffix == ".parquet" and path.is_file():
        table = pq.read_table(path)
        if "path" not in table.column_names:
            raise DataError(f"{path}: manifest has no 'path' column")
        paths = [p if p.is_absolute() else path.parent / p for p in map(Path, table.column("path").to_pylist())]
    elif ":" in text and not path.exists():
        paths = [r.path for r in labelled.load_dataset(text).records]
    else:
        raise DataError(f"{source}: not a folder, a .parquet manifest, or a KIND:PATH dataset spec")
    if not paths:
        raise DataError(f"{source}: no images found")
    return paths


def embed(source: str | Path, out: str | Path, weights: str | Path | None = None, model_name: str | None = None,
          pool: str = "cls", batch_size: int = 64, device: str | None = None, num_workers: int = 0,
          overrides: dict[str, Any] | None = None, progress: bool = False, fit: str | None = None,
          max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    """Features of every readable image of ``source`` to ``out`` (.parquet or .npy), in input order.

    Args:
        fit: "pad" or "stretch" instead of the encoder's pretraining fit policy (default: the encoder's).

    Returns:
        ``{"n", "dim", "rejected", "out", "contract"}``. Unreadable files are skipped and logged to
        ``<out>.rejects.jsonl``.
    """
    out = Path(out)
    if out.suffix not in (".parquet", ".npy"):
        raise UsfmaeError(f"{out}: output must end in .parquet or .npy")
    model, info = load_encoder(weights, model_name, **(overrides or {}))
    contract = info.contract.replace(fit=fit) if fit else info.contract
    rejects = RejectLog(out.with_name(out.name + ".rejects.jsonl"))
    if store.is_shard_dir(source):  # packed frames: no decoding, the fast path
        reader = store.ShardReader(source)
        feats = embed_shards(reader, model, contract, pool, batch_size, device, progress)
        kept_paths = list(reader.ids)
    else:
        paths = embed_inputs(source)
        feats, kept = extract_features_from_files(model, paths, contract, pool, batch_size, device, num_workers,
                                                  rejects, progress, max_pixels)
        kept_paths = [str(paths[i]) for i in kept]
    if out.suffix == ".npy":
        with atomic_path(out) as tmp:
            np.save(tmp, feats)
        with atomic_open(out.with_suffix(".paths.txt"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(kept_paths) + "\n")
    else:
        column = pa.FixedSizeListArray.from_arrays(pa.array(feats.reshape(-1), pa.float32()), feats.shape[1])
        table = pa.table({"path": kept_paths, "feature": column})
        table = table.replace_schema_metadata({"usfmae": json.dumps({
            "model": info.name, "weights": str(weights) if weights else None, "pool": pool,
            "img_size": contract.img_size, "in_chans": contract.in_chans, "data_contract": contract.to_dict()})})
        with atomic_path(out) as tmp:
            pq.write_table(table, tmp)
    return {"n": int(len(kept_paths)), "dim": int(feats.shape[1]), "rejected": rejects.count, "out": str(out),
            "contract": contract.to_dict()}


@dataclass
class EmbedConfig:
    """Settings of ``usfmae embed``."""

    input: str = opt("", "image folder, shard folder, Parquet manifest (path column), or KIND:PATH spec")
    out: str = opt("", "output file: .parquet or .npy")
    weights: str | None = opt(None, "encoder checkpoint (none: --model from scratch)")
    model: str | None = opt(None, "registry name (architecture hint for --weights, or the scratch model)")
    in_chans: int | None = opt(None, "input channels when the checkpoint does not say", choices=[1, 3])
    pool: str = opt("cls", "CLS token or mean of patch tokens", choices=["cls", "mean"])
    batch_size: int = opt(64, "images per forward pass")
    device: str | None = opt(None, "cuda, cpu, ... (none: cuda when available)")
    num_workers: int = opt(0, "image decoding workers")
    fit: str | None = opt(None, "how images become square, pad or stretch (none: the encoder's pretraining "
                                "fit, usually pad)", choices=["pad", "stretch"])

    def __post_init__(self) -> None:
        check(self.in_chans in (None, 1, 3), f"in_chans must be 1 or 3, got {self.in_chans}")
        check(self.pool in ("cls", "mean"), f"pool must be cls or mean, got {self.pool!r}")
        check(self.batch_size > 0, f"batch_size must be positive, got {self.batch_size}")
        check(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")
        check(self.fit in (None, "pad", "stretch"), f"fit must be pad or stretch, got {self.fit!r}")


def run_embed(cfg: EmbedConfig, progress: bool = False) -> dict[str, Any]:
    """:func:`embed` with the settings of ``usfmae embed``; returns its summary."""
    overrides = {"in_chans": cfg.in_chans} if cfg.in_chans else {}
    return embed(cfg.input, cfg.out, weights=cfg.weights, model_name=cfg.model, pool=cfg.pool,
                 batch_size=cfg.batch_size, device=cfg.device, num_workers=cfg.num_workers,
                 overrides=overrides, progress=progress, fit=cfg.fit)
