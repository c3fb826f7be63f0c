"""Export an encoder for use outside usfmae: timm-compatible safetensors, a model card, and ONNX.

Output folder::

    model.safetensors   encoder weights with timm VisionTransformer key names (no decoder)
    model.json          timm config (architecture, model_args, pretrained_cfg: input size, mean, std)
    README.md           model card: data, recipe, licence, data contract, leakage statement
    encoder.onnx        normalised images (B,C,H,W) -> pooled features (B,D), dynamic batch
    export.json         what was written and the ONNX-vs-PyTorch max abs difference

The ONNX file is run with onnxruntime on a batch size different from the one it was traced with
and compared with PyTorch; a difference above ``tolerance`` is an error, not a warning.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from usfmae.data.images import list_images
from usfmae.downstream.embed import extract_features_from_files
from usfmae.errors import UsfmaeError
from usfmae.fileio import RejectLog, atomic_open, atomic_path, write_json
from usfmae.models.encoder import EncoderInfo, PooledEncoder, load_encoder

log = logging.getLogger(__name__)

LEAKAGE_STATEMENT = (
    "The USF-MAE paper states that its three evaluation sets (BUS-BRA, MMOTU-2D, GIST514-DB) were "
    "not used for pretraining, yet its Table 1 lists them in OpenUS-46; the released repository "
    "says 360K images from 43 datasets were used. Before reporting downstream results with this "
    "encoder, run `usfmae audit --pretrain <pretraining manifest> --eval <evaluation set>` and "
    "report the exact and near-duplicate overlap it finds."
)


def _card(info: EncoderInfo, timm_cfg: dict[str, Any], pool: str, onnx_diff: float | None,
          recipe: dict[str, Any] | None) -> str:
    kwargs, arch = timm_cfg["model_args"], timm_cfg["architecture"]
    data = f"`{info.pretrain['data']}`" if info.pretrain and info.pretrain.get("data") else "not recorded in the checkpoint"
    recipe_lines = "\n".join(f"| {k} | {v} |" for k, v in (recipe or {}).items()) or "| (not recorded) | |"
    onnx_line = (f"`encoder.onnx` (opset >= 17, dynamic batch): onnxruntime vs PyTorch max abs difference "
                 f"{onnx_diff:.2e}." if onnx_diff is not None else "ONNX export was not requested.")
    kw = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if v is not None)
    return f"""---
license: mit
library_name: timm
tags: [ultrasound, masked-autoencoder, vision-transformer, usfmae]
---

# {info.name} encoder (usfmae export)

A Vision Transformer encoder pretrained with masked autoencoding on ultrasound images
(USF-MAE recipe, Megahed et al., arXiv 2510.22990). The decoder is not included.

## Data contract
| input | value |
|---|---|
| image size | {info.img_size} x {info.img_size} |
| channels (in_chans) | {info.in_chans} ({"grayscale" if info.in_chans == 1 else "RGB, grayscale replicated"}) |
| scaling | pixel / 255, then (x - mean) / std |
| mean | {list(info.mean)} |
| std | {list(info.std)} |
| pooled feature | {pool} |

## Data
Weights: {info.describe()}. Pretraining mask ratio: {info.mask_ratio if info.mask_ratio is not None else "unknown"}.
Pretraining data: {data}.
The paper's corpus, OpenUS-46, has 374,192 images from 46 public ultrasound datasets (23 clinical
applications); video sources sampled at 3 frames per second and volumes sliced to 2D.

## Recipe
| setting | value |
|---|---|
{recipe_lines}

## Leakage statement
{LEAKAGE_STATEMENT}

## Use with timm
```python
import timm, safetensors.torch
model = timm.create_model("{arch}", pretrained=False, num_classes=0, {kw})
model.load_state_dict(safetensors.torch.load_file("model.safetensors"))
```

## ONNX
{onnx_line}

