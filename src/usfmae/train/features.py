"""Frozen-encoder features: image loading, encoder loading, batched deterministic extraction.

Shared by ``usfmae probe`` (linear / k-NN on frozen features), ``usfmae embed`` (features to
Parquet / NumPy), ``usfmae finetune`` (images are preloaded once as uint8 tensors) and
``usfmae export``. Extraction never masks: every patch is seen, the model is in eval mode, and on
CUDA the forward runs under bf16 autocast with float32 outputs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from usfmae.data.frames import IMAGE_SUFFIXES
from usfmae.errors import DataError, UsfmaeError
from usfmae.fileio import RejectLog

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


# ----------------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------------

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
    """uint8 ``(B,C,H,W)`` (or float already in [0,1], e.g. augmented) -> float, standardised per channel."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return (x - mean_t) / std_t


# ----------------------------------------------------------------------------------------------
# encoders
# ----------------------------------------------------------------------------------------------

def pool_tokens(tokens: torch.Tensor, pool: str, num_prefix: int = 1) -> torch.Tensor:
    """Pool encoder output to one vector per image.

    Args:
        tokens: ``(B, P+L, D)`` tokens with ``P`` prefix (CLS) tokens, or a CNN map ``(B, D, h, w)``,
            or already pooled ``(B, D)``.
        pool: ``"cls"`` (first token) or ``"mean"`` (average of the patch tokens).

    Returns:
        ``(B, D)``.
    """
    if tokens.ndim == 4:  # CNN feature map: global average pooling is the only sensible choice
        return tokens.mean(dim=(2, 3))
    if tokens.ndim == 2:
        return tokens
    if pool == "cls":
        return tokens[:, 0]
    if pool == "mean":
        return tokens[:, num_prefix:].mean(dim=1)
    raise UsfmaeError(f"unknown pooling {pool!r}; use cls or mean")


