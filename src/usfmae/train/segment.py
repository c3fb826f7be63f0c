"""Segmentation fine-tuning of an encoder (or the U-Net baseline), over folds, seeds and label fractions.

One *cell* is (fold, seed): the model is trained on the fold's training part (optionally a
stratified fraction of it) with Dice + cross-entropy, geometric augmentation applied identically to
image and mask, layer-wise lr decay, warmup + cosine; then scored on the fold's test part at each
image's original size (the prediction is mapped back through the fit with nearest neighbour).
Each cell writes one results JSON (``protocol.task = "segmentation"``; Dice, IoU, HD95 per image
and class, bootstrap CIs), its predicted masks, and the trained model (``usfmae.models.saved``).

Models: an MAE encoder (``usfmae pretrain`` checkpoint, released USF-MAE, facebookresearch MAE, or
a registry name from scratch) or the ViT-B/16 baseline (``vit_b16``) with a ``linear`` or
``pyramid`` head, frozen or fully fine-tuned; or ``unet_resnet50``.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from usfmae.config import check, opt, save_config, to_dict
from usfmae.contract import DataContract, imagenet_contract, normalise
from usfmae.data import seg_datasets
from usfmae.data.seg_transforms import augment_pair
from usfmae.eval import metrics as cls_metrics
from usfmae.eval import report, seg_metrics
from usfmae.fileio import RejectLog, atomic_path, ensure_output_dir, read_json
from usfmae.imaging import fit_geometry, unfit
from usfmae.models.encoder import load_encoder, pick_device
from usfmae.train import engine
from usfmae.train.finetune import inner_split, subset_indices
from usfmae.train.schedule import lr_at, param_groups

log = logging.getLogger(__name__)

SEG_BASELINES = ("unet_resnet50", "vit_b16")
HEADS = ("linear", "pyramid")


@dataclass
class SegmentConfig:
    """Settings of ``usfmae segment`` (one run = folds x seeds cells)."""

    data: str = opt("", "segmentation data KIND:PATH, KIND in busbra, mmotu, mmotu8, folder, csv, phantom")
    out: str = opt("segment_out", "output folder (one results JSON, mask folder and model per fold and seed)")
    model: str = opt("mae_vit_base_patch16", "encoder registry name (for --weights: architecture hint), "
                     "or a baseline: vit_b16 (with a head), unet_resnet50")
    weights: str | None = opt(None, "encoder checkpoint (ours, released USF-MAE, facebookresearch MAE); for a "
                              "baseline a local ImageNet weight file; none = random init")
    head: str = opt("pyramid", "decoder on the encoder: linear (probe) or pyramid (feature pyramid + "
                    "UPerNet-style fuse); ignored by unet_resnet50", choices=list(HEADS))
    freeze: bool = opt(False, "keep the encoder frozen and train the head only")
    img_size: int | None = opt(None, "input size (default: the encoder's data contract; baselines 224)")
    in_chans: int | None = opt(None, "input channels (default: the encoder's; baselines 3)")
    fit: str | None = opt(None, "how images become square: pad or stretch (default: the contract's)")
    epochs: int = opt(30, "training epochs")
    batch_size: int = opt(8, "images per optimiser step")
    lr: float = opt(3e-4, "peak learning rate")
    weight_decay: float = opt(0.05, "AdamW weight decay (not on biases, norms, tokens)")
    layer_decay: float = opt(0.75, "layer-wise lr decay for ViT encoders (1 = off)")
    warmup_fraction: float = opt(0.1, "linear warmup as a fraction of the optimiser steps")
    min_lr: float = opt(1e-6, "floor of the cosine decay")
    dice_weight: float = opt(1.0, "loss = cross-entropy + dice_weight x soft Dice loss")
    augment: bool = opt(True, "rotation +-15, left-right flip, zoom 0.7-1.3, the same warp for image and mask")
    val_fraction: float = opt(0.0, "inner validation split (grouped) to keep the best epoch by Dice (0 = last)")
    split: str = opt("auto", "auto (official partition if shipped, else k-fold), official, kfold",
                     choices=["auto", "official", "kfold"])
    k: int = opt(5, "folds for --split kfold (grouped by patient)")
    folds: list[int] = opt([], "run only these fold indices (default: all)")
    seeds: list[int] = opt([0], "seeds; each fold runs once per seed")
    label_fraction: float = opt(1.0, "fraction of the training images used (stratified, nested)")
    max_labels: int = opt(0, "use at most this many labelled training images per fold (0 = all)")
    spacing_mm: float | None = opt(None, "pixel spacing of the images in mm (adds HD95 in mm)")
    bootstrap: int = opt(1000, "bootstrap resamples for 95 percent confidence intervals (0 = none)")
    clip_grad: float = opt(1.0, "max gradient norm (0 disables clipping)")
    amp: bool = opt(True, "bf16 autocast on CUDA")
    device: str | None = opt(None, "cuda, cpu, ... (default: cuda when available)")
    label: str | None = opt(None, "row label in the report (default: model, head and mode)")
    save_model: bool = opt(True, "save each cell's trained model (safetensors + data contract + classes)")
    save_masks: bool = opt(True, "write each test image's predicted mask (label-index PNG, original size)")

    def __post_init__(self) -> None:
        check(bool(self.data), "give --data KIND:PATH (e.g. phantom:demo_out/phantom)")
        check(self.epochs > 0 and self.batch_size > 0 and self.lr > 0, "epochs, batch-size and lr must be positive")
        check(0 < self.layer_decay <= 1, "layer-decay must be in (0, 1]")
        check(0 <= self.warmup_fraction < 1, "warmup-fraction must be in [0, 1)")
        check(0 <= self.val_fraction < 0.5, "val-fraction must be in [0, 0.5)")
        check(0 < self.label_fraction <= 1, "label-fraction must be in (0, 1]")
        check(self.max_labels >= 0 and self.k >= 2 and len(self.seeds) > 0, "max-labels >= 0, k >= 2, one seed")
        check(self.dice_weight >= 0 and self.clip_grad >= 0, "dice-weight and clip-grad must be >= 0")
        check(self.fit in (None, "pad", "stretch"), f"fit must be pad or stretch, got {self.fit!r}")
        check(not (self.freeze and self.model == "unet_resnet50"), "--freeze needs a ViT encoder, not unet_resnet50")


# ------------------------------------------------------------------------------------------ model
def build_segmenter(cfg: SegmentConfig, num_classes: int) -> tuple[nn.Module, DataContract, dict[str, Any], str]:
    """The network, its input contract, its ``arch`` record (for saving) and a pretraining description."""
    from usfmae.models.seg_linear import LinearSegmenter
    from usfmae.models.seg_pyramid import PyramidSegmenter

    if cfg.model in SEG_BASELINES:
        size, chans = cfg.img_size or 224, cfg.in_chans or 3
        contract = imagenet_contract(size, chans, fit=cfg.fit or "pad")
        source = "imagenet" if cfg.weights else "scratch"
        if cfg.model == "unet_resnet50":
            from usfmae.models.seg_unet import create_unet

            model = create_unet(num_classes, chans, cfg.weights, size)
            return model, contract, {"family": "unet_resnet50", "num_classes": num_classes, "in_chans": chans,
                                     "img_size": size}, source
        from usfmae.models.baselines import create_baseline

        encoder = create_baseline("vit_b16", num_classes=1, in_chans=chans, weights_path=cfg.weights, img_size=size)
        encoder.reset_classifier(0)
        arch = {"family": "timm_vit", "img_size": size, "in_chans": chans}
    else:
        from usfmae.models.classifier import encoder_from_mae
        from usfmae.models.mae import MaskedAutoencoderViT

        overrides = {k: v for k, v in (("img_size", cfg.img_size), ("in_chans", cfg.in_chans)) if v is not None}
        mae, info = load_encoder(cfg.weights, cfg.model, **overrides)
        encoder = encoder_from_mae(mae) if isinstance(mae, MaskedAutoencoderViT) else mae
        contract = DataContract(info.img_size, info.in_chans, info.mean, info.std,
                                cfg.fit or getattr(info, "fit", None) or "pad")
        arch = {"family": "mae", "encoder_cfg": encoder.cfg.to_dict()}
        source = info.describe()
    if cfg.freeze:
        for p in encoder.parameters():
            p.requires_grad_(False)
    model = LinearSegmenter(encoder, num_classes) if cfg.head == "linear" else PyramidSegmenter(encoder, num_classes)
    arch.update(head=cfg.head, num_classes=num_classes)
    if cfg.head == "pyramid":
        arch.update(indices=model.indices, channels=model.channels)
    return model, contract, arch, source


def optimizer_groups(model: nn.Module, cfg: SegmentConfig) -> list[dict]:
    """Layer-decayed groups for ViT encoders (heads at the full lr), plain groups for the U-Net."""
    if cfg.model == "unet_resnet50":
        return param_groups(model, cfg.weight_decay)
    from usfmae.models.classifier import param_groups_layer_decay

    return param_groups_layer_decay(model, cfg.weight_decay, cfg.layer_decay)


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy + ``dice_weight`` x (1 - soft Dice averaged over the foreground classes).

    Args:
        logits: (B, K, H, W) float32; target: (B, H, W) integer labels.

    The soft Dice pools the whole batch per class (stable when an image lacks a class).
    """
    target = target.long()
    ce = F.cross_entropy(logits, target)
    if dice_weight == 0:
        return ce
    probs = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    denom = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return ce + dice_weight * (1.0 - dice[1:].mean())