## Licence
MIT (code and these weights). Check the licences of the pretraining datasets before commercial use.
"""


def export_onnx(encoder: PooledEncoder, path: Path, img_size: int, in_chans: int, opset: int = 17) -> None:
    """Trace ``encoder`` to ONNX with a dynamic batch axis (input ``images``, output ``features``)."""
    example = torch.randn(2, in_chans, img_size, img_size)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # The TorchScript-based exporter is used because the dynamo exporter needs onnxscript;
        # its deprecation and tracer warnings are noise for a fixed-shape ViT forward.
        warnings.simplefilter("ignore")
        torch.onnx.export(encoder, (example,), str(tmp), dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["features"],
                          dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}})


def onnx_parity(encoder: PooledEncoder, path: Path, img_size: int, in_chans: int, batch: int = 3,
                seed: int = 0) -> float:
    """Max abs difference between onnxruntime and PyTorch on a seeded random batch of ``batch``."""
    import onnxruntime as ort

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_chans, img_size, img_size, generator=generator)
    with torch.no_grad():
        expected = encoder(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["features"], {"images": x.numpy()})[0]
    if got.shape != expected.shape:
        raise UsfmaeError(f"{path}: ONNX output shape {got.shape} differs from PyTorch {expected.shape}")
    return float(np.abs(got - expected).max())


def export(weights: str | Path | None, out: str | Path, model_name: str | None = None, pool: str = "cls",
           onnx: bool = True, opset: int = 17, tolerance: float = 1e-4,
           recipe: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write safetensors + config + model card (+ ONNX with a parity check) to ``out``.

    Args:
        weights: checkpoint (ours, released USF-MAE, facebookresearch MAE); None = ``model_name`` untrained.
        pool: ``"cls"`` or ``"mean"``, the pooled output of the ONNX graph.
        tolerance: largest accepted onnxruntime-vs-PyTorch difference.
        recipe: settings shown in the model card (default: the checkpoint's recorded config).
        overrides: model options when the checkpoint does not record them (e.g. ``in_chans``).

    Returns:
        Summary dict (also written to ``out/export.json``).

    Raises:
        UsfmaeError: the parity check failed, or the weights could not be loaded.
    """
    from usfmae.models import checkpoint

    if opset < 17:
        raise UsfmaeError(f"opset {opset} is too old; use 17 or newer")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, info = load_encoder(weights, model_name, **(overrides or {}))
    model = model.float().eval()
    if recipe is None:  # the pretraining config stored in our checkpoints, else the architecture
        recipe = dict(info.pretrain) if info.pretrain else {"model": info.name, **model.cfg.to_dict()}
    sidecar = checkpoint.export_encoder(model, out / "model.safetensors",
                                        metadata={"source": info.source, "weights": str(weights) if weights else None,
                                                  "pool": pool})
    timm_cfg = checkpoint.timm_config(model)
    summary: dict[str, Any] = {"model": info.name, "weights": str(weights) if weights else None,
                               "source": info.source, "pool": pool, "safetensors": str(out / "model.safetensors"),
                               "config": str(sidecar), "timm": timm_cfg}
    diff = None
    if onnx:
        encoder = PooledEncoder(model, pool).eval()
        onnx_path = out / "encoder.onnx"
        export_onnx(encoder, onnx_path, info.img_size, info.in_chans, opset)
        diff = onnx_parity(encoder, onnx_path, info.img_size, info.in_chans)
        summary.update(onnx=str(onnx_path), opset=opset, onnx_max_abs_diff=diff, tolerance=tolerance)
        if not diff < tolerance:
            write_json(out / "export.json", summary)
            raise UsfmaeError(f"{onnx_path}: ONNX differs from PyTorch by {diff:.3g} (> {tolerance:g})")
        log.info("ONNX parity: max abs diff %.2e", diff)
    with atomic_open(out / "README.md", "w", encoding="utf-8") as handle:
        handle.write(_card(info, timm_cfg, pool, diff, recipe))
    write_json(out / "export.json", summary)
    return summary


# ----------------------------------------------------------------------------------------- embed
def embed_inputs(source: str | Path) -> list[Path]:
    """Image paths of a folder (recursive), a Parquet manifest (``path`` column) or a KIND:PATH spec.

    (A ``usfmae pack`` shard folder is read directly by :func:`embed_shards` instead.)
    """
    from usfmae.errors import DataError

    text = str(source)
    path = Path(source)
    if path.is_dir():
        paths = list_images(path)
    elif path.suffix == ".parquet" and path.is_file():
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if "path" not in table.column_names:
            raise DataError(f"{path}: manifest has no 'path' column")
        paths = [p if p.is_absolute() else path.parent / p for p in map(Path, table.column("path").to_pylist())]
    elif ":" in text and not path.exists():
        from usfmae.data import labelled

        paths = [r.path for r in labelled.load_dataset(text).records]
    else:
        raise DataError(f"{source}: not a folder, a .parquet manifest, or a KIND:PATH dataset spec")
    if not paths:
        raise DataError(f"{source}: no images found")
    return paths


