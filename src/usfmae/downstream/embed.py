"""Features of images from a frozen encoder (``usfmae embed``): files, manifests, specs or shards.

Every path feeds the encoder :func:`usfmae.contract.normalise` of :func:`usfmae.contract.prepare`
(the one decoder and fit policy of :mod:`usfmae.imaging`) at the encoder's data contract, so a
folder and the shards ``usfmae pack`` wrote from it at the same size, channels and fit give the
same features.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import nn

from usfmae.config import check, opt
from usfmae.contract import DataContract, normalise, prepare
from usfmae.curate.shard import in_shard, parse_shard
from usfmae.curate.shard_runs import check_runs, in_input_order, run_record
from usfmae.data import labelled
from usfmae.data.images import iter_image_batches, list_images
from usfmae.downstream.features import FeatureWriter, iter_feature_rows, read_metadata
from usfmae.errors import ConfigError, DataError, UsfmaeError
from usfmae.fileio import NOT_UTF8_REASON, RejectLog, atomic_open, is_utf8, printable_name
from usfmae.imaging import DEFAULT_MAX_PIXELS
from usfmae.models.encoder import PooledEncoder, forward_pooled, load_encoder, pick_device
from usfmae.runtime import configure_threads, progress_bar
from usfmae.shards import store

log = logging.getLogger(__name__)


@torch.no_grad()
def iter_features_from_files(model: nn.Module, paths: Sequence[str | Path], contract: DataContract,
                             pool: str = "cls", batch_size: int = 64, device: str | torch.device | None = None,
                             num_workers: int = 0, rejects: RejectLog | None = None, progress: bool = False,
                             max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream files through the encoder, one batch at a time (memory flat in N).

    Args:
        contract: the encoder's input contract (size, channels, statistics, fit policy).

    Yields:
        ``(features float32 (B, D), their indices into paths (B,))`` in input order; unreadable
        files are skipped (and recorded in ``rejects``).
    """
    configure_threads(None, num_workers)
    device = pick_device(str(device) if device is not None else None)
    encoder = model if isinstance(model, PooledEncoder) else PooledEncoder(model, pool)
    encoder.eval().to(device)
    for index, images in iter_image_batches(paths, contract.img_size, contract.in_chans, batch_size, num_workers,
                                            rejects, progress, fit=contract.fit, max_pixels=max_pixels):
        # a copy: the pooled feature may be a view that would keep the batch's whole token tensor alive
        feats = forward_pooled(encoder, normalise(images.to(device, non_blocking=True), contract), device)
        yield feats.numpy().copy(), index.numpy()


