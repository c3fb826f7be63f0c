"""The CNN baseline for segmentation: U-Net with a ResNet-50 encoder (``segmentation_models_pytorch``).

Never downloads: random initialisation, or a local ImageNet ResNet-50 weight file (torchvision
keys, ``.pth``/``.safetensors``) loaded into the encoder with the first convolution adapted to the
input channels (RGB filters summed for grayscale). Inputs must be multiples of 32 pixels.
"""

from __future__ import annotations

import os

from torch import nn

from usfmae.errors import ConfigError, UsfmaeError
from usfmae.models.checkpoint import adapt_input_conv, read_checkpoint


def create_unet(num_classes: int, in_chans: int = 1, weights_path: str | os.PathLike | None = None,
                img_size: int = 224) -> nn.Module:
    """U-Net ResNet-50: (B, in_chans, S, S) -> logits (B, num_classes, S, S).

    Args:
        num_classes: K output channels (background included).
        in_chans: input channels.
        weights_path: local torchvision ResNet-50 ImageNet weights for the encoder, or None.
        img_size: S, checked to be a multiple of 32 (five stride-2 stages).
    """
    import segmentation_models_pytorch as smp

    if img_size % 32:
        raise ConfigError(f"U-Net ResNet-50 needs an image size that is a multiple of 32, got {img_size}")
    model = smp.Unet("resnet50", encoder_weights=None, in_channels=in_chans, classes=num_classes)
    if weights_path is not None:
        state, _ = read_checkpoint(weights_path)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        if "conv1.weight" in state:
            state["conv1.weight"] = adapt_input_conv(state["conv1.weight"], in_chans)
        # Checked here: smp's encoder overrides load_state_dict and returns nothing to inspect.
        expected = set(model.encoder.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise UsfmaeError(f"{weights_path}: not ResNet-50 weights: missing keys {missing[:6]}, "
                              f"unexpected keys {unexpected[:6]}")
        model.encoder.load_state_dict(state)
    return model
