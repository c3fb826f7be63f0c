"""Supervised evaluation of an encoder: fine-tuning, linear probe and k-NN, over folds and seeds.

One *cell* is (fold, seed): the model is trained on the fold's training part (optionally a
stratified fraction of its labels), early-stopped on an inner validation split that is grouped by
patient, and scored on the fold's test part. Each cell writes one results JSON (predictions,
metrics with bootstrap confidence intervals, protocol) through :mod:`usfmae.eval.report`.

Models: an MAE encoder (``usfmae pretrain`` checkpoint, the released USF-MAE file, a
facebookresearch MAE checkpoint, or a registry name from scratch) with a CLS or mean-pool head,
or a baseline (``vgg19``, ``resnet50``, ``vit_b16``) trained with the same protocol.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedGroupKFold
from torch import nn

from usfmae.config import check, opt, save_config, to_dict
from usfmae.contract import normalise
from usfmae.data import labelled
from usfmae.data.images import preload_images
from usfmae.data.transforms import augment_batch
from usfmae.eval import metrics, report
from usfmae.eval.probes import fit_probe, probe_recipe
from usfmae.fileio import RejectLog, read_json
from usfmae.models.adapters import ADAPTERS
from usfmae.models.baselines import create_baseline
from usfmae.models.checkpoint import architecture_name
from usfmae.models.classifier import EncoderClassifier, param_groups_layer_decay
from usfmae.models.encoder import EncoderInfo, extract_features, load_encoder, model_contract, pick_device
from usfmae.runtime import configure_threads
from usfmae.train import engine
from usfmae.train.schedule import lr_at, param_groups

log = logging.getLogger(__name__)

BASELINES = ("vgg19", "resnet50", "vit_b16")
MODES = ("finetune", "linear", "knn")


@dataclass
class FinetuneConfig:
    """Settings of ``usfmae finetune`` (one run = folds x seeds cells)."""

    data: str = opt("", "labelled data KIND:PATH, KIND in busbra, mmotu, gist514, folder, csv, phantom")
    out: str = opt("finetune_out", "output folder (one results JSON per fold and seed)")
    model: str | None = opt(None, "encoder registry name (for --weights: architecture hint; default: what the "
                            "weights record, without weights mae_vit_base_patch16), a baseline: vgg19, "
                            "resnet50, vit_b16, or a foundation model with its published "
                            f"--weights: {', '.join(ADAPTERS)}")
    weights: str | None = opt(None, "encoder checkpoint (ours, released USF-MAE, facebookresearch MAE); for a "
                              "baseline a local ImageNet weight file; none = random init")
    mode: str = opt("finetune", "finetune (train everything), linear (logistic probe on frozen features), knn",
                    choices=MODES)
    pool: str = opt("cls", "pooled feature: CLS token or mean of patch tokens", choices=["cls", "mean"])
    img_size: int | None = opt(None, "input size (default: the encoder's data contract; baselines 224)")
    in_chans: int | None = opt(None, "input channels (default: the encoder's; baselines 3)")
    fit: str | None = opt(None, "how images become square: pad (aspect kept) or stretch (default: the "
                          "encoder's pretraining fit; baselines pad)", choices=["pad", "stretch"])
    epochs: int = opt(30, "maximum training epochs")
    batch_size: int = opt(32, "images per optimiser step")
    lr: float = opt(3e-4, "peak learning rate (absolute; the paper sweeps 3e-4 and 1e-3)")
    weight_decay: float = opt(0.01, "AdamW weight decay (not on biases, norms, tokens)")
    layer_decay: float = opt(0.75, "layer-wise lr decay for ViT encoders (1 = off)")
    warmup_fraction: float = opt(0.1, "linear warmup as a fraction of the optimiser steps")
    min_lr: float = opt(1e-6, "floor of the cosine decay")
    augment: bool = opt(True, "the paper's augmentations: rotation 0-90, flips, random resized crop")
    class_weighting: bool = opt(False, "weight the loss by inverse class frequency")
    patience: int = opt(5, "early stopping: epochs without validation macro-F1 gain (0 = off)")
    val_fraction: float = opt(0.15, "inner validation split of each training fold, grouped by patient")
    split: str = opt("auto", "auto (official partition if shipped, else k-fold), official, kfold",
                     choices=["auto", "official", "kfold"])
    k: int = opt(5, "folds for --split kfold (stratified, grouped by patient)")
    folds: list[int] = opt([], "run only these fold indices (default: all)")
    seeds: list[int] = opt([0], "seeds; each fold runs once per seed")
    label_fraction: float = opt(1.0, "fraction of the training labels used (stratified, nested across fractions)")
    knn_k: int = opt(20, "neighbours for --mode knn (cosine)")
    bootstrap: int = opt(1000, "bootstrap resamples for 95 percent confidence intervals (0 = none)")
    device: str | None = opt(None, "cuda, cpu, ... (default: cuda when available)")
    num_workers: int = opt(0, "image decoding workers")
    source: str | None = opt(None, "pretraining-source label recorded in results (default: from weights)")
    label: str | None = opt(None, "row label in the report (default: model, source and method)")
    clip_grad: float = opt(1.0, "max gradient norm (0 disables clipping)")
    amp: bool = opt(True, "bf16 autocast on CUDA")
    save_model: bool = opt(True, "save each cell's fine-tuned model (usfmae predict / export read it)")
    small_input: bool = opt(False, "resnet50 only: stride-1 stem, no max-pool, for small (e.g. 64 px) inputs; "
                            "4x the compute")

    def __post_init__(self) -> None:
        if self.model is None and self.weights is None:
            self.model = "mae_vit_base_patch16"  # the paper's architecture, from scratch (the control)
        check(bool(self.data), "give --data KIND:PATH (e.g. phantom:demo_out/phantom)")
        check(self.epochs > 0, "epochs must be positive")
        check(self.batch_size > 0, "batch-size must be positive")
        check(self.lr > 0, "lr must be positive")
        check(0 < self.layer_decay <= 1, "layer-decay must be in (0, 1]")
        check(0 <= self.warmup_fraction < 1, "warmup-fraction must be in [0, 1)")
        check(0 <= self.val_fraction < 0.5, "val-fraction must be in [0, 0.5)")
        check(0 < self.label_fraction <= 1, "label-fraction must be in (0, 1]")
        check(self.k >= 2, "k must be at least 2")
        check(self.knn_k >= 1, "knn-k must be positive")
        check(len(self.seeds) > 0, "give at least one seed")
        check(self.clip_grad >= 0, "clip-grad must be >= 0")
        check(self.mode == "finetune" or self.model not in BASELINES,
              "linear/knn modes need an MAE encoder, not a baseline")


# ------------------------------------------------------------------------------------------ data
def dataset_folds(ds: Any, split: str, k: int, seed: int = 0) -> list[Any]:
    """The folds to evaluate: the dataset's official partition, or a seeded grouped k-fold."""
    if split == "official" or (split == "auto" and ds.official):
        return labelled.official_folds(ds)
    return labelled.split_folds(ds, k, seed)


