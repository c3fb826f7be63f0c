"""THE data contract: what an encoder expects as input, defined once and stored with every model.

A :class:`DataContract` is the image size, the number of channels, the per-channel mean and std of
``pixel / 255`` and the fit policy (``"pad"`` or ``"stretch"``, see :mod:`usfmae.imaging`) the encoder
was pretrained with. Every checkpoint and export stores it under ``"data_contract"``
(:meth:`DataContract.to_dict`); :func:`resolve_contract` finds it in a model, a checkpoint dict
(older checkpoints' ``data_config`` / ``model_cfg`` too) or timm's ``pretrained_cfg``, as timm's
``resolve_data_config`` does. :func:`prepare` (decoded image -> uint8 CHW at the model's size) and
:func:`normalise` (uint8 or [0, 1] batch -> model input, CPU and GPU alike) are the only two
functions a loader calls, so every path feeds the model the same tensor for the same file.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from usfmae.errors import ConfigError
from usfmae.imaging import FIT_POLICIES, fit

# ImageNet statistics (the paper normalises with them, grayscale replicated to RGB). For one channel
# their average: a gray image replicated and normalised per channel differs from this by at most
# 0.036 in mean and 0.003 in std, and summed RGB filters then see nearly the same input.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_MEAN = (0.449,)
GRAY_STD = (0.226,)


def default_mean_std(in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation statistics for ``in_chans`` channels: ImageNet for 3, their average otherwise."""
    if in_chans == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return GRAY_MEAN * in_chans, GRAY_STD * in_chans


