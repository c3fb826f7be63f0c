"""Supervised baselines of the paper's Table 2: VGG-19, ResNet-50 (torchvision) and ViT-B/16 (timm).

Nothing is ever downloaded. With ``weights_path`` the builder loads a local ImageNet weight file
(torchvision/timm state dict, ``.pth``/``.pt``/``.safetensors``), adapts the first convolution to
``in_chans`` (RGB filters summed for grayscale) and replaces the 1000-class layer by a fresh head;
without it the network is randomly initialised.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from usfmae.errors import ConfigError, UsfmaeError
from usfmae.models.checkpoint import adapt_input_conv, read_checkpoint

BASELINES = ("vgg19", "resnet50", "vit_b16")
# name -> (first conv weight key, classifier key prefix)
_KEYS = {"vgg19": ("features.0.weight", "classifier.6."), "resnet50": ("conv1.weight", "fc.")}


def create_baseline(name: str, num_classes: int, in_chans: int = 1, weights_path: str | os.PathLike | None = None,
                    *, img_size: int = 224, small_input: bool = False) -> nn.Module:
    """Build a baseline classifier: (B, in_chans, H, W) -> logits (B, num_classes).

    Args:
        name: ``"vgg19"``, ``"resnet50"`` or ``"vit_b16"``.
        num_classes: outputs of the new head.
        in_chans: input channels (1 for grayscale ultrasound, 3 for RGB).
        weights_path: local ImageNet weights, or None for random initialisation.
        img_size: input size for ``vit_b16`` (positional embeddings are resampled to it).
        small_input: for ``resnet50``, stride 1 in the stem convolution and no max-pool (the
            7x7 filters stay, so ImageNet weights still load), keeping 4x more resolution for
            64-pixel inputs.
    """
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; choose one of: {', '.join(BASELINES)}")
    if num_classes < 1 or in_chans < 1:
        raise ConfigError(f"num_classes and in_chans must be >= 1, got {num_classes}, {in_chans}")
    if name == "vit_b16":
        return _vit_b16(num_classes, in_chans, weights_path, img_size)
    import torchvision

    builder = torchvision.models.vgg19 if name == "vgg19" else torchvision.models.resnet50
    model = builder(weights=None, num_classes=num_classes)
    conv_key, head_prefix = _KEYS[name]
    if name == "resnet50":
        model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=1 if small_input else 2, padding=3, bias=False)
        if small_input:
            model.maxpool = nn.Identity()
    else:
        first = model.features[0]
        model.features[0] = nn.Conv2d(in_chans, first.out_channels, kernel_size=3, padding=1)
    if weights_path is not None:
        _load_backbone(model, weights_path, conv_key, head_prefix, in_chans)
    return model


def _load_backbone(model: nn.Module, path: str | os.PathLike, conv_key: str, head_prefix: str, in_chans: int) -> None:
    """Load everything but the classifier from ``path``; adapt the first conv to ``in_chans``."""
    state, _ = read_checkpoint(path)
    state = {k: v for k, v in state.items() if not k.startswith(head_prefix)}
    if conv_key in state:
        state[conv_key] = adapt_input_conv(state[conv_key], in_chans)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(head_prefix)]
    if missing or result.unexpected_keys:
        raise UsfmaeError(f"{path}: not {type(model).__name__} weights: missing keys {missing[:6]}, "
                          f"unexpected keys {result.unexpected_keys[:6]}")


def _vit_b16(num_classes: int, in_chans: int, weights_path: str | os.PathLike | None, img_size: int) -> nn.Module:
    import timm

    kwargs: dict[str, Any] = dict(num_classes=num_classes, in_chans=in_chans, img_size=img_size)
    if weights_path is None:
        return timm.create_model("vit_base_patch16_224", pretrained=False, **kwargs)
    if not os.path.isfile(weights_path):
        raise UsfmaeError(f"{weights_path}: weights file not found")
    # timm loads a local file through pretrained_cfg_overlay (no network): it sums RGB filters for
    # in_chans=1, resamples positional embeddings to img_size and drops the 1000-class head.
    try:
        return timm.create_model("vit_base_patch16_224", pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(weights_path), hf_hub_id=None, url=None),
                                 **kwargs)
    except (RuntimeError, KeyError) as exc:
        raise UsfmaeError(f"{weights_path}: not ViT-B/16 weights ({str(exc).splitlines()[0]})") from exc


def count_parameters(model: nn.Module) -> int:
    """Trainable parameter count."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

