"""The linear segmentation probe: one linear map of the last block's patch tokens, upsampled to the image.

With a frozen encoder this is the segmentation counterpart of the linear probe: what a single
per-patch linear classifier can read from the features. Works on any ViT encoder with
``forward_intermediates`` (ours, timm's ``VisionTransformer``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def encoder_maps(encoder: nn.Module, x: torch.Tensor, indices: list[int], norm: bool = False) -> list[torch.Tensor]:
    """(B, D, H/p, W/p) maps of blocks ``indices`` from our encoder or a timm ViT (same call, same result)."""
    return encoder.forward_intermediates(x, indices, norm=norm, intermediates_only=True)


def _depth(encoder: nn.Module) -> int:
    return len(encoder.blocks)


class LinearSegmenter(nn.Module):
    """Encoder + BatchNorm + 1x1 convolution on the final (normed) patch tokens + bilinear upsampling.

    Args:
        encoder: a ViT with ``forward_intermediates``, ``blocks`` and ``embed_dim``.
        num_classes: K output channels (background included).

    Shapes: (B, C, H, W) -> logits (B, K, H, W).
    """

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        dim = int(encoder.embed_dim)
        self.head = nn.Sequential(nn.BatchNorm2d(dim), nn.Conv2d(dim, num_classes, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (tokens,) = encoder_maps(self.encoder, x, [_depth(self.encoder) - 1], norm=True)
        return F.interpolate(self.head(tokens), size=x.shape[-2:], mode="bilinear", align_corners=False)