def embed(source: str | Path, out: str | Path, weights: str | Path | None = None, model_name: str | None = None,
          pool: str = "cls", batch_size: int = 64, device: str | None = None, num_workers: int = 0,
          overrides: dict[str, Any] | None = None, progress: bool = False) -> dict[str, Any]:
    """Features of every readable image of ``source`` to ``out`` (.parquet or .npy), in input order.

    Returns:
        ``{"n", "dim", "rejected", "out"}``. Unreadable files are skipped and logged to
        ``<out>.rejects.jsonl``.
    """
    from usfmae.shards import store

    out = Path(out)
    if out.suffix not in (".parquet", ".npy"):
        raise UsfmaeError(f"{out}: output must end in .parquet or .npy")
    model, info = load_encoder(weights, model_name, **(overrides or {}))
    rejects = RejectLog(out.with_name(out.name + ".rejects.jsonl"))
    if store.is_shard_dir(source):  # packed frames: no decoding, the fast path
        reader = store.ShardReader(source)
        feats = embed_shards(reader, model, info, pool, batch_size, device, progress)
        kept_paths = list(reader.ids)
    else:
        paths = embed_inputs(source)
        feats, kept = extract_features_from_files(model, paths, info.img_size, info.in_chans, info.mean, info.std,
                                                  pool, batch_size, device, num_workers, rejects, progress)
        kept_paths = [str(paths[i]) for i in kept]
    if out.suffix == ".npy":
        with atomic_path(out) as tmp:
            np.save(tmp, feats)
        with atomic_open(out.with_suffix(".paths.txt"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(kept_paths) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        column = pa.FixedSizeListArray.from_arrays(pa.array(feats.reshape(-1), pa.float32()), feats.shape[1])
        table = pa.table({"path": kept_paths, "feature": column})
        table = table.replace_schema_metadata({"usfmae": json.dumps({
            "model": info.name, "weights": str(weights) if weights else None, "pool": pool,
            "img_size": info.img_size, "in_chans": info.in_chans})})
        with atomic_path(out) as tmp:
            pq.write_table(table, tmp)
    return {"n": int(len(kept_paths)), "dim": int(feats.shape[1]), "rejected": rejects.count, "out": str(out)}


@torch.no_grad()
def embed_shards(reader: Any, model: nn.Module, info: EncoderInfo, pool: str = "cls", batch_size: int = 256,
                 device: str | None = None, progress: bool = False) -> np.ndarray:
    """Features of every frame of a ``usfmae pack`` shard folder, in index order.

    Frames are gathered from the memory maps in batches, moved to the device, converted to the
    model's channels (luminance or replication) and size (antialiased bilinear) there.

    Returns:
        float32 ``(N, D)``.
    """
    import torch.nn.functional as F

    from usfmae.data.images import normalise
    from usfmae.models.encoder import forward_pooled, pick_device

    dev = pick_device(device)
    encoder = PooledEncoder(model, pool).eval().to(dev)
    luma = torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)
    starts = range(0, len(reader), batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, unit="batch", desc="features")
    out = []
    for start in starts:
        frames = reader.read_batch(np.arange(start, min(start + batch_size, len(reader))))  # (B, H, W, C)
        x = torch.from_numpy(frames).to(dev, non_blocking=True).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[1] == 3 and info.in_chans == 1:
            x = (x * luma).sum(dim=1, keepdim=True)
        elif x.shape[1] == 1 and info.in_chans > 1:
            x = x.expand(-1, info.in_chans, -1, -1)
        if x.shape[-1] != info.img_size or x.shape[-2] != info.img_size:
            x = F.interpolate(x, size=(info.img_size, info.img_size), mode="bilinear", antialias=True,
                              align_corners=False)
        out.append(forward_pooled(encoder, normalise(x, info.mean, info.std), dev))
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)
