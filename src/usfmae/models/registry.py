"""Named MAE variants: ``create_model(name, **overrides)``, ``list_models()`` and ``describe_model(name)``.

Every variant is a complete :class:`~usfmae.models.mae.MAEConfig`, so it carries its data contract
(image size, channels, mean, std, fit policy); ``model.data_contract`` exposes it and checkpoints store it.

Defaults: one grayscale channel, normalised with the ImageNet statistics averaged over RGB
(mean 0.449, std 0.226); pass ``in_chans=3`` for paper parity (ImageNet mean/std per channel).

Two ViT-B/16 variants differ only in the decoder's attention heads (the shapes of the weights are
identical, so the head count cannot be read from a file):

* ``mae_vit_base_patch16``: the paper's text, decoder 8 x 512 with 8 heads;
* ``mae_vit_base_patch16_dec16``: the released USF-MAE weights and every facebookresearch MAE
  factory, decoder 8 x 512 with 16 heads. Files without a recorded config (the released ``.pt``,
  facebookresearch checkpoints) have this layout; ``usfmae.models.checkpoint`` builds them so.

The 64-pixel CPU variants default to mask ratio 0.75, which learns much faster in a few CPU minutes
(see the reference facts).
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
    # The same with 16 decoder heads: the layout of the released weights (facebookresearch MAE factory).
    "mae_vit_base_patch16_dec16": dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                                       decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16,
                                       mask_ratio=0.25),
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

_DESCRIPTIONS = {
    "mae_vit_base_patch16": "ViT-B/16, decoder 8 x 512 with 8 heads (the paper's text), mask 0.25",
    "mae_vit_base_patch16_dec16": "ViT-B/16, decoder 8 x 512 with 16 heads (the released USF-MAE weights, "
                                  "facebookresearch MAE), mask 0.25",
    "mae_vit_large_patch16": "ViT-L/16, decoder 8 x 512 with 16 heads, mask 0.25",
    "mae_vit_small_patch16": "ViT-S/16, decoder 4 x 256 with 8 heads, mask 0.25",
    "mae_vit_tiny_patch16": "ViT-Ti/16, decoder 4 x 128 with 4 heads, mask 0.25",
    "mae_vit_tiny_patch8_64": "CPU: ViT-Ti, 64 px, 8 px patches, decoder 2 x 128 with 4 heads, mask 0.75",
    "mae_vit_micro_patch8_64": "CPU: 128 wide x 4 blocks, 64 px, 8 px patches, decoder 2 x 64, mask 0.75",
}

# Fields that define the architecture (the weights' layout and how they are used); the rest
# (image size, channels, statistics, mask ratio, loss) can be changed on any variant.
ARCHITECTURE_FIELDS = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "decoder_embed_dim",
                       "decoder_depth", "decoder_num_heads", "pos_embed")


def list_models() -> list[str]:
    """Registered variant names, sorted."""
    return sorted(_VARIANTS)


def describe_model(name: str) -> str:
    """One line on variant ``name`` (architecture and where it comes from), for listings and help."""
    if name not in _VARIANTS:
        raise UsfmaeError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _DESCRIPTIONS[name]


def find_variant(cfg: MAEConfig) -> str | None:
    """The registered name whose architecture equals ``cfg``'s (image size, channels etc. aside), or None."""
    for name in list_models():
        ref = MAEConfig(**_VARIANTS[name])
        if all(getattr(ref, f) == getattr(cfg, f) for f in ARCHITECTURE_FIELDS):
            return name
    return None


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
        The model; ``model.model_name`` is ``name`` and ``model.data_contract`` its data contract.
    """
    model = MaskedAutoencoderViT(variant_config(name, **overrides))
    model.model_name = name
    return model