@dataclass(frozen=True)
class DataContract:
    """The input an encoder expects.

    Attributes:
        img_size: side of the square input in pixels.
        in_chans: 1 (grayscale) or 3 (RGB; gray images replicated).
        mean, std: per channel, of pixel values scaled to [0, 1]; input = (pixel / 255 - mean) / std.
        fit: how an image becomes square: "pad" (aspect kept, black borders) or "stretch".
    """

    img_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fit: str = "pad"

    def __post_init__(self) -> None:
        mean = tuple(float(v) for v in self.mean)
        std = tuple(float(v) for v in self.std)
        object.__setattr__(self, "img_size", int(self.img_size))
        object.__setattr__(self, "in_chans", int(self.in_chans))
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        if self.img_size < 1 or self.in_chans < 1:
            raise ConfigError(f"data contract needs a positive size and channel count, got {self.img_size}, {self.in_chans}")
        if len(mean) != self.in_chans or len(std) != self.in_chans:
            raise ConfigError(f"mean/std need {self.in_chans} values each, got {len(mean)}/{len(std)}")
        if not all(s > 0 for s in std):
            raise ConfigError("std values must be positive")
        if self.fit not in FIT_POLICIES:
            raise ConfigError(f"fit must be 'pad' or 'stretch', got {self.fit!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: ``{"img_size", "in_chans", "mean": [...], "std": [...], "fit"}``."""
        return {"img_size": self.img_size, "in_chans": self.in_chans, "mean": list(self.mean),
                "std": list(self.std), "fit": self.fit}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataContract:
        """Inverse of :meth:`to_dict`; also reads legacy ``data_config`` dicts (no ``fit``: "pad"),
        an ``MAEConfig`` dict (extra keys ignored) and timm ``pretrained_cfg`` (``input_size``).

        Missing mean/std take :func:`default_mean_std` for the channel count.
        """
        if "input_size" in d and "img_size" not in d:  # timm pretrained_cfg: (C, H, W)
            chans, size = int(d["input_size"][0]), int(d["input_size"][-1])
        else:
            if "img_size" not in d:
                raise ConfigError(f"not a data contract (no img_size): keys {sorted(d)}")
            size, chans = int(d["img_size"]), int(d.get("in_chans") or 3)
        default_mean, default_std = default_mean_std(chans)
        return cls(size, chans, tuple(d.get("mean") or default_mean), tuple(d.get("std") or default_std),
                   str(d.get("fit") or "pad"))

    def timm_cfg(self) -> dict[str, Any]:
        """timm ``pretrained_cfg`` fields for this contract (timm has no field for the fit policy:
        exports carry it in their ``usfmae.data_contract`` block)."""
        return {"input_size": [self.in_chans, self.img_size, self.img_size], "mean": list(self.mean),
                "std": list(self.std), "interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "center",
                "num_classes": 0}

    def replace(self, **changes: Any) -> DataContract:
        """A copy with ``changes``; a new ``in_chans`` without mean/std resets them to the defaults."""
        if "in_chans" in changes and int(changes["in_chans"]) != self.in_chans and "mean" not in changes:
            changes["mean"], changes["std"] = default_mean_std(int(changes["in_chans"]))
        return dataclasses.replace(self, **changes)


def imagenet_contract(img_size: int = 224, in_chans: int = 1, fit: str = "pad") -> DataContract:
    """ImageNet statistics for ``in_chans`` channels (1 channel: the RGB average)."""
    mean, std = default_mean_std(in_chans)
    return DataContract(img_size, in_chans, mean, std, fit)


def _from_source(source: Any) -> DataContract | None:
    """The contract a model / checkpoint dict / contract carries, or None."""
    if source is None:
        return None
    if isinstance(source, DataContract):
        return source
    if isinstance(source, Mapping):
        for key in ("data_contract", "data_config", "model_cfg", "pretrained_cfg"):
            value = source.get(key)
            if isinstance(value, (Mapping, DataContract)):
                return _from_source(value)
        if "img_size" in source or "input_size" in source:
            return DataContract.from_dict(source)
        return None
    for attr in ("data_contract", "data_config", "pretrained_cfg"):
        value = getattr(source, attr, None)
        if isinstance(value, (Mapping, DataContract)) and value:
            found = _from_source(value)
            if found is not None:
                return found
    return None


def resolve_contract(source: Any = None, *, img_size: int | None = None, in_chans: int | None = None,
                     fit: str | None = None) -> DataContract:
    """The data contract of ``source``, with explicit overrides (like timm's ``resolve_data_config``).

    Args:
        source: a model (attribute ``data_contract``, legacy ``data_config``, or timm's
            ``pretrained_cfg``), a checkpoint dict (``"data_contract"``, ``"data_config"`` or
            ``"model_cfg"``), a contract dict, a DataContract, or None.
        img_size, in_chans, fit: overrides; a changed ``in_chans`` resets mean/std to the defaults.

    Returns:
        The contract; a source without one gets ImageNet statistics at ``img_size`` or 224 with
        ``in_chans`` or 3 channels (what torchvision / timm baselines expect) and fit ``"pad"``.
    """
    found = _from_source(source)
    if found is None:
        return imagenet_contract(img_size or 224, in_chans or 3, fit or "pad")
    changes: dict[str, Any] = {}
    if img_size is not None:
        changes["img_size"] = img_size
    if in_chans is not None:
        changes["in_chans"] = in_chans
    if fit is not None:
        changes["fit"] = fit
    return found.replace(**changes) if changes else found


def normalise_constants(contract: DataContract, device: torch.device | str = "cpu",
                        from_uint8: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mul, add)`` float32 (C, 1, 1) on ``device`` with ``x * mul + add`` = :func:`normalise`.

    ``from_uint8``: ``x`` holds 0-255 values (uint8, or float copies of them), else [0, 1] values.
    For code that fuses the normalisation into its own kernels (the GPU augmentation) and must
    match :func:`normalise` bit for bit.
    """
    return _affine(contract.mean, contract.std, torch.device(device), from_uint8)


@functools.lru_cache(maxsize=64)
def _affine(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
            from_uint8: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(mul, add), shape (C, 1, 1), with ``x * mul + add == (x * scale - mean) / std`` on ``device``.

    Cached per device so a GPU loop does not copy constants (and wait) on every batch.
    """
    mean_t = torch.tensor(mean, dtype=torch.float64).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float64).view(-1, 1, 1)
    scale = 1.0 / 255.0 if from_uint8 else 1.0
    mul, add = (scale / std_t).float(), (-mean_t / std_t).float()
    return mul.to(device), add.to(device)


def normalise(images: torch.Tensor, contract: DataContract) -> torch.Tensor:
    """uint8 ``(..., C, H, W)`` in [0, 255], or float already in [0, 1] (augmented) -> float32 model input.

    One fused multiply-add, ``x * (scale / std) + (-mean / std)``, on the images' own device: the
    CPU loaders, the GPU augmentation and export all call this, so they agree to the last bit.
    """
    mul, add = _affine(contract.mean, contract.std, images.device, images.dtype == torch.uint8)
    if images.shape[-3] != len(contract.mean):
        raise ValueError(f"images have {images.shape[-3]} channels, the contract {len(contract.mean)}")
    return torch.addcmul(add, images.to(torch.float32), mul)


def prepare(img: np.ndarray, contract: DataContract) -> torch.Tensor:
    """A decoded image (``usfmae.imaging.read_image``) -> uint8 ``(C, size, size)`` tensor.

    Fits ``img`` (H, W[, C]) uint8 to the contract's size, channels and fit policy (area
    interpolation). The one function every loader calls before batching.
    """
    fitted = fit(img, contract.img_size, contract.in_chans, contract.fit, "area")
    return torch.from_numpy(np.ascontiguousarray(fitted.transpose(2, 0, 1)))