def extract_features_from_files(model: nn.Module, paths: Sequence[str | Path], contract: DataContract,
                                pool: str = "cls", batch_size: int = 64, device: str | torch.device | None = None,
                                num_workers: int = 0, rejects: RejectLog | None = None, progress: bool = False,
                                max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """:func:`iter_features_from_files` gathered into one array (for callers that want all of it).

    Returns:
        ``(features float32 (N_kept, D), kept indices into paths (N_kept,))``.
    """
    feats, kept = [], []
    for batch, index in iter_features_from_files(model, paths, contract, pool, batch_size, device, num_workers,
                                                 rejects, progress, max_pixels):
        feats.append(batch)
        kept.append(index)
    if not feats:
        raise DataError(f"none of the {len(paths)} images could be read")
    return np.concatenate(feats), np.concatenate(kept)


@torch.no_grad()
def iter_shard_features(reader: store.ShardReader, model: nn.Module, contract: DataContract, pool: str = "cls",
                        batch_size: int = 256, device: str | None = None, progress: bool = False,
                        indices: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Features of the frames of a ``usfmae pack`` shard folder (all, or ``indices``), in index order.

    Frames packed at the contract's size, channels and fit go to the device as they are (no
    decoding: the fast path). Others are fitted again on the CPU (:func:`usfmae.contract.prepare`),
    with a warning, since their pixels then differ from decoding the original files.

    Yields:
        ``(features float32 (B, D), frame indices (B,))``.
    """
    dev = pick_device(device)
    encoder = PooledEncoder(model, pool).eval().to(dev)
    as_is = reader.frame_shape == (contract.img_size, contract.img_size, contract.in_chans) and reader.fit == contract.fit
    if not as_is:
        h, w, c = reader.frame_shape
        log.warning("%s: frames packed as %dx%dx%d (fit %s), the encoder wants %dx%dx%d (fit %s); re-fitting them",
                    reader.root, h, w, c, reader.fit, contract.img_size, contract.img_size, contract.in_chans,
                    contract.fit)
    indices = np.arange(len(reader)) if indices is None else np.asarray(indices, dtype=np.int64)
    for start in progress_bar(range(0, len(indices), batch_size), unit="batch", desc="features", enabled=progress):
        index = indices[start:start + batch_size]
        frames = reader.read_batch(index)  # (B, H, W, C)
        if as_is:
            x = torch.from_numpy(frames).permute(0, 3, 1, 2)
        else:
            x = torch.stack([prepare(frame, contract) for frame in frames])
        yield forward_pooled(encoder, normalise(x.to(dev, non_blocking=True), contract), dev).numpy().copy(), index
        reader.drop_pages_before(int(index[-1]))  # resident memory flat over a pass of any length


def embed_shards(reader: store.ShardReader, model: nn.Module, contract: DataContract, pool: str = "cls",
                 batch_size: int = 256, device: str | None = None, progress: bool = False) -> np.ndarray:
    """:func:`iter_shard_features` of every frame gathered into float32 ``(N, D)``."""
    out = [feats for feats, _ in iter_shard_features(reader, model, contract, pool, batch_size, device, progress)]
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def embed_inputs(source: str | Path) -> list[Path]:
    """Image paths of a folder (recursive), a Parquet manifest (``path`` column) or a KIND:PATH spec.

    (A ``usfmae pack`` shard folder is read directly by :func:`iter_shard_features` instead.)
    """
    text = str(source)
    path = Path(source)
    if path.is_dir():
        paths = list_images(path)
    elif path.suffix == ".parquet" and path.is_file():
        table = pq.read_table(path, columns=["path"]) if "path" in pq.read_schema(path).names else None
        if table is None:
            raise DataError(f"{path}: manifest has no 'path' column")
        paths = [p if p.is_absolute() else path.parent / p for p in map(Path, table.column("path").to_pylist())]
    elif ":" in text and not path.exists():
        paths = [r.path for r in labelled.load_dataset(text).records]
    else:
        raise DataError(f"{source}: not a folder, a .parquet manifest, or a KIND:PATH dataset spec")
    if not paths:
        raise DataError(f"{source}: no images found")
    return paths


def input_keys(source: str | Path) -> list[tuple[str, str]]:
    """``(partition key, output name)`` of every input of ``source``, in output order.

    The partition key (what :func:`usfmae.curate.shard.shard_of` splits on) is a shard folder's
    frame id, or a file's path relative to the folder, manifest folder or dataset root; the output
    name is what the ``path`` column holds.
    """
    if store.is_shard_dir(source):
        return [(frame_id, frame_id) for frame_id in store.ShardReader(source).ids]
    text, path = str(source), Path(source)
    root = path if path.is_dir() else path.parent if path.suffix == ".parquet" else Path(text.partition(":")[2])
    keys = []
    for file in embed_inputs(source):
        try:
            key = file.relative_to(root).as_posix()
        except ValueError:  # a manifest's absolute path elsewhere
            key = file.as_posix()
        keys.append((key, str(file)))
    return keys


def embed(source: str | Path, out: str | Path, weights: str | Path | None = None, model_name: str | None = None,
          pool: str = "cls", batch_size: int = 64, device: str | None = None, num_workers: int = 0,
          overrides: dict[str, Any] | None = None, progress: bool = False, fit: str | None = None,
          max_pixels: int = DEFAULT_MAX_PIXELS, shard: str | None = None) -> dict[str, Any]:
    """Features of every readable image of ``source`` to ``out`` (.parquet or .npy), in input order.

    Features are written as each batch comes (:class:`usfmae.downstream.features.FeatureWriter`),
    so memory stays flat in the number of images.

    Args:
        fit: "pad" or "stretch" instead of the encoder's pretraining fit policy (default: the encoder's).
        shard: ``"I/N"``: only the inputs of part I of N (:func:`input_keys` gives what is split);
            needs a .parquet ``out``, whose metadata then records the run for
            :func:`merge_embeddings`.

    Returns:
        ``{"n", "dim", "rejected", "out", "contract"}``. Unreadable files are skipped and logged to
        ``<out>.rejects.jsonl``.

    Raises:
        DataError: no input, or none of them readable.
        UsfmaeError: a bad ``out`` suffix, or ``shard`` with a .npy ``out``.
    """
    out = Path(out)
    if out.suffix not in (".parquet", ".npy"):
        raise UsfmaeError(f"{out}: output must end in .parquet or .npy")
    part = parse_shard(shard)
    if part is not None and out.suffix != ".parquet":
        raise ConfigError(f"{out}: --shard needs a .parquet output (its metadata records the shard for the merge)")
    model, info = load_encoder(weights, model_name, **(overrides or {}))
    contract = info.contract.replace(fit=fit) if fit else info.contract
    rejects = RejectLog(out.with_name(out.name + ".rejects.jsonl"))
    rejects.path.unlink(missing_ok=True)  # embed rewrites its output, so its rejects too (no resume)
    meta: dict[str, Any] = {
        "model": info.name, "weights": str(weights) if weights else None, "pool": pool,
        "img_size": contract.img_size, "in_chans": contract.in_chans, "data_contract": contract.to_dict()}
    keys = input_keys(source)
    if not keys:
        raise DataError(f"{source}: no images to embed")
    chosen = np.array([i for i, (key, _) in enumerate(keys) if in_shard(key, part)], dtype=np.int64)
    if part is not None:
        settings = {"weights": meta["weights"], "model": model_name, "pool": pool, "batch_size": batch_size,
                    "device": device, "num_workers": num_workers, "overrides": overrides or {}, "fit": fit,
                    "max_pixels": max_pixels}
        meta["shard_run"] = run_record("embed", str(shard), source, settings, finished=True)
    n_chosen = len(chosen)  # before unreadable names are dropped: none readable is an error, not an empty part
    if store.is_shard_dir(source):  # packed frames: no decoding, the fast path
        batches = iter_shard_features(store.ShardReader(source), model, contract, pool, batch_size, device,
                                      progress, indices=chosen)
    else:
        # a name with undecodable bytes cannot be stored in the features' path column (UTF-8)
        for i in chosen:
            if not is_utf8(keys[i][1]):
                rejects.reject(keys[i][1], NOT_UTF8_REASON)
        chosen = np.array([i for i in chosen if is_utf8(keys[i][1])], dtype=np.int64)
        paths = [Path(keys[i][1]) for i in chosen]
        local = iter_features_from_files(model, paths, contract, pool, batch_size, device, num_workers,
                                         rejects, progress, max_pixels)
        batches = ((feats, chosen[index]) for feats, index in local)
    writer = FeatureWriter(out, meta)
    with writer:
        for feats, index in batches:
            writer.add(feats, [keys[i][1] for i in index])
        if writer.dim is None and n_chosen:
            raise DataError(f"none of the {n_chosen} images could be read")
        if writer.dim is None:  # a shard that the split left empty: a valid, empty part
            writer.add(np.zeros((0, _feature_dim(model, pool, contract)), np.float32), [])
    return {"n": writer.n, "dim": int(writer.dim or 0), "rejected": rejects.count, "out": str(out),
            "contract": contract.to_dict()}


@torch.no_grad()
def _feature_dim(model: nn.Module, pool: str, contract: DataContract) -> int:
    """D of the pooled feature, from one forward pass on a blank image (for an empty part)."""
    blank = torch.zeros(1, contract.in_chans, contract.img_size, contract.img_size)
    return int(PooledEncoder(model, pool).eval().cpu()(blank).shape[1])


def merge_embeddings(shard_files: Sequence[str | os.PathLike], out: str | os.PathLike,
                     progress: bool = True) -> dict[str, Any]:
    """Merge the feature files of ``usfmae embed --shard I/N`` runs (all N) into ``out``.

    Checks that every shard 0..N-1 is there with the same input, encoder and settings (apart from
    ``num_workers``), lists the input again and takes each input's row from the shard that
    :func:`usfmae.curate.shard.shard_of` gives it (an input its shard neither embedded nor
    rejected is an error); writes ``out`` (.parquet or .npy) and ``<out>.rejects.jsonl`` as a
    single ``usfmae embed`` run does, streaming (memory flat in the number of images).

    Returns:
        ``{"shards", "n", "dim", "rejected", "out"}``.

    Raises:
        DataError: a shard missing, given twice, not an embed --shard output, or run differently,
            or an input that no shard embedded.
    """
    files = [Path(f) for f in shard_files]
    runs = []
    for file in files:
        if not file.is_file() or file.suffix != ".parquet":
            raise DataError(f"{file}: not the .parquet output of a `usfmae embed --shard I/N` run")
        runs.append((str(file), read_metadata(file).get("shard_run", {})))
    base, names = check_runs(runs, "embed")
    ordered = [Path(name) for name in names]
    out = Path(out)
    if any(out.resolve() == f.resolve() for f in files):
        raise DataError(f"{out}: is one of the shard files; merge into a new file")
    meta = {k: v for k, v in read_metadata(ordered[0]).items() if k != "shard_run"}
    logs = [RejectLog(f.with_name(f.name + ".rejects.jsonl")).read() for f in ordered]
    rejected = [{r.get("file") for r in log} for log in logs]
    keys = [(key, printable_name(name)) for key, name in input_keys(base["input"])]
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in ordered)
    merged = in_input_order(keys, [iter_feature_rows(f) for f in ordered], lambda row: printable_name(row[0]),
                            rejected, names)
    chunk: list[tuple[str, np.ndarray]] = []
    with FeatureWriter(out, meta) as writer:
        for row in progress_bar(merged, total=total, desc="merge embed", unit="img", enabled=progress):
            chunk.append(row)
            if len(chunk) == 4096:
                writer.add(np.stack([f for _, f in chunk]), [name for name, _ in chunk])
                chunk = []
        if chunk or writer.dim is None:
            dim = len(chunk[0][1]) if chunk else pq.read_schema(ordered[0]).field("feature").type.list_size
            writer.add(np.stack([f for _, f in chunk]) if chunk else np.zeros((0, dim), np.float32),
                       [name for name, _ in chunk])
    if any(logs):
        with atomic_open(out.with_name(out.name + ".rejects.jsonl"), "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r) + "\n" for log in logs for r in log)
    return {"shards": len(ordered), "n": writer.n, "dim": int(writer.dim or 0), "rejected": sum(map(len, logs)),
            "out": str(out)}


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
    shard: str | None = opt(None, "embed only part I of N of the inputs (I/N, 0-based; e.g. a SLURM array "
                                  "task; .parquet output); `usfmae merge` combines the N files")

    def __post_init__(self) -> None:
        check(self.in_chans in (None, 1, 3), f"in_chans must be 1 or 3, got {self.in_chans}")
        check(self.pool in ("cls", "mean"), f"pool must be cls or mean, got {self.pool!r}")
        check(self.batch_size > 0, f"batch_size must be positive, got {self.batch_size}")
        check(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")
        check(self.fit in (None, "pad", "stretch"), f"fit must be pad or stretch, got {self.fit!r}")
        parse_shard(self.shard)


def run_embed(cfg: EmbedConfig, progress: bool = False) -> dict[str, Any]:
    """:func:`embed` with the settings of ``usfmae embed``; returns its summary."""
    overrides = {"in_chans": cfg.in_chans} if cfg.in_chans else {}
    return embed(cfg.input, cfg.out, weights=cfg.weights, model_name=cfg.model, pool=cfg.pool,
                 batch_size=cfg.batch_size, device=cfg.device, num_workers=cfg.num_workers,
                 overrides=overrides, progress=progress, fit=cfg.fit, shard=cfg.shard)
