"""Named MAE variants: ``create_model(name, **overrides)`` and ``list_models()``.

Every variant is a complete :class:`~usfmae.models.mae.MAEConfig`, so it carries its data contract
(image size, channels, mean, std); ``model.data_config`` exposes it and checkpoints store it.

Defaults: one grayscale channel, normalised with the ImageNet statistics averaged over RGB
(mean 0.449, std 0.226); pass ``in_chans=3`` for paper parity (ImageNet mean/std per channel).
The paper's model is ``mae_vit_base_patch16`` (mask ratio 0.25, decoder 8 x 512 with 8 heads; the
facebookresearch factory the released weights came from used 16 decoder heads: pass
``decoder_num_heads=16`` to reproduce that exactly). The 64-pixel CPU variants default to mask
ratio 0.75, which learns much faster in a few CPU minutes (see the reference facts).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from usfmae.errors import ConfigError, UsfmaeError
from usfmae.models.mae import MAEConfig, MaskedAutoencoderViT

_VARIANTS: dict[str, dict[str, Any]] = {
    # The paper (USF-MAE): ViT-B/16 encoder, 8 x 512 decoder, 25% masking.
    "mae_vit_base_patch16": dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                                 decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=8, mask_ratio=0.25),
    "mae_vit_large_patch16": dict(img_size=224, patch_size=16, embed_dim=1024, depth=24, num_heads=16,
                                  decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, mask_ratio=0.25),
    "mae_vit_small_patch16": dict(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6,
                                  decoder_embed_dim=256, decoder_depth=4, decoder_num_heads=8, mask_ratio=0.25),
    "mae_vit_tiny_patch16": dict(img_size=224, patch_size=16, embed_dim=192, depth=12, num_heads=3,
                                 decoder_embed_dim=128, decoder_depth=4, decoder_num_heads=4, mask_ratio=0.25),
    # CPU variants on 64 x 64 images with 8 x 8 patches (64 tokens): tests and the demo.
    "mae_vit_tiny_patch8_64": dict(img_size=64, patch_size=8, embed_dim=192, depth=4, num_heads=3,
                                   decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4, mask_ratio=0.75),
    "mae_vit_micro_patch8_64": dict(img_size=64, patch_size=8, embed_dim=128, depth=4, num_heads=4,
                                    decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=4, mask_ratio=0.75),
}


def list_models() -> list[str]:
    """Registered variant names, sorted."""
    return sorted(_VARIANTS)


def resolve_config(base: MAEConfig | dict[str, Any], **overrides: Any) -> MAEConfig:
    """Apply ``overrides`` to a config; changing ``in_chans`` without ``mean``/``std`` resets them.

    Raises:
        ConfigError: an unknown field name or an invalid value.
    """
    values = base.to_dict() if isinstance(base, MAEConfig) else dict(base)
    names = {f.name for f in dataclasses.fields(MAEConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"unknown model option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    if "in_chans" in overrides and overrides["in_chans"] != values.get("in_chans"):
        # Statistics belong to the channel count; keep them only if given explicitly.
        values["mean"] = values["std"] = None
    values.update(overrides)
    for key in ("mean", "std"):
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    return MAEConfig(**values)


def variant_config(name: str, **overrides: Any) -> MAEConfig:
    """The :class:`MAEConfig` of variant ``name`` with ``overrides`` applied."""
    if name not in _VARIANTS:
        raise UsfmaeError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return resolve_config(MAEConfig(**_VARIANTS[name]), **overrides)


def create_model(name: str, **overrides: Any) -> MaskedAutoencoderViT:
    """Build variant ``name`` (randomly initialised as MAE does), e.g. ``create_model("mae_vit_base_patch16", in_chans=3)``.

    Args:
        name: one of :func:`list_models`.
        **overrides: any :class:`MAEConfig` field (``img_size``, ``in_chans``, ``mask_ratio``, ...).

    Returns:
        The model; ``model.model_name`` is ``name`` and ``model.data_config`` its data contract.
    """
    model = MaskedAutoencoderViT(variant_config(name, **overrides))
    model.model_name = name
    return model