def subset_indices(ds: Any, indices: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified, nested ``fraction`` of ``indices`` (via ``labelled.label_fraction_subset``)."""
    if fraction >= 1.0:
        return np.asarray(indices)
    position = {id(ds.records[i]): i for i in indices}
    chosen = labelled.label_fraction_subset([ds.records[i] for i in indices], fraction, seed)
    return np.array(sorted(position[id(r)] for r in chosen), dtype=np.int64)


def inner_split(labels: np.ndarray, groups: np.ndarray, val_fraction: float,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split positions ``0..n-1`` into (train, val) with patients kept together, stratified.

    Returns an empty val when the split is off or the set is too small to hold out at least two
    images per class (early stopping is then disabled, and the protocol says so).
    """
    n = len(labels)
    n_classes = len(np.unique(labels))
    if val_fraction <= 0 or n * val_fraction < 2 * n_classes or len(np.unique(groups)) < 3:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    splits = max(2, int(round(1.0 / val_fraction)))
    splits = min(splits, len(np.unique(groups)))
    splitter = StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=seed)
    train, val = next(splitter.split(np.zeros((n, 1)), labels, groups))
    return np.sort(train), np.sort(val)


# ----------------------------------------------------------------------------------------- model
def build_classifier(cfg: FinetuneConfig, num_classes: int) -> tuple[nn.Module, EncoderInfo]:
    """The network to fine-tune and its input contract."""
    if cfg.model in BASELINES:
        chans, size = cfg.in_chans or 3, cfg.img_size or 224
        model = create_baseline(cfg.model, num_classes=num_classes, in_chans=chans, weights_path=cfg.weights,
                                img_size=size, small_input=cfg.small_input)
        contract = model_contract(model, size, chans)
        contract = contract.replace(fit=cfg.fit) if cfg.fit else contract
        source = "imagenet" if cfg.weights else "scratch"
        return model, EncoderInfo(cfg.model, contract, cfg.source or source)
    overrides = {k: v for k, v in (("img_size", cfg.img_size), ("in_chans", cfg.in_chans), ("fit", cfg.fit))
                 if v is not None}
    mae, info = load_encoder(cfg.weights, cfg.model, **overrides)
    if cfg.source:
        info.source = cfg.source
    return EncoderClassifier(mae, num_classes, pool=cfg.pool), info


