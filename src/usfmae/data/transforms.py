"""Pretraining augmentations (the paper's recipe) and normalisation, per image and per batch.

The paper (section 2.4) augments with a random rotation of 0-90 degrees, horizontal and vertical
flips (p=0.5 each) and a random resized crop with area scale 0.5-2.0. A scale above 1 asks for a
crop window larger than the image; torchvision silently falls back to a centre crop in that case,
here the window really is larger and the outside is zero (black, like the background of a
scan), so the image is zoomed out. Optional ultrasound-friendly intensity changes (gamma, gain) are
off by default. Normalisation is :func:`usfmae.contract.normalise`, the one every path uses.

All geometric steps are composed into ONE affine map per image (crop-resize, then flip, then
rotation about the centre, as torchvision applies them), so the image is interpolated once:

- :func:`augment_image`: one image on the CPU with ``cv2.warpAffine`` (the DataLoader path);
- :func:`augment_batch`: a batch of tensors on any device with ``affine_grid``/``grid_sample``.

Both draw their parameters with :func:`sample_params` from an explicit ``torch.Generator``, so they
sample the same distribution and are reproducible from a seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from usfmae.contract import DataContract, normalise


@dataclass(frozen=True)
class AugmentConfig:
    """Parameter ranges; each range is (low, high) sampled uniformly (ratio: log-uniformly).

    Attributes:
        rotation: rotation angle in degrees, counter-clockwise (paper: 0-90).
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip.
        scale: crop area as a fraction of the image area; > 1 zooms out with zero padding.
        ratio: crop aspect ratio width/height.
        gamma: intensity gamma on [0, 1] values (ultrasound display curves vary by scanner).
        gain: multiplicative intensity gain, clipped to [0, 1] (overall gain knob).
    """

    rotation: tuple[float, float] = (0.0, 90.0)
    hflip: float = 0.5
    vflip: float = 0.5
    scale: tuple[float, float] = (0.5, 2.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    gamma: tuple[float, float] = (1.0, 1.0)
    gain: tuple[float, float] = (1.0, 1.0)


PAPER = AugmentConfig()
IDENTITY = AugmentConfig(rotation=(0.0, 0.0), hflip=0.0, vflip=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0))


@dataclass
class AugmentParams:
    """Sampled parameters for ``n`` images; every field is a float tensor of shape (n,)."""

    angle: torch.Tensor    # degrees
    hflip: torch.Tensor    # 1.0 = flip
    vflip: torch.Tensor
    crop_w: torch.Tensor   # crop width as a fraction of the image width (> 1 = zoom out)
    crop_h: torch.Tensor
    crop_x0: torch.Tensor  # left edge of the crop as a fraction of the width (< 0 = padding)
    crop_y0: torch.Tensor
    gamma: torch.Tensor
    gain: torch.Tensor

    def to(self, device: torch.device | str) -> AugmentParams:
        return AugmentParams(**{k: v.to(device) for k, v in vars(self).items()})


def _uniform(u: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    return bounds[0] + u * (bounds[1] - bounds[0])


def sample_params(n: int, generator: torch.Generator, cfg: AugmentConfig = PAPER) -> AugmentParams:
    """Draw parameters for ``n`` images: exactly ``9 * n`` uniforms from ``generator``.

    The fixed consumption keeps a seeded stream aligned whatever the config says.
    """
    u = torch.rand(n, 9, generator=generator, device=generator.device, dtype=torch.float64)
    scale = _uniform(u[:, 3], cfg.scale)
    log_ratio = _uniform(u[:, 4], (math.log(cfg.ratio[0]), math.log(cfg.ratio[1])))
    ratio = torch.exp(log_ratio)
    crop_w, crop_h = torch.sqrt(scale * ratio), torch.sqrt(scale / ratio)
    # Offsets: a crop smaller than the image lies inside it; a larger one contains the image.
    x_lo, x_hi = torch.minimum(1 - crop_w, torch.zeros_like(crop_w)), torch.maximum(1 - crop_w, torch.zeros_like(crop_w))
    y_lo, y_hi = torch.minimum(1 - crop_h, torch.zeros_like(crop_h)), torch.maximum(1 - crop_h, torch.zeros_like(crop_h))
    return AugmentParams(
        angle=_uniform(u[:, 0], cfg.rotation),
        hflip=(u[:, 1] < cfg.hflip).double(),
        vflip=(u[:, 2] < cfg.vflip).double(),
        crop_w=crop_w, crop_h=crop_h,
        crop_x0=x_lo + u[:, 5] * (x_hi - x_lo),
        crop_y0=y_lo + u[:, 6] * (y_hi - y_lo),
        gamma=_uniform(u[:, 7], cfg.gamma),
        gain=_uniform(u[:, 8], cfg.gain),
    )


def affine_matrices(p: AugmentParams, height: int, width: int) -> torch.Tensor:
    """Output->input maps in continuous pixel coordinates (pixel i spans [i, i+1)).

    Returns:
        (n, 3, 3) float64: ``[x_in, y_in, 1] = M @ [x_out, y_out, 1]`` for an output image of the
        same size as the input.
    """
    n = p.angle.shape[0]
    dev = p.angle.device
    eye = torch.eye(3, dtype=torch.float64, device=dev).repeat(n, 1, 1)
    # 1) inverse rotation about the image centre; a positive angle turns the picture
    #    counter-clockwise on screen (y down), as torchvision's rotate does.
    theta = torch.deg2rad(-p.angle)
    cos, sin = torch.cos(theta), torch.sin(theta)
    cx, cy = width / 2.0, height / 2.0
    rot = eye.clone()
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = cos, sin, -sin, cos
    rot[:, 0, 2] = cx - cos * cx - sin * cy
    rot[:, 1, 2] = cy + sin * cx - cos * cy
    # 2) flips (their own inverse).
    flip = eye.clone()
    flip[:, 0, 0], flip[:, 0, 2] = 1 - 2 * p.hflip, p.hflip * width
    flip[:, 1, 1], flip[:, 1, 2] = 1 - 2 * p.vflip, p.vflip * height
    # 3) output (crop resized to full size) -> crop window in the input.
    crop = eye.clone()
    crop[:, 0, 0], crop[:, 0, 2] = p.crop_w, p.crop_x0 * width
    crop[:, 1, 1], crop[:, 1, 2] = p.crop_h, p.crop_y0 * height
    return crop @ flip @ rot


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(..., C, H, W) float in [0, 1] -> :func:`usfmae.contract.normalise` with these statistics."""
    return normalise(x, DataContract(x.shape[-1], len(mean), tuple(mean), tuple(std)))