# ----------------------------------------------------------------------------------------- train
def predict_masks(model: nn.Module, images: torch.Tensor, contract: DataContract, device: torch.device,
                  amp: bool, batch_size: int = 16) -> torch.Tensor:
    """Predicted label masks (N, S, S) uint8 of uint8 images (N, C, S, S), in order (argmax per batch)."""
    out = []
    for start in range(0, len(images), batch_size):
        logits = engine.predict(model, [images[start:start + batch_size]], device=device, amp=amp,
                                transform=lambda x: normalise(x, contract))
        out.append(logits.argmax(1).to(torch.uint8))
    return torch.cat(out) if out else torch.zeros((0,) + tuple(images.shape[-2:]), dtype=torch.uint8)


def _batch_dice(pred: torch.Tensor, truth: torch.Tensor, num_classes: int) -> float:
    """Mean per-image foreground Dice at model size (for picking the best epoch)."""
    values = [seg_metrics.image_metrics(p.numpy(), t.numpy(), num_classes)["dice"] for p, t in zip(pred, truth, strict=True)]
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else 0.0


def train_segmenter(model: nn.Module, contract: DataContract, cfg: SegmentConfig, images: torch.Tensor,
                    masks: torch.Tensor, val_images: torch.Tensor, val_masks: torch.Tensor, num_classes: int,
                    seed: int, device: torch.device) -> dict[str, Any]:
    """Train ``model`` in place with :func:`usfmae.train.engine.train_supervised_epoch`.

    Args:
        images, masks: uint8 (N, C, S, S) and (N, S, S) training pairs at model size.
        val_images, val_masks: inner validation pairs (may be empty: the last epoch is kept).

    Returns:
        History: epochs, best epoch, best validation Dice, per-epoch training loss.
    """
    generator = torch.Generator().manual_seed(seed)
    model.to(device)
    optimizer = torch.optim.AdamW(optimizer_groups(model, cfg), lr=cfg.lr)
    total = cfg.epochs * math.ceil(len(images) / cfg.batch_size)
    warmup, min_lr = int(round(cfg.warmup_fraction * total)), min(cfg.min_lr, cfg.lr)
    y_all = masks.long()

    def lr_fn(step: int) -> float:
        return lr_at(step, total, cfg.lr, warmup, min_lr)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            yield images[idx], y_all[idx]

    def transform(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if cfg.augment:
            x, y = augment_pair(x, y, generator)
        return normalise(x, contract), y

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return dice_ce_loss(logits, y, cfg.dice_weight)

    best: dict[str, Any] = {"dice": -1.0, "epoch": -1, "state": None}
    history, step = [], 0
    for epoch in range(cfg.epochs):
        result = engine.train_supervised_epoch(model, batches(), loss_fn=loss_fn, optimizer=optimizer,
                                               lr_at_step=lr_fn, start_step=step, device=device, amp=cfg.amp,
                                               clip_grad=cfg.clip_grad or None, transform=transform)
        step += result["steps"]
        history.append(result["loss"])
        if len(val_images):
            dice = _batch_dice(predict_masks(model, val_images, contract, device, cfg.amp), val_masks, num_classes)
            if dice > best["dice"]:
                best = {"dice": dice, "epoch": epoch,
                        "state": copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})}
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    return {"epochs_run": len(history), "best_epoch": best["epoch"] if best["epoch"] >= 0 else len(history) - 1,
            "best_val_dice": best["dice"] if best["epoch"] >= 0 else None, "train_loss": history}