def optimizer_groups(model: nn.Module, cfg: FinetuneConfig) -> list[dict]:
    """Layer-decayed groups for our encoder classifier; plain decay/no-decay groups for baselines."""
    if cfg.model not in BASELINES:
        return param_groups_layer_decay(model, cfg.weight_decay, cfg.layer_decay)
    return param_groups(model, cfg.weight_decay)


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse class frequency ``(num_classes,)``, mean 1 over the classes present; absent classes get 0."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    inv = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max(1, (counts > 0).sum()), 0.0)
    return torch.tensor(inv, dtype=torch.float32)


def class_probabilities(model: nn.Module, images: torch.Tensor, info: EncoderInfo, device: torch.device,
                        amp: bool = True, batch_size: int = 64) -> np.ndarray:
    """Class probabilities ``(N, K)`` float64 for uint8 images ``(N, C, H, W)`` (eval mode, in order)."""
    chunks = (images[i:i + batch_size] for i in range(0, len(images), batch_size))
    logits = engine.predict(model, chunks, device=device, amp=amp,
                            transform=lambda x: normalise(x, info.contract))
    return torch.softmax(logits, dim=1).double().numpy() if len(logits) else np.zeros((0, 0))


# Called after every epoch with (epoch, record); record has epoch, train_loss, val_f1 (None without a
# validation split), lr (at the epoch's last step), steps and seconds. Loggers plug in here.
EpochCallback = Callable[[int, dict[str, Any]], None]


