"""The Python API: what a notebook or script calls, the same functions the CLI verbs run.

    import usfmae
    encoder, info = usfmae.load_encoder("export/")              # a file, a folder, or hf-hub:ORG/NAME
    features, paths = usfmae.embed("my_scans/", encoder=encoder)  # (N, D) float32, files in order
    result = usfmae.finetune("folder:my_labelled_set", weights="export/", epochs=5, out="runs/ft")
    probs, paths = usfmae.predict(result.model, "new_scans/")   # (N, classes) probabilities
    maps = usfmae.explain(result.model, "new_scans/")           # attention rollout per image

``import usfmae`` stays light: these names are loaded on first use (``usfmae.__getattr__``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from usfmae.config import build_config
from usfmae.contract import DataContract, normalise, prepare
from usfmae.data.images import preload_images
from usfmae.downstream.embed import embed_inputs, extract_features_from_files
from usfmae.errors import DataError, UsfmaeError
from usfmae.eval import explain as _explain
from usfmae.models import registry
from usfmae.models.encoder import EncoderInfo, extract_features, model_contract, pick_device
from usfmae.models.encoder import load_encoder as _load_encoder
from usfmae.models.saved import load_task_model
from usfmae.train import finetune as _finetune
from usfmae.train import segment as _segment
from usfmae.train.watch import EpochLog

__all__ = ["create_model", "list_models", "load_encoder", "embed", "finetune", "segment", "predict", "explain",
           "FinetuneResult", "SegmentResult", "Embeddings"]

Images = str | Path | Sequence[str | Path] | np.ndarray | torch.Tensor


def list_models() -> list[str]:
    """Registered MAE variants (``describe_model(name)`` says what each is)."""
    return registry.list_models()


def create_model(name: str = "mae_vit_micro_patch8_64", **overrides: Any) -> nn.Module:
    """A randomly initialised MAE variant, e.g. ``create_model("mae_vit_base_patch16", in_chans=3)``.

    Args:
        name: one of :func:`list_models`.
        **overrides: any :class:`usfmae.models.mae.MAEConfig` field (``img_size``, ``mask_ratio``, ...).
    """
    return registry.create_model(name, **overrides)


def load_encoder(path_or_hub_id: str | Path | None, model: str | None = None,
                 **overrides: Any) -> tuple[nn.Module, EncoderInfo]:
    """An encoder and its input contract from any weights usfmae reads.

    Args:
        path_or_hub_id: our checkpoint, the released USF-MAE file, a facebookresearch MAE or Hugging
            Face ViTMAE checkpoint, a folder from ``usfmae export`` / ``save_pretrained``, or
            ``hf-hub:ORG/NAME``; None builds ``model`` from scratch.
        model: registry name when the file does not record its architecture.

    Returns:
        ``(model, info)``: the model has ``forward_features`` ((B, C, H, W) -> (B, 1 + L, D)); ``info``
        has ``img_size``, ``in_chans``, ``mean``, ``std``, ``name`` and where the weights came from.
    """
    return _load_encoder(path_or_hub_id, model, **overrides)


class Embeddings(NamedTuple):
    """``features`` float32 (N, D) and the ``paths`` they belong to (empty for array input)."""

    features: np.ndarray
    paths: list[str]


def _contract(model: nn.Module, info: EncoderInfo | None) -> DataContract:
    if info is not None:
        return info.contract
    return model_contract(getattr(model, "encoder", model))


def _array_batch(images: np.ndarray | torch.Tensor, contract: DataContract) -> torch.Tensor:
    """uint8 (N, H, W[, C]) images -> uint8 (N, C, size, size) through the one fit policy."""
    array = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.dtype != np.uint8:
        raise DataError(f"image arrays must be uint8 (N, H, W[, C]), got {array.dtype}")
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4:
        raise DataError(f"image arrays must be (N, H, W[, C]), got shape {array.shape}")
    return torch.stack([prepare(img, contract) for img in array]) if len(array) else torch.zeros(
        (0, contract.in_chans, contract.img_size, contract.img_size), dtype=torch.uint8)


def _paths(images: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(images, (str, Path)):
        path = Path(images)
        return [path] if path.is_file() and path.suffix != ".parquet" else embed_inputs(images)
    return [Path(p) for p in images]


def embed(images: Images, weights: str | Path | None = None, *, model: str | None = None,
          encoder: nn.Module | None = None, info: EncoderInfo | None = None, pool: str = "cls",
          batch_size: int = 64, device: str | None = None, num_workers: int = 0,
          progress: bool = False) -> Embeddings:
    """Features of images through a frozen encoder (no masking, eval mode), in input order.

    Args:
        images: a folder (recursive; usfmae's own ``masks/`` and contact sheets are skipped), a
            ``.parquet`` manifest, a ``KIND:PATH`` dataset, a list of files, or a uint8 array
            (N, H, W[, C]) fitted to the model like files are.
        weights: see :func:`load_encoder`; or pass an already loaded ``encoder`` (and its ``info``).
        pool: ``"cls"`` or ``"mean"`` of the patch tokens.

    Returns:
        :class:`Embeddings` ``(features (N, D) float32, paths)``; unreadable files are skipped with
        one log line each, so ``paths`` says which rows are which.
    """
    if encoder is None:
        encoder, info = _load_encoder(weights, model)
    contract = _contract(encoder, info)
    if isinstance(images, (np.ndarray, torch.Tensor)):
        batch = _array_batch(images, contract)
        feats = extract_features(encoder, batch, contract.mean, contract.std, pool, batch_size, device, progress)
        return Embeddings(feats, [])
    paths = _paths(images)
    feats, kept = extract_features_from_files(encoder, paths, contract, pool, batch_size, device, num_workers,
                                              None, progress)
    return Embeddings(feats, [str(paths[i]) for i in kept])


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns: the trained model(s), their metrics and the results files."""

    model: nn.Module  # the network of the first (fold, seed) cell, in eval mode
    info: EncoderInfo
    metrics: dict[str, Any]  # over cells: {"runs", "mean": {name: v}, "std": {...}} (usfmae.eval.metrics.aggregate)
    results: list[str]  # one results JSON per cell (``usfmae report`` reads the folder)
    models: dict[tuple[int, int], nn.Module] = field(default_factory=dict)  # (fold, seed) -> model


def finetune(data: str, weights: str | Path | None = None, *, model: str | None = None,
             out: str | Path = "finetune_out", on_epoch_end: Any = None, tensorboard: bool = False,
             **settings: Any) -> FinetuneResult:
    """Fine-tune an encoder (or a CNN baseline) on a labelled dataset: ``usfmae finetune`` as a function.

    Args:
        data: ``KIND:PATH`` (``folder:DIR`` with one sub-folder per class, ``csv:labels.csv``,
            ``busbra:...``, ``phantom:DIR``, ...).
        weights: encoder weights (see :func:`load_encoder`); None trains ``model`` from scratch.
        model: registry or baseline name; default: the architecture the weights record.
        out: results folder (one JSON per fold and seed, ``config.yaml``, rejects).
        on_epoch_end: ``f(epoch, record)`` after every epoch (record: train_loss, val_f1, lr, fold, seed);
            every epoch is also logged to ``out/log.jsonl`` and drawn in ``out/learning_curves.png``.
        tensorboard: also write TensorBoard event files to ``out/tensorboard``.
        **settings: any :class:`usfmae.train.finetune.FinetuneConfig` field (``epochs``, ``lr``,
            ``split``, ``k``, ``folds``, ``seeds``, ``mode``, ``img_size``, ...).

    Returns:
        :class:`FinetuneResult` with the trained models; cells are trained even if ``out`` holds
        their results already.
    """
    values = {"data": data, "weights": str(weights) if weights is not None else None, "out": str(out), **settings}
    if model is not None:
        values["model"] = model
    cfg = build_config(_finetune.FinetuneConfig, None, values)
    watch = EpochLog(cfg.out, tensorboard=tensorboard, then=on_epoch_end)
    try:
        done = _finetune.run(cfg, on_epoch_end=watch, keep_models=True)
    finally:
        watch.close()
    models = {key: m.eval() for key, (m, _) in done["models"].items()}
    if not models:
        raise UsfmaeError(f"{data}: no fold was trained")
    first = next(iter(done["models"].values()))
    return FinetuneResult(model=first[0].eval(), info=first[1], metrics=done["summary"], results=done["cells"],
                          models=models)



@dataclass
class SegmentResult:
    """What :func:`segment` returns."""

    model: nn.Module  # the segmenter of the first (fold, seed) cell, in eval mode
    card: dict[str, Any]  # its model.json: architecture, data contract, classes, protocol
    metrics: dict[str, Any]  # over cells: {"runs", "mean": {name: v}, "std": {...}}
    results: list[str]  # one results JSON per cell (``usfmae report`` reads the folder)
    models: dict[tuple[int, int], str] = field(default_factory=dict)  # (fold, seed) -> saved model folder


def segment(data: str, weights: str | Path | None = None, *, model: str | None = None,
            out: str | Path = "segment_out", **settings: Any) -> SegmentResult:
    """Train a segmenter (encoder + head, or U-Net ResNet-50): ``usfmae segment`` as a function.

    Args:
        data: ``KIND:PATH`` (``busbra:...``, ``mmotu:...``, ``folder:DIR`` with images/ + masks/,
            ``csv:pairs.csv``, ``phantom:DIR``).
        weights: encoder weights (see :func:`load_encoder`); None trains from scratch.
        model: registry name or ``unet_resnet50``; default: the segment verb's default.
        out: results folder (one JSON, masks and a saved model per fold and seed).
        **settings: any :class:`usfmae.train.segment.SegmentConfig` field (``head``, ``epochs``,
            ``freeze``, ``folds``, ``seeds``, ``max_labels``, ...).

    Returns:
        :class:`SegmentResult`; the model is reloaded from the first cell's saved files, so it is
        exactly what ``usfmae predict`` applies. Finished cells are resumed, not retrained.
    """
    values = {"data": data, "weights": str(weights) if weights is not None else None, "out": str(out), **settings}
    if model is not None:
        values["model"] = model
    cfg = build_config(_segment.SegmentConfig, None, values)
    if not cfg.save_model:
        raise UsfmaeError("segment() returns the trained model: leave save_model on")
    done = _segment.run(cfg)
    models = {}
    for path in done["cells"]:
        result = json.loads(Path(path).read_text())
        saved = result.get("training", {}).get("model")
        if saved:
            models[(int(result["fold"]), int(result["seed"]))] = saved
    if not models:
        raise UsfmaeError(f"{data}: no saved segmenter in {out} (cells trained without save_model?)")
    first, card = load_task_model(next(iter(models.values())))
    return SegmentResult(model=first.eval(), card=card, metrics=done["summary"], results=done["cells"],
                         models=models)


@torch.no_grad()
def predict(model: nn.Module, images: Images, *, info: EncoderInfo | None = None, batch_size: int = 64,
            device: str | None = None) -> Embeddings:
    """Class probabilities of a fine-tuned classifier (``FinetuneResult.model``) for images.

    Args:
        model: a classifier ``(B, C, H, W) normalised -> logits (B, K)``.
        images: as for :func:`embed`.
        info: the input contract; default: the one the model's encoder carries.

    Returns:
        :class:`Embeddings` whose ``features`` are probabilities (N, K) summing to 1 per row.
    """
    contract = _contract(model, info)
    if isinstance(images, (np.ndarray, torch.Tensor)):
        batch, paths = _array_batch(images, contract), []
    else:
        files = _paths(images)
        batch, kept = preload_images(files, contract.img_size, contract.in_chans, fit=contract.fit)
        paths = [str(files[i]) for i in kept]
    dev = pick_device(device)
    was_training = model.training
    model.eval().to(dev)
    out = [torch.softmax(model(normalise(batch[i:i + batch_size].to(dev), contract)).float(), dim=1).cpu()
           for i in range(0, len(batch), batch_size)]
    model.train(was_training)
    probs = torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)
    return Embeddings(probs, paths)


def explain(model: nn.Module, images: Images, *, method: str = "rollout", info: EncoderInfo | None = None,
            target: int | None = None, device: str | None = None) -> np.ndarray:
    """Where the model looked: one map per image at the model's input size, values in [0, 1].

    Args:
        model: a ViT encoder or classifier (``method`` ``"rollout"`` or ``"cls"``: the last block's
            CLS attention), or a CNN classifier (``"gradcam"``, for ``target`` class or the predicted one).
        images: as for :func:`embed`.

    Returns:
        float32 (N, size, size); see :mod:`usfmae.eval.explain`.
    """
    contract = _contract(model, info)
    if isinstance(images, (np.ndarray, torch.Tensor)):
        batch = _array_batch(images, contract)
    else:
        batch, _ = preload_images(_paths(images), contract.img_size, contract.in_chans, fit=contract.fit)
    dev = pick_device(device)
    x = normalise(batch.to(dev), contract)
    return _explain.explain(model.to(dev), x, method=method, target=target).cpu().numpy()