class PooledEncoder(nn.Module):
    """``images (B,C,H,W) normalised -> features (B,D)``: what embed, probe and ONNX export run."""

    def __init__(self, encoder: nn.Module, pool: str = "cls") -> None:
        super().__init__()
        self.encoder = encoder
        self.pool = pool
        self.num_prefix = int(getattr(encoder, "num_prefix_tokens", 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return pool_tokens(self.encoder.forward_features(images), self.pool, self.num_prefix)


@dataclass
class EncoderInfo:
    """What a loaded encoder expects as input, and where its weights came from."""

    name: str
    img_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str  # "scratch", "usfmae-pretrain", "imported:<file>", "imagenet"
    mask_ratio: float | None = None  # mask ratio of the pretraining, when the checkpoint says
    pretrain: dict[str, Any] | None = None  # the pretraining config and step count of our checkpoints

    def describe(self) -> str:
        """One line for the results' ``protocol.pretraining``, e.g. ``usfmae-pretrain phantom:512, 400 steps, mask 0.75``."""
        parts = [self.source]
        if self.pretrain:
            data, step = self.pretrain.get("data"), self.pretrain.get("step")
            parts[0] += f" {data}" if data else ""
            parts += [f"{step} steps"] if step is not None else []
        parts += [f"mask {self.mask_ratio:g}"] if self.mask_ratio is not None else []
        return ", ".join(parts)


def data_contract(model: nn.Module, img_size: int | None = None,
                  in_chans: int | None = None) -> tuple[int, int, tuple[float, ...], tuple[float, ...]]:
    """``(img_size, in_chans, mean, std)`` of a model: its ``data_config`` or ImageNet defaults."""
    dc = dict(getattr(model, "data_config", None) or {})
    size = int(dc.get("img_size") or img_size or 224)
    chans = int(dc.get("in_chans") or in_chans or 3)
    default_mean, default_std = default_norm(chans)
    return size, chans, tuple(dc.get("mean") or default_mean), tuple(dc.get("std") or default_std)


def load_encoder(weights: str | Path | None, model_name: str | None = None,
                 **overrides: Any) -> tuple[nn.Module, EncoderInfo]:
    """An MAE (encoder + decoder) from a checkpoint, or a registry model from scratch.

    ``weights`` may be a checkpoint written by ``usfmae pretrain``, the released USF-MAE file, or
    a facebookresearch MAE checkpoint; ``usfmae.models.checkpoint`` detects which. Without
    ``weights``, ``model_name`` is created with random init (the "scratch" control).
    """
    from usfmae.models import checkpoint, registry

    if weights is None:
        if model_name is None:
            raise UsfmaeError("give --weights or a --model name")
        model = registry.create_model(model_name, **overrides)
        return model, _info(model, model_name, "scratch", None)
    path = Path(weights)
    if not path.is_file():
        raise DataError(f"{path}: weights file not found")
    raw = _load_raw(path)
    state, meta = checkpoint.read_checkpoint(raw if raw is not None else path)
    model = checkpoint.build_from_checkpoint({"model": state, **meta}, model_name=model_name, **overrides)
    pretrain = None
    if raw is not None and isinstance(raw.get("config"), dict):
        pretrain = {**raw["config"], "step": raw.get("step")}
    if meta.get("model_cfg"):
        # Our own checkpoint records the pretraining config, mask ratio included.
        source, mask_ratio = "usfmae-pretrain", model.cfg.mask_ratio
    else:
        # Released USF-MAE or facebookresearch MAE file: its mask ratio is not recorded (the
        # paper says 0.25, the released notebook ran MAE's default 0.75), so none is claimed.
        source, mask_ratio = f"imported:{path.name}", None
    name = getattr(model, "model_name", None) or model_name or f"vit_{model.cfg.embed_dim}x{model.cfg.depth}"
    return model, _info(model, name, source, mask_ratio, pretrain)


def _load_raw(path: Path) -> dict | None:
    """The whole ``torch.save`` payload (memory-mapped), to read the pretraining config beside the
    weights; None for safetensors or anything ``checkpoint.read_checkpoint`` should explain."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return None
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - read_checkpoint gives the user-facing error
        return None
    return raw if isinstance(raw, dict) else None


def _info(model: nn.Module, name: str, source: str, mask_ratio: float | None,
          pretrain: dict[str, Any] | None = None) -> EncoderInfo:
    size, chans, mean, std = data_contract(model)
    return EncoderInfo(name, size, chans, mean, std, source, None if mask_ratio is None else float(mask_ratio),
                       pretrain)


def pick_device(device: str | None = None) -> torch.device:
    """``device`` when given, else CUDA when available, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def extract_features(model: nn.Module, images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                     pool: str = "cls", batch_size: int = 64, device: str | torch.device | None = None,
                     progress: bool = False) -> np.ndarray:
    """Features of preloaded images, in order, without masking.

    Args:
        model: anything with ``forward_features`` (our MAE, a timm ViT, a baseline) or a
            :class:`PooledEncoder`.
        images: uint8 ``(N, C, H, W)``.

    Returns:
        float32 ``(N, D)``. Deterministic: eval mode, no dropout, no masking; bf16 autocast on CUDA.
    """
    device = pick_device(str(device) if device is not None else None)
    encoder = model if isinstance(model, PooledEncoder) else PooledEncoder(model, pool)
    was_training = encoder.training
    encoder.eval().to(device)
    out = []
    starts = range(0, len(images), batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, unit="batch", desc="features")
    for start in starts:
        batch = normalise(images[start:start + batch_size].to(device, non_blocking=True), mean, std)
        out.append(forward_pooled(encoder, batch, device))
    encoder.train(was_training)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy()


def forward_pooled(encoder: nn.Module, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``encoder(batch)`` under bf16 autocast on CUDA (float32 elsewhere); float32 ``(B, D)`` on the CPU."""
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        feats = encoder(batch)
    return feats.float().cpu()


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


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted for a stable order."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


# ----------------------------------------------------------------------------------------------
# what is fit on frozen features
# ----------------------------------------------------------------------------------------------

def _full_proba(proba: np.ndarray, seen: np.ndarray, num_classes: int) -> np.ndarray:
    """Spread sklearn's ``(N, len(seen))`` probabilities into ``(N, num_classes)`` columns."""
    out = np.zeros((proba.shape[0], num_classes), dtype=np.float64)
    out[:, seen] = proba
    return out


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int,
                 seed: int = 0, c: float = 1.0, max_iter: int = 2000) -> np.ndarray:
    """Logistic regression on standardised frozen features.

    Args:
        train_x: ``(N, D)`` features; train_y: ``(N,)`` class indices; test_x: ``(M, D)``.

    Returns:
        ``(M, num_classes)`` class probabilities (0 for classes absent from ``train_y``).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    seen = np.unique(train_y)
    if len(seen) == 1:  # a 1%-label subset may hold one class: predict it with certainty
        return _full_proba(np.ones((len(test_x), 1)), seen, num_classes)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))
    probe.fit(train_x, train_y)
    return _full_proba(probe.predict_proba(test_x), seen, num_classes)


def knn_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int,
              k: int = 20) -> np.ndarray:
    """k-nearest-neighbour vote under cosine distance (``k`` capped at the training set size).

    Returns:
        ``(M, num_classes)`` vote fractions.
    """
    from sklearn.neighbors import KNeighborsClassifier

    seen = np.unique(train_y)
    knn = KNeighborsClassifier(n_neighbors=min(k, len(train_y)), metric="cosine", algorithm="brute")
    knn.fit(train_x, train_y)
    return _full_proba(knn.predict_proba(test_x), seen, num_classes)