def train_classifier(model: nn.Module, info: EncoderInfo, cfg: FinetuneConfig, images: torch.Tensor,
                     labels: np.ndarray, val_images: torch.Tensor, val_labels: np.ndarray,
                     num_classes: int, seed: int, device: torch.device,
                     on_epoch_end: EpochCallback | None = None) -> dict[str, Any]:
    """Fine-tune ``model`` in place with :func:`usfmae.train.engine.train_supervised_epoch`; keep the
    weights of the best validation epoch.

    Args:
        images, labels: uint8 ``(N, C, H, W)`` and ``(N,)`` training data.
        val_images, val_labels: inner validation split (may be empty: no early stopping).
        on_epoch_end: called with ``(epoch, record)`` after each epoch (see :data:`EpochCallback`).

    Returns:
        History: epochs run, best epoch, best validation macro-F1, per-epoch train loss.
    """
    # One generator draws the epoch orders and the augmentations, so a seed fixes the whole run.
    generator = torch.Generator().manual_seed(seed)
    model.to(device)
    optimizer = torch.optim.AdamW(optimizer_groups(model, cfg), lr=cfg.lr)
    steps_per_epoch = math.ceil(len(images) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_fraction * total))
    min_lr = min(cfg.min_lr, cfg.lr)
    weight = class_weights(labels, num_classes).to(device) if cfg.class_weighting else None
    criterion = nn.CrossEntropyLoss(weight=weight)
    y_all = torch.as_tensor(labels, dtype=torch.long)

    def lr_fn(step: int) -> float:
        return lr_at(step, total, cfg.lr, warmup, min_lr)

    def epoch_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            yield images[idx], y_all[idx]

    def transform(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if cfg.augment:
            x = augment_batch(x, generator)
        return normalise(x, info.contract), y

    best = {"f1": -1.0, "epoch": -1, "state": None}
    history: list[float] = []
    step, stale = 0, 0
    for epoch in range(cfg.epochs):
        started = time.perf_counter()
        result = engine.train_supervised_epoch(
            model, epoch_batches(), loss_fn=criterion, optimizer=optimizer, lr_at_step=lr_fn, start_step=step,
            device=device, amp=cfg.amp, clip_grad=cfg.clip_grad or None, transform=transform)
        step += result["steps"]
        history.append(result["loss"])
        f1 = None
        if len(val_images):
            val_pred = class_probabilities(model, val_images, info, device, cfg.amp).argmax(1)
            f1 = float(f1_score(val_labels, val_pred, average="macro", zero_division=0))
        if on_epoch_end is not None:
            on_epoch_end(epoch, {"epoch": epoch, "train_loss": result["loss"], "val_f1": f1, "lr": lr_fn(step - 1),
                                 "steps": step, "seconds": time.perf_counter() - started})
        if f1 is None:
            continue
        if f1 > best["f1"]:
            best = {"f1": f1, "epoch": epoch, "state": copy.deepcopy({k: v.detach().cpu()
                                                                         for k, v in model.state_dict().items()})}
            stale = 0
        else:
            stale += 1
            if cfg.patience and stale >= cfg.patience:
                break
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    return {"epochs_run": len(history), "best_epoch": best["epoch"] if best["epoch"] >= 0 else len(history) - 1,
            "best_val_f1": best["f1"] if best["epoch"] >= 0 else None, "train_loss": history}


# ------------------------------------------------------------------------------------------- run
MODE_TITLES = {"finetune": "", "linear": " (linear probe)", "knn": " (k-NN)"}
_RECIPE_SKIP = ("data", "out", "folds", "seeds", "device", "num_workers", "label", "save_model")  # not part of the protocol


def row_label(cfg: FinetuneConfig, info_source: str | None = None) -> str:
    """Row label of the report: ``--label``, else the model name, its source and the method."""
    if cfg.label:
        return cfg.label
    scratch = " (scratch)" if (cfg.weights is None and cfg.model not in BASELINES) else ""
    # Without --model the weights name their architecture (a label never claims one they lack).
    name = cfg.model or architecture_name(cfg.weights)
    return f"{name}{scratch}{MODE_TITLES[cfg.mode]}"


def cell_path(out: Path, dataset: str, label: str, fold: int, seed: int, fraction: float) -> Path:
    """Where one cell's results JSON goes (the report's canonical name; what resume looks for)."""
    stub = {"dataset": dataset, "model": label, "fold": fold, "seed": seed, "protocol": {"label_fraction": fraction}}
    return out / report.result_filename(stub)


def run(cfg: FinetuneConfig, on_epoch_end: EpochCallback | None = None,
        keep_models: bool = False) -> dict[str, Any]:
    """Run every (fold, seed) cell; a cell whose results JSON exists is skipped (resume).

    Args:
        on_epoch_end: called after every fine-tuning epoch of every cell with ``(epoch, record)``;
            the record also names the cell's ``fold`` and ``seed`` (loggers plug in here).
        keep_models: also return the trained models (``usfmae.api.finetune``); cells are then
            retrained even when their results exist, since a results file holds no weights.

    Returns:
        ``{"cells": [result path, ...], "skipped": n, "summary": metrics.aggregate over cells}``, plus
        ``"models": {(fold, seed): (model, EncoderInfo)}`` with ``keep_models``.
    """
    configure_threads(None, cfg.num_workers)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    ds = labelled.load_dataset(cfg.data)
    folds = dataset_folds(ds, cfg.split, cfg.k, seed=cfg.seeds[0])
    if cfg.folds:
        missing = sorted(set(cfg.folds) - {f.index for f in folds})
        check(not missing, f"fold(s) {missing} do not exist; {ds.name} has {len(folds)}")
        folds = [f for f in folds if f.index in cfg.folds]
    device = pick_device(cfg.device)
    rejects = RejectLog(out / "rejects.jsonl")
    cache: dict[str, Any] = {}  # images (and frozen features) decoded once for all cells
    label = row_label(cfg)
    paths, skipped = [], 0
    models: dict[tuple[int, int], Any] | None = {} if keep_models else None
    for seed in cfg.seeds:
        for fold in folds:
            path = cell_path(out, ds.name, label, fold.index, seed, cfg.label_fraction)
            if path.is_file() and not keep_models:
                skipped += 1
                paths.append(path)
                continue
            result = run_cell(cfg, ds, fold, seed, device, rejects, cache, on_epoch_end,
                              save_dir=out / path.stem / "model" if cfg.save_model else None, models=models)
            report.save_result(out, result)
            paths.append(path)
            log.info("%s on %s fold %d seed %d: macro-F1 %.3f", label, ds.name, fold.index, seed,
                     result["metrics"]["f1_macro"])
    summary = metrics.aggregate([read_json(p)["metrics"] for p in paths]) if paths else {}
    done = {"cells": [str(p) for p in paths], "skipped": skipped, "summary": summary}
    return {**done, "models": models} if keep_models else done


def _images(cfg: FinetuneConfig, ds: Any, info: EncoderInfo, rejects: RejectLog,
            cache: dict[str, Any]) -> tuple[torch.Tensor, np.ndarray]:
    """All images of ``ds`` at the model's input size, and a map record index -> row (-1: unreadable)."""
    key = f"{info.img_size}:{info.in_chans}:{info.fit}"
    if key not in cache:
        images, kept = preload_images([r.path for r in ds.records], info.img_size, info.in_chans,
                                      cfg.num_workers, rejects, fit=info.fit)
        row = np.full(len(ds), -1, dtype=np.int64)
        row[kept] = np.arange(len(kept))
        cache[key] = (images, row)
    return cache[key]


def run_cell(cfg: FinetuneConfig, ds: Any, fold: Any, seed: int, device: torch.device, rejects: RejectLog,
             cache: dict[str, Any], on_epoch_end: EpochCallback | None = None,
             save_dir: Path | None = None, models: dict[tuple[int, int], Any] | None = None) -> dict[str, Any]:
    """Train and score one (fold, seed) cell; returns the results record (not yet written).

    ``save_dir``: where the fine-tuned model is saved (``usfmae.models.saved``; finetune mode only).
    ``models``, when given, receives ``{(fold, seed): (model, info)}`` (the trained network).
    """
    torch.manual_seed(seed)
    if cfg.mode != "finetune":
        model, info = load_encoder(cfg.weights, cfg.model)
        images, row = _images(cfg, ds, info, rejects, cache)
        fkey = f"features:{info.img_size}:{info.in_chans}:{cfg.pool}"
        if fkey not in cache:
            cache[fkey] = extract_features(model, images, info.mean, info.std, cfg.pool, device=device)
        if models is not None:  # a probe keeps no trained network: the frozen encoder
            models[(fold.index, seed)] = (model, info)
        return probe_cell(row_label(cfg), ds, fold, seed, cfg.label_fraction, cache[fkey], row, method=cfg.mode,
                          knn_k=cfg.knn_k, info=info, pool=cfg.pool, weights=cfg.weights, bootstrap=cfg.bootstrap)
    started = time.perf_counter()
    labels_all = ds.labels
    train_idx = subset_indices(ds, np.asarray(fold.train), cfg.label_fraction, seed)
    test_idx = np.asarray(fold.val)
    num_classes = len(ds.classes)
    model, info = build_classifier(cfg, num_classes)
    images, row = _images(cfg, ds, info, rejects, cache)
    train_idx, test_idx = train_idx[row[train_idx] >= 0], test_idx[row[test_idx] >= 0]
    check(len(train_idx) > 0 and len(test_idx) > 0, f"{ds.name} fold {fold.index}: no readable images")
    inner_tr, inner_va = inner_split(labels_all[train_idx], ds.groups[train_idx], cfg.val_fraction, seed)
    fit_idx, val_idx = train_idx[inner_tr], train_idx[inner_va]
    hook = None
    if on_epoch_end is not None:
        def hook(epoch: int, record: dict[str, Any]) -> None:
            on_epoch_end(epoch, {**record, "fold": fold.index, "seed": seed})
    training = train_classifier(model, info, cfg, images[row[fit_idx]], labels_all[fit_idx],
                                images[row[val_idx]], labels_all[val_idx], num_classes, seed, device, hook)
    scores = class_probabilities(model, images[row[test_idx]], info, device, cfg.amp)
    if models is not None:
        models[(fold.index, seed)] = (model, info)
    training.update(n_val=int(len(val_idx)), n_train=int(len(fit_idx)), n_test=int(len(test_idx)),
                    device=str(device), seconds=round(time.perf_counter() - started, 2))
    recipe = {k: v for k, v in to_dict(cfg).items() if k not in _RECIPE_SKIP}
    protocol = protocol_record(ds, info, cfg.mode, cfg.pool, cfg.label_fraction, cfg.weights, recipe)
    if save_dir is not None and cfg.mode == "finetune":
        from usfmae.contract import DataContract
        from usfmae.models import saved

        arch = saved.classifier_arch(model, num_classes, baseline=cfg.model if cfg.model in BASELINES else None,
                                     in_chans=info.in_chans, img_size=info.img_size, small_input=cfg.small_input)
        if arch is not None:  # None: an adapter's encoder, which the saved-model format cannot rebuild
            saved.save_task_model(save_dir, model.cpu(), kind="classifier", arch=arch, classes=list(ds.classes),
                                  contract=DataContract(info.img_size, info.in_chans, info.mean, info.std,
                                                        info.fit),
                                  protocol={**protocol, "dataset": ds.name, "fold": fold.index, "seed": seed})
            training["model"] = str(save_dir)
    return cell_result(row_label(cfg), ds, fold.index, seed, labels_all[test_idx], scores,
                       [ds.records[i] for i in test_idx], protocol, cfg.bootstrap, training)


def probe_cell(label: str, ds: Any, fold: Any, seed: int, fraction: float, feats: np.ndarray, row: np.ndarray, *,
               method: str, knn_k: int, info: EncoderInfo, pool: str, weights: str | None,
               bootstrap: int) -> dict[str, Any]:
    """Fit and score one frozen-feature probe cell: the one probe path of ``finetune --mode linear|knn``
    and of ``usfmae probe``'s label-fraction curves.

    Args:
        feats: ``(N_readable, D)`` frozen features; ``row`` maps a record index to its feature row
            (-1: unreadable, left out).
        fraction: stratified, nested share of the fold's training labels used.

    Returns:
        The results record (not yet written).
    """
    started = time.perf_counter()
    train_idx = subset_indices(ds, np.asarray(fold.train), fraction, seed)
    test_idx = np.asarray(fold.val)
    train_idx, test_idx = train_idx[row[train_idx] >= 0], test_idx[row[test_idx] >= 0]
    check(len(train_idx) > 0 and len(test_idx) > 0, f"{ds.name} fold {fold.index}: no readable images")
    labels = ds.labels
    scores = fit_probe(method, feats[row[train_idx]], labels[train_idx], feats[row[test_idx]], len(ds.classes),
                       seed=seed, knn_k=knn_k)
    training = {"n_train": int(len(train_idx)), "n_test": int(len(test_idx)),
                "seconds": round(time.perf_counter() - started, 3)}
    protocol = protocol_record(ds, info, method, pool, fraction, weights, probe_recipe(method, knn_k))
    return cell_result(label, ds, fold.index, seed, labels[test_idx], scores, [ds.records[i] for i in test_idx],
                       protocol, bootstrap, training)


def protocol_record(ds: Any, info: EncoderInfo, mode: str, pool: str, fraction: float, weights: str | None,
                    recipe: dict[str, Any]) -> dict[str, Any]:
    """What a reader needs to compare two results; the same for every fold and seed of a run."""
    return {"input_size": info.img_size, "in_chans": info.in_chans, "pretraining": info.describe(),
            "pretraining_mask_ratio": info.mask_ratio, "weights": weights, "architecture": info.name,
            "label_fraction": fraction, "mode": mode, "pool": pool, "dataset_protocol": ds.protocol,
            "recipe": recipe}


def cell_result(label: str, ds: Any, fold: int, seed: int, y_true: np.ndarray, y_score: np.ndarray,
                records: list[Any], protocol: dict[str, Any], n_bootstrap: int,
                training: dict[str, Any]) -> dict[str, Any]:
    """One cell as a ``usfmae.eval.report`` record: metrics (+ 95% bootstrap CIs), predictions, protocol.

    Args:
        y_true: ``(N,)`` class indices of the test images; y_score: ``(N, C)`` class probabilities.
        records: the N test records (their paths and patient groups are saved with the predictions).
        training: run facts that differ per cell (epochs, best epoch, sizes, time), kept beside the record.
    """
    y_pred = y_score.argmax(axis=1)
    values = metrics.classification_metrics(y_true, y_pred, y_score, ds.classes)
    if n_bootstrap:
        names = ["precision_macro", "recall_macro", "f1_macro", "precision_weighted", "recall_weighted",
                 "f1_weighted", "accuracy", "balanced_accuracy"]
        cis = metrics.bootstrap_cis(y_true, y_pred, y_score, names, n_bootstrap, seed, len(ds.classes))
        values["ci"] = {k: [float(lo), float(hi)] for k, (lo, hi) in cis.items()}
    predictions = {"id": [str(r.path) for r in records], "group": [str(r.group) for r in records],
                   "y_true": y_true, "y_pred": y_pred, "y_score": np.round(y_score, 6)}
    result = report.make_result(model=label, dataset=ds.name, fold=fold, seed=seed, metrics=values,
                                protocol=protocol, predictions=predictions)
    result["training"] = training
    return result
