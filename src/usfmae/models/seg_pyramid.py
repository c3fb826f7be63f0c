"""A simple feature pyramid on a plain ViT (ViTDet / BEiT) fused UPerNet-style: the strong decoder.

Four block outputs at the patch stride s (blocks 3, 5, 7, 11 of ViT-B by default) become a
pyramid at strides s/4, s/2, s, 2s: two 2x transposed convolutions, one, the identity, and a 2x
max-pool. Each level is projected to ``channels``; a top-down path adds every coarser level into
the next finer one (FPN), each sum is smoothed by a 3x3 convolution, all levels are upsampled to the
finest one, concatenated and fused by a 3x3 convolution (the UPerNet fuse, without its pooling
module), then a 1x1 classifier and bilinear upsampling to the image give the logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from usfmae.models.mae import default_feature_indices
from usfmae.models.seg_linear import encoder_maps


def _conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PyramidSegmenter(nn.Module):
    """Encoder + simple feature pyramid + UPerNet-style fuse: (B, C, H, W) -> logits (B, K, H, W).

    Args:
        encoder: a ViT with ``forward_intermediates``, ``blocks`` and ``embed_dim``.
        num_classes: K (background included).
        indices: the four blocks tapped (default :func:`usfmae.models.mae.default_feature_indices`).
        channels: width of the decoder (default: half the encoder width, clipped to 32..256).
    """

    def __init__(self, encoder: nn.Module, num_classes: int, indices: Sequence[int] | None = None,
                 channels: int | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.indices = list(indices) if indices is not None else default_feature_indices(len(encoder.blocks))
        if len(self.indices) != 4:
            raise ValueError(f"the pyramid taps four blocks, got {self.indices}")
        dim = int(encoder.embed_dim)
        channels = channels or max(32, min(256, dim // 2))
        self.channels = channels
        half, quarter = max(dim // 2, 1), max(dim // 4, 1)
        self.up4 = nn.Sequential(nn.ConvTranspose2d(dim, half, 2, stride=2), nn.BatchNorm2d(half), nn.GELU(),
                                 nn.ConvTranspose2d(half, quarter, 2, stride=2))
        self.up2 = nn.ConvTranspose2d(dim, half, 2, stride=2)
        self.down2 = nn.MaxPool2d(2)
        self.lateral = nn.ModuleList(_conv_bn_relu(c, channels, 1) for c in (quarter, half, dim, dim))
        self.smooth = nn.ModuleList(_conv_bn_relu(channels, channels, 3) for _ in range(3))
        self.fuse = _conv_bn_relu(4 * channels, channels, 3)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = encoder_maps(self.encoder, x, self.indices)
        pyramid = [self.up4(maps[0]), self.up2(maps[1]), maps[2], self.down2(maps[3])]  # fine -> coarse
        levels = [lat(p) for lat, p in zip(self.lateral, pyramid, strict=True)]
        for i in range(len(levels) - 1, 0, -1):  # top-down: add each coarser level into the finer one
            levels[i - 1] = levels[i - 1] + F.interpolate(levels[i], size=levels[i - 1].shape[-2:],
                                                          mode="bilinear", align_corners=False)
        levels = [smooth(level) for smooth, level in zip(self.smooth, levels[:3], strict=True)] + [levels[3]]
        size = levels[0].shape[-2:]
        fused = self.fuse(torch.cat([levels[0]] + [F.interpolate(level, size=size, mode="bilinear",
                                                                 align_corners=False) for level in levels[1:]], 1))
        return F.interpolate(self.classifier(fused), size=x.shape[-2:], mode="bilinear", align_corners=False)
