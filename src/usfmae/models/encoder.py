"""Frozen encoders: loading from any supported checkpoint, pooling, batched deterministic extraction.

Extraction never masks: every patch is seen, the model is in eval mode, and on CUDA the forward runs
under bf16 autocast with float32 outputs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from usfmae.contract import DataContract, normalise, resolve_contract
from usfmae.errors import DataError, UsfmaeError
from usfmae.models import adapters, checkpoint, registry
from usfmae.runtime import progress_bar

log = logging.getLogger(__name__)


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
    """What a loaded encoder expects as input (its data contract), and where its weights came from."""

    name: str
    contract: DataContract  # size, channels, mean, std and the fit policy it was pretrained with
    source: str  # "scratch", "usfmae-pretrain", "imported:<file>", "imagenet", an adapter name
    mask_ratio: float | None = None  # mask ratio of the pretraining, when the checkpoint says
    pretrain: dict[str, Any] | None = None  # the pretraining config and step count of our checkpoints

    @property
    def img_size(self) -> int:
        return self.contract.img_size

    @property
    def in_chans(self) -> int:
        return self.contract.in_chans

    @property
    def mean(self) -> tuple[float, ...]:
        return self.contract.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.contract.std

    @property
    def fit(self) -> str:
        return self.contract.fit

    def describe(self) -> str:
        """One line for the results' ``protocol.pretraining``, e.g. ``usfmae-pretrain phantom:512, 400 steps, mask 0.75``."""
        parts = [self.source]
        if self.pretrain:
            data, step = self.pretrain.get("data"), self.pretrain.get("step")
            parts[0] += f" {data}" if data else ""
            parts += [f"{step} steps"] if step is not None else []
        parts += [f"mask {self.mask_ratio:g}"] if self.mask_ratio is not None else []
        return ", ".join(parts)


def model_contract(model: nn.Module, img_size: int | None = None, in_chans: int | None = None) -> DataContract:
    """A model's ``data_contract``; a model without one (baselines) gets ImageNet statistics at
    ``img_size`` (224) with ``in_chans`` (3) channels."""
    found = getattr(model, "data_contract", None)
    return found if isinstance(found, DataContract) else resolve_contract(None, img_size=img_size, in_chans=in_chans)


def load_encoder(weights: str | Path | None, model_name: str | None = None,
                 **overrides: Any) -> tuple[nn.Module, EncoderInfo]:
    """An MAE (encoder + decoder) from a checkpoint, or a registry model from scratch.

    ``weights`` may be a checkpoint written by ``usfmae pretrain``, the released USF-MAE file, or
    a facebookresearch MAE checkpoint; ``usfmae.models.checkpoint`` detects which. Without
    ``weights``, ``model_name`` is created with random init (the "scratch" control).
    """
    if model_name in adapters.ADAPTERS:  # another project's released encoder (UltraSam, USFM, ...)
        return _load_adapter(model_name, weights, overrides)
    if weights is None:
        if model_name is None:
            raise UsfmaeError("give --weights or a --model name")
        model = registry.create_model(model_name, **overrides)
        return model, _info(model, model_name, "scratch", None)
    try:  # a file, a folder (usfmae export --format hub, Hugging Face save_pretrained) or hf-hub:ID
        path = checkpoint.weights_file(weights)
    except UsfmaeError as exc:
        raise DataError(str(exc)) from exc
    state, meta = checkpoint.read_checkpoint(path)
    model = checkpoint.build_from_checkpoint({"model": state, **meta}, model_name=model_name, **overrides)
    # A pretraining checkpoint carries its run's config and step beside the weights.
    pretrain = {**meta["config"], "step": meta.get("step")} if isinstance(meta.get("config"), dict) else None
    if meta.get("model_cfg") and meta.get("format") != "huggingface":
        # Our own checkpoint records the pretraining config, mask ratio included.
        source, mask_ratio = "usfmae-pretrain", model.cfg.mask_ratio
    else:
        # Released USF-MAE or facebookresearch MAE file: its mask ratio is not recorded (the
        # paper says 0.25, the released notebook ran MAE's default 0.75), so none is claimed.
        given = str(weights)
        source, mask_ratio = f"imported:{given if given.startswith('hf-hub:') else Path(given).name}", None
    name = getattr(model, "model_name", None) or model_name or f"vit_{model.cfg.embed_dim}x{model.cfg.depth}"
    return model, _info(model, name, source, mask_ratio, pretrain)


def _load_adapter(name: str, weights: str | Path | None, overrides: dict[str, Any]) -> tuple[nn.Module, EncoderInfo]:
    """A foundation-model adapter (``usfmae.models.adapters``); only size, channels and fit can change."""
    unknown = sorted(set(overrides) - {"img_size", "in_chans", "fit"})
    if unknown:
        raise UsfmaeError(f"{name} takes only img_size, in_chans and fit options, not {', '.join(unknown)}")
    fit = overrides.pop("fit", None)
    model, contract = adapters.ADAPTERS[name](None if weights is None else Path(weights), **overrides)
    if fit is not None and fit != contract.fit:
        contract = model.data_contract = contract.replace(fit=fit)
    source = f"{name}:{Path(weights).name}" if weights is not None else name
    return model, EncoderInfo(name, contract, source)


def _info(model: nn.Module, name: str, source: str, mask_ratio: float | None,
          pretrain: dict[str, Any] | None = None) -> EncoderInfo:
    return EncoderInfo(name, model_contract(model), source, None if mask_ratio is None else float(mask_ratio),
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
    contract = DataContract(images.shape[-1], len(mean), mean, std)
    out = []
    starts = range(0, len(images), batch_size)
    if progress:
        starts = progress_bar(starts, unit="batch", desc="features")
    for start in starts:
        batch = normalise(images[start:start + batch_size].to(device, non_blocking=True), contract)
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