# ------------------------------------------------------------------------------------------- run
_RECIPE_SKIP = ("data", "out", "folds", "seeds", "device", "label", "save_model", "save_masks")


def row_label(cfg: SegmentConfig) -> str:
    """Row label of the report: ``--label``, else model, head and mode, e.g. ``mae_vit_base_patch16 pyramid``."""
    if cfg.label:
        return cfg.label
    if cfg.model == "unet_resnet50":
        return "unet_resnet50" + ("" if cfg.weights else " (scratch)")
    scratch = " (scratch)" if cfg.weights is None and cfg.model != "vit_b16" else ""
    return f"{cfg.model}{scratch} {cfg.head}{' (frozen)' if cfg.freeze else ''}"


def _fraction(cfg: SegmentConfig, n_train: int) -> float:
    """The label fraction a result records (``max_labels`` turned into a fraction of the fold)."""
    if cfg.max_labels and n_train > cfg.max_labels:
        return round(cfg.label_fraction * cfg.max_labels / n_train, 6)
    return cfg.label_fraction


def cell_stub(cfg: SegmentConfig, ds: seg_datasets.SegDataset, fold: Any, seed: int) -> dict[str, Any]:
    fraction = _fraction(cfg, len(subset_indices(ds, np.asarray(fold.train), cfg.label_fraction, seed)))
    return {"dataset": ds.name, "model": row_label(cfg), "fold": fold.index, "seed": seed,
            "protocol": {"label_fraction": fraction}}