def _intensity(x: torch.Tensor, gamma: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    # Clamp first: interpolation can overshoot by rounding and pow of a negative is NaN.
    x = x.clamp(0.0, 1.0)
    return (x.pow(gamma) * gain).clamp(0.0, 1.0)


def apply_params_image(img: torch.Tensor, p: AugmentParams, index: int = 0) -> torch.Tensor:
    """Warp one image (C,H,W) uint8/float with row ``index`` of ``p`` on the CPU -> float [0,1]."""
    c, h, w = img.shape
    m = affine_matrices(p, h, w)[index].cpu().numpy()
    # cv2 maps pixel indices, not continuous coordinates: shift by half a pixel on both sides.
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    unshift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
    m_pix = (unshift @ m @ shift)[:2].astype(np.float64)
    src = _as_float(img).permute(1, 2, 0).contiguous().numpy()  # (H,W,C) float32
    out = cv2.warpAffine(src, m_pix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out_t = torch.from_numpy(out.reshape(h, w, c)).permute(2, 0, 1)
    return _intensity(out_t, p.gamma[index].float().cpu(), p.gain[index].float().cpu())


def apply_params_batch(x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
    """Warp a batch (B,C,H,W) uint8/float on its own device with ``p`` (n=B) -> float [0,1]."""
    b, _, h, w = x.shape
    m = affine_matrices(p.to(x.device), h, w)
    # affine_grid works in normalised coordinates (align_corners=False: -1 is the left pixel edge).
    to_norm = torch.tensor([[2.0 / w, 0, -1], [0, 2.0 / h, -1], [0, 0, 1]], dtype=torch.float64, device=x.device)
    from_norm = torch.tensor([[w / 2.0, 0, w / 2.0], [0, h / 2.0, h / 2.0], [0, 0, 1]], dtype=torch.float64,
                             device=x.device)
    theta = (to_norm @ m @ from_norm)[:, :2].float()
    xf = _as_float(x)
    grid = F.affine_grid(theta, list(xf.shape), align_corners=False)
    out = F.grid_sample(xf, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    shape = (b, 1, 1, 1)
    return _intensity(out, p.gamma.to(x.device).float().view(shape), p.gain.to(x.device).float().view(shape))


def augment_image(img: torch.Tensor, generator: torch.Generator, cfg: AugmentConfig = PAPER,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> torch.Tensor:
    """The paper's per-image augmentation on the CPU.

    Args:
        img: (C,H,W) uint8 image (already at the model's image size).
        generator: CPU generator; draws 9 uniforms.
        cfg: parameter ranges.
        mean, std: per-channel normalisation; both None returns values in [0, 1].

    Returns:
        (C,H,W) float32.
    """
    out = apply_params_image(img, sample_params(1, generator, cfg))
    return out if mean is None else _normalise(out, mean, std)


def augment_batch(x: torch.Tensor, generator: torch.Generator, cfg: AugmentConfig = PAPER,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> torch.Tensor:
    """The same augmentation for a whole batch as tensor ops (runs on the batch's device).

    Args:
        x: (B,C,H,W) uint8 (or float in [0,1]).
        generator: draws 9*B uniforms on its own device; parameters move to ``x.device``.
        cfg, mean, std: as :func:`augment_image`.

    Returns:
        (B,C,H,W) float32, normalised when ``mean``/``std`` are given.
    """
    out = apply_params_batch(x, sample_params(x.shape[0], generator, cfg))
    return out if mean is None else _normalise(out, mean, std)
