"""Geometric augmentation of images and their masks with one warp: the same map moves both.

Parameters come from :func:`usfmae.data.transforms.sample_params` (the one sampler) and become one
``affine_grid`` per image (:func:`usfmae.data.gpu_augment.batch_theta`); the image is resampled
bilinearly, the mask with nearest neighbour (labels never blend), both with zeros outside (black
image, background label). Runs on the batch's device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from usfmae.data.gpu_augment import batch_theta
from usfmae.data.transforms import AugmentConfig, apply_params_batch, sample_params

# Milder than the pretraining recipe: lesions must stay in view and depth stays downwards (no
# vertical flips); small rotations and zooms, left-right flips as probes are held either way.
SEG_AUGMENT = AugmentConfig(rotation=(-15.0, 15.0), hflip=0.5, vflip=0.0, scale=(0.7, 1.3), ratio=(0.8, 1.25))


def augment_pair(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
                 cfg: AugmentConfig = SEG_AUGMENT) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp images and masks identically.

    Args:
        x: images (B, C, H, W) uint8 (or float in [0, 1]).
        y: label masks (B, H, W), integer.
        generator: CPU generator for the parameters (9 uniforms per image).
        cfg: parameter ranges.

    Returns:
        float images in [0, 1] (B, C, H, W) and masks (B, H, W) of ``y``'s dtype.
    """
    b, _, h, w = x.shape
    params = sample_params(b, generator, cfg)
    images = apply_params_batch(x, params)
    theta = batch_theta(params.to(x.device), h, w).float()
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    masks = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return images, masks[:, 0].round().to(y.dtype)