def run(cfg: SegmentConfig) -> dict[str, Any]:
    """Run every (fold, seed) cell; a cell whose results JSON exists is skipped (resume).

    Returns:
        ``{"cells": [result path, ...], "skipped": n, "summary": mean/std of the scalar metrics}``.
    """
    out = ensure_output_dir(cfg.out)
    save_config(cfg, out / "config.yaml")
    ds = seg_datasets.load_seg_dataset(cfg.data)
    folds = seg_datasets.official_or_kfold(ds, cfg.split, cfg.k, seed=cfg.seeds[0])
    if cfg.folds:
        missing = sorted(set(cfg.folds) - {f.index for f in folds})
        check(not missing, f"fold(s) {missing} do not exist; {ds.name} has {len(folds)}")
        folds = [f for f in folds if f.index in cfg.folds]
    device = pick_device(cfg.device)
    rejects = RejectLog(out / "rejects.jsonl")
    cache: dict[Any, Any] = {}
    paths, skipped = [], 0
    for seed in cfg.seeds:
        for fold in folds:
            path = out / report.result_filename(cell_stub(cfg, ds, fold, seed))
            if path.is_file():
                skipped += 1
            else:
                result = run_cell(cfg, ds, fold, seed, device, rejects, cache, out)
                report.save_result(out, result)
                log.info("%s on %s fold %d seed %d: Dice %.3f", result["model"], ds.name, fold.index, seed,
                         result["metrics"]["dice"])
            paths.append(path)
    summary = cls_metrics.aggregate([read_json(p)["metrics"] for p in paths]) if paths else {}
    return {"cells": [str(p) for p in paths], "skipped": skipped, "summary": summary}


