"""A classifier on a pretrained encoder, and layer-wise learning-rate decay for fine-tuning it.

``EncoderClassifier`` copies the encoder out of an MAE (no decoder parameters come along), pools the
tokens (CLS token or mean of the patch tokens) and applies dropout and a linear head. It also
accepts any encoder with ``forward_features(x) -> (B, 1 + L, D)`` and ``num_features``, such as a
timm ``VisionTransformer``.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from usfmae.contract import DataContract
from usfmae.errors import ConfigError
from usfmae.models.mae import VisionTransformerEncoder, is_decoder_key

_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
_NO_DECAY_NAMES = ("cls_token", "pos_embed", "mask_token", "dist_token", "reg_token")


def encoder_from_mae(mae: VisionTransformerEncoder) -> VisionTransformerEncoder:
    """A standalone encoder with a copy of ``mae``'s encoder weights (the decoder is left behind)."""
    encoder = VisionTransformerEncoder(mae.cfg)
    encoder.load_state_dict({k: v for k, v in mae.state_dict().items() if not is_decoder_key(k)})
    encoder.model_name = getattr(mae, "model_name", None)
    return encoder.to(next(mae.parameters()).device)


class EncoderClassifier(nn.Module):
    """Encoder + pooling + dropout + linear head: (B, C, H, W) -> logits (B, num_classes).

    Args:
        mae_or_encoder: a :class:`MaskedAutoencoderViT` (its encoder is copied) or an encoder module.
        num_classes: number of output classes.
        pool: ``"cls"`` (the CLS token) or ``"mean"`` (mean of patch tokens, after the final norm).
        head_dropout: dropout before the head.
    """

    def __init__(self, mae_or_encoder: nn.Module, num_classes: int, pool: str = "cls",
                 head_dropout: float = 0.0) -> None:
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ConfigError(f"pool must be 'cls' or 'mean', got {pool!r}")
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        if isinstance(mae_or_encoder, VisionTransformerEncoder) and type(mae_or_encoder) is not VisionTransformerEncoder:
            mae_or_encoder = encoder_from_mae(mae_or_encoder)
        if not (hasattr(mae_or_encoder, "forward_features") and hasattr(mae_or_encoder, "num_features")):
            raise ConfigError(f"{type(mae_or_encoder).__name__} is not a ViT encoder (needs forward_features, num_features)")
        self.encoder = mae_or_encoder
        self.pool = pool
        self.num_features = int(mae_or_encoder.num_features)
        self.head_drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(self.num_features, num_classes)
        # Small head init as in MAE fine-tuning, so the first steps do not wreck the features.
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    @property
    def data_contract(self) -> DataContract | None:
        """The encoder's data contract (None for an encoder without one)."""
        return getattr(self.encoder, "data_contract", None)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, D)."""
        tokens = self.encoder.forward_features(x)  # (B, 1 + L, D)
        return tokens[:, 0] if self.pool == "cls" else tokens[:, 1:].mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.forward_features(x)))


def _layer_id(name: str, num_blocks: int) -> int:
    """0 for embeddings, i + 1 for block i, num_blocks + 1 for everything after (final norm, head)."""
    match = _BLOCK.search(name)
    if match:
        return int(match.group(1)) + 1
    if any(part in name for part in ("patch_embed", *_NO_DECAY_NAMES)):
        return 0
    return num_blocks + 1


def param_groups_layer_decay(model: nn.Module, weight_decay: float, layer_decay: float = 0.75,
                             no_weight_decay: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Optimizer parameter groups with layer-wise lr decay (BEiT/MAE fine-tuning).

    Layer ids: 0 = patch/positional embeddings and tokens, i + 1 = transformer block i, and the
    final norm and head the top id ``n_blocks + 1``. A group's ``lr_scale`` is
    ``layer_decay ** (top - layer_id)``: the schedule must multiply its lr by ``group["lr_scale"]``.
    No weight decay on 1-D parameters (biases, norms), tokens and positional embeddings, or on names
    containing any of ``no_weight_decay``. Frozen parameters (``requires_grad=False``) are left out.

    Returns:
        A list of ``{"params", "weight_decay", "lr_scale", "layer_id", "param_names"}`` dicts.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    blocks = [int(m.group(1)) for n, _ in named if (m := _BLOCK.search(n))]
    num_blocks = max(blocks) + 1 if blocks else 0
    top = num_blocks + 1
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in named:
        decay = not (param.ndim <= 1 or name.split(".")[-1] in _NO_DECAY_NAMES
                     or any(key in name for key in no_weight_decay))
        layer = _layer_id(name, num_blocks)
        group = groups.setdefault((layer, decay), {
            "params": [], "param_names": [], "layer_id": layer,
            "weight_decay": weight_decay if decay else 0.0, "lr_scale": layer_decay ** (top - layer)})
        group["params"].append(param)
        group["param_names"].append(name)
    return [groups[key] for key in sorted(groups)]
