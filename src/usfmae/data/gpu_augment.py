"""The paper's pretraining augmentation for whole batches on the accelerator: one warp per batch.

The distribution is defined once, in :mod:`usfmae.data.transforms` (``sample_params`` draws the
rotation 0-90 degrees, the flips, and the random resized crop with area scale 0.5-2.0 where a scale
above 1 zooms out with zero padding; ``affine_matrices`` composes them into one map per image).
This module is the fast consumer of that definition for the shard pipeline:

- parameters are drawn on the CPU from a seeded ``torch.Generator`` (a few numbers per image, the
  same on every device), composed into (B, 2, 3) ``affine_grid`` matrices and sent to the device
  through pinned memory without a host synchronisation;
- uint8 frames go in, the warp resizes to the model's ``img_size`` in the same ``grid_sample``
  call (shards packed at 224 can feed a 64-pixel model), channels are adapted (grayscale frames
  repeated for a 3-channel model, RGB frames turned to luma for a 1-channel model);
- the optional intensity jitter is skipped when its ranges are the identity, and the normalisation
  is one fused multiply-add with the constants of :func:`usfmae.contract.normalise` (identical
  results to the CPU loaders for an unaugmented batch).

Because the per-image CPU path (``transforms.augment_image``, ``cv2.warpAffine``) and this path
share the parameter sampler and the matrices, the same parameters give the same pixels (tested to
float tolerance), which is the strongest form of "equivalent in distribution".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from usfmae.contract import DataContract, normalise_constants
from usfmae.data.transforms import PAPER, AugmentConfig, AugmentParams, affine_matrices, sample_params

# ITU-R BT.601 luma, as cv2.COLOR_RGB2GRAY, for RGB shards fed to a 1-channel model
_LUMA = (0.299, 0.587, 0.114)
_IDENTITY_RANGE = (1.0, 1.0)


def coerce_config(value: AugmentConfig | Mapping[str, Any] | None) -> AugmentConfig:
    """None -> the paper's ranges; a mapping -> an AugmentConfig (lists become tuples)."""
    if value is None:
        return PAPER
    if isinstance(value, AugmentConfig):
        return value
    if isinstance(value, Mapping):
        names = {f.name for f in dataclasses.fields(AugmentConfig)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ValueError(f"unknown augmentation setting(s): {', '.join(unknown)}")
        return AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
    raise TypeError(f"expected AugmentConfig, mapping or None, got {type(value).__name__}")


def batch_theta(params: AugmentParams, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid`` matrices (align_corners=False) for frames of size (height, width).

    ``transforms.affine_matrices`` maps output to input pixels in continuous coordinates; the
    normalised form is the same whatever the output size, so the resize comes for free.

    Returns:
        (n, 2, 3) float64 on the device of ``params``.
    """
    m = affine_matrices(params, height, width)
    dev = m.device
    to_norm = torch.tensor([[2.0 / width, 0, -1], [0, 2.0 / height, -1], [0, 0, 1]], dtype=torch.float64, device=dev)
    from_norm = torch.tensor([[width / 2.0, 0, width / 2.0], [0, height / 2.0, height / 2.0], [0, 0, 1]],
                             dtype=torch.float64, device=dev)
    return (to_norm @ m @ from_norm)[:, :2]


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a small host tensor to ``device``; via pinned memory on CUDA so the host never waits."""
    if device.type == "cuda":
        return t.contiguous().pin_memory().to(device, non_blocking=True)
    return t.to(device)


class GpuAugment:
    """Batched augmentation + normalisation: uint8 (B, C, H, W) in, float (B, in_chans, S, S) out.

    Args:
        cfg: augmentation ranges (None = the paper's, ``transforms.PAPER``).
        out_size: side S of the output (the model's ``img_size``).
        in_chans: channels the model expects (1 or 3).
        mean, std: per-channel normalisation of [0, 1] pixels (``in_chans`` values each).
        enabled: False skips the random warp (resize + normalise only), e.g. for embedding.
    """

    def __init__(self, cfg: AugmentConfig | Mapping[str, Any] | None, out_size: int, in_chans: int,
                 mean: Sequence[float], std: Sequence[float], enabled: bool = True) -> None:
        if len(mean) != in_chans or len(std) != in_chans:
            raise ValueError(f"mean/std need {in_chans} values each, got {len(mean)}/{len(std)}")
        self.cfg = coerce_config(cfg)
        self.out_size, self.in_chans, self.enabled = int(out_size), int(in_chans), enabled
        self._intensity = enabled and (tuple(self.cfg.gamma) != _IDENTITY_RANGE or tuple(self.cfg.gain) != _IDENTITY_RANGE)
        self.contract = DataContract(self.out_size, self.in_chans, tuple(mean), tuple(std))
        self._on: dict[torch.device, tuple] = {}

    def _constants(self, device: torch.device) -> tuple:
        """Per device, copied once: ((mul, add) for 0-255 values, (mul, add) for [0, 1] values, luma).

        ``x * mul + add`` is :func:`usfmae.contract.normalise` exactly (the same constants), so an
        unaugmented batch here equals the CPU loaders' normalised tensor bit for bit.
        """
        if device not in self._on:
            self._on[device] = (normalise_constants(self.contract, device, from_uint8=True),
                                normalise_constants(self.contract, device, from_uint8=False),
                                torch.tensor(_LUMA).view(1, 3, 1, 1).to(device))
        return self._on[device]

    def sample(self, batch: int, generator: torch.Generator | None) -> AugmentParams:
        """Draw this batch's parameters on the CPU (``transforms.sample_params``)."""
        gen = generator if generator is not None else torch.default_generator
        if gen.device.type != "cpu":
            raise ValueError("pass a CPU torch.Generator: parameters are drawn on the host")
        return sample_params(batch, gen, self.cfg)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None,
                 params: AugmentParams | None = None) -> torch.Tensor:
        """Augment and normalise a batch.

        Args:
            images: (B, C, H, W) uint8 on any device, C in {1, 3} (a channels-first view of NHWC
                memory is fine).
            generator: CPU generator for the random parameters (ignored when ``params`` is given).
            params: explicit parameters (n = B), e.g. to compare with the per-image CPU path.

        Returns:
            (B, in_chans, out_size, out_size) float32 on ``images.device``. Padding (zoom-out and
            rotation corners) is pixel value 0 before normalisation, i.e. ``-mean / std`` after.
        """
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 (B, C, H, W), got {images.dtype} {tuple(images.shape)}")
        b, c, h, w = images.shape
        device = images.device
        x = images.float()
        if c == 3 and self.in_chans == 1:
            x = (x * self._constants(device)[2]).sum(1, keepdim=True)
        elif c not in (1, self.in_chans):
            raise ValueError(f"cannot feed {c}-channel frames to a {self.in_chans}-channel model")
        if min(h, w) >= 1.5 * self.out_size:
            # a bilinear warp samples, it does not average: shrink with an antialiasing filter first
            # (e.g. 224-pixel shards for a 64-pixel model), as area interpolation does on the CPU path
            x = F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear", antialias=True,
                              align_corners=False)
            h = w = self.out_size
        size = [b, x.shape[1], self.out_size, self.out_size]
        if self.enabled or (h, w) != (self.out_size, self.out_size):
            if self.enabled:
                params = params if params is not None else self.sample(b, generator)
                theta = batch_theta(params, h, w).float()
            else:
                params = None
                theta = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(b, 2, 3)
            theta = _to_device(theta, device)
            grid = F.affine_grid(theta, size, align_corners=False)
            # zeros: the augmentation pads with black; a plain resize must not darken the edges
            padding = "zeros" if self.enabled else "border"
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)
        if self._intensity and params is not None:
            # same order as transforms: clamp (bilinear can overshoot), gamma, gain, clamp
            gamma_gain = _to_device(torch.stack([params.gamma, params.gain]).float(), device).view(2, b, 1, 1, 1)
            x = ((x / 255.0).clamp(0.0, 1.0).pow(gamma_gain[0]) * gamma_gain[1]).clamp(0.0, 1.0)
            mul, add = self._constants(device)[1]
        else:
            mul, add = self._constants(device)[0]
        if x.shape[1] != self.in_chans:
            x = x.expand(-1, self.in_chans, -1, -1)  # grayscale frames for a 3-channel model
        return torch.addcmul(add, x, mul)