def _pairs(ds: seg_datasets.SegDataset, contract: DataContract, rejects: RejectLog,
           cache: dict[Any, Any]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Every pair at the model's size (decoded once per contract), and a map record -> row (-1: rejected)."""
    key = (contract.img_size, contract.in_chans, contract.fit)
    if key not in cache:
        images, masks, kept = seg_datasets.load_pairs(ds, range(len(ds)), contract.img_size, contract.in_chans,
                                                      contract.fit, rejects)
        row = np.full(len(ds), -1, dtype=np.int64)
        row[kept] = np.arange(len(kept))
        cache[key] = (torch.from_numpy(images), torch.from_numpy(masks), row)
    return cache[key]


def run_cell(cfg: SegmentConfig, ds: seg_datasets.SegDataset, fold: Any, seed: int, device: torch.device,
             rejects: RejectLog, cache: dict[Any, Any], out: Path) -> dict[str, Any]:
    """Train and score one (fold, seed) cell; returns the results record (not yet written)."""
    from usfmae.models.saved import save_task_model

    torch.manual_seed(seed)
    started = time.perf_counter()
    train_idx = subset_indices(ds, np.asarray(fold.train), cfg.label_fraction, seed)
    fraction = _fraction(cfg, len(train_idx))
    if cfg.max_labels and len(train_idx) > cfg.max_labels:
        train_idx = np.sort(np.random.default_rng(seed).choice(train_idx, cfg.max_labels, replace=False))
    model, contract, arch, source = build_segmenter(cfg, ds.num_classes)
    images, masks, row = _pairs(ds, contract, rejects, cache)
    train_idx, test_idx = train_idx[row[train_idx] >= 0], np.asarray(fold.val)[row[np.asarray(fold.val)] >= 0]
    check(len(train_idx) > 0 and len(test_idx) > 0, f"{ds.name} fold {fold.index}: no readable image/mask pairs")
    inner_tr, inner_va = inner_split(ds.labels[train_idx], ds.groups[train_idx], cfg.val_fraction, seed)
    fit_idx, val_idx = train_idx[inner_tr], train_idx[inner_va]
    training = train_segmenter(model, contract, cfg, images[row[fit_idx]], masks[row[fit_idx]],
                               images[row[val_idx]], masks[row[val_idx]], ds.num_classes, seed, device)
    predicted = predict_masks(model, images[row[test_idx]], contract, device, cfg.amp).numpy()
    records = [ds.records[i] for i in test_idx]
    truths = [seg_datasets.read_mask(r, ds) for r in records]
    preds = [unfit(p, fit_geometry(*t.shape, contract.img_size, contract.fit)) for p, t in zip(predicted, truths, strict=True)]
    label = row_label(cfg)
    stub = cell_stub(cfg, ds, fold, seed)
    cell_dir = out / Path(report.result_filename(stub)).stem
    mask_paths = _write_masks(cell_dir / "masks", records, preds) if cfg.save_masks else None
    values = seg_metrics.segmentation_metrics(preds, truths, ds.num_classes, ds.classes,
                                              [cfg.spacing_mm] * len(preds) if cfg.spacing_mm else None,
                                              n_boot=cfg.bootstrap, seed=seed)
    recipe = {k: v for k, v in to_dict(cfg).items() if k not in _RECIPE_SKIP}
    protocol = {"task": "segmentation", "input_size": contract.img_size, "in_chans": contract.in_chans,
                "fit": contract.fit, "pretraining": source, "weights": cfg.weights, "architecture": cfg.model,
                "head": None if cfg.model == "unet_resnet50" else cfg.head,
                "mode": "frozen" if cfg.freeze else "finetune", "label_fraction": fraction,
                "n_labels": int(len(train_idx)), "dataset_protocol": ds.protocol, "recipe": recipe}
    training.update(n_train=int(len(fit_idx)), n_val=int(len(val_idx)), n_test=int(len(test_idx)),
                    device=str(device), seconds=round(time.perf_counter() - started, 2))
    if cfg.save_model:
        save_task_model(cell_dir / "model", model.cpu(), kind="segmenter", arch=arch, contract=contract,
                        classes=ds.classes, protocol={**protocol, "dataset": ds.name, "fold": fold.index,
                                                      "seed": seed})
        training["model"] = str(cell_dir / "model")
    predictions = {"id": [str(r.image) for r in records], "group": [str(r.group) for r in records],
                   "mask_true": [str(r.mask) for r in records], "mask_pred": mask_paths,
                   "dice": values["per_image"]["dice"]}
    result = report.make_result(model=label, dataset=ds.name, fold=fold.index, seed=seed, metrics=values,
                                protocol=protocol, predictions=predictions)
    result["training"] = training
    return result


def _write_masks(folder: Path, records: list[Any], preds: list[np.ndarray]) -> list[str]:
    """Predicted label-index PNGs at each image's original size; returns their paths."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for record, pred in zip(records, preds, strict=True):
        path = folder / f"{record.image.stem}.png"
        with atomic_path(path) as tmp:
            cv2.imwrite(str(tmp), pred.astype(np.uint8))
        paths.append(str(path))
    return paths
