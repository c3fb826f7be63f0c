"""TinyUSFM (Ma et al., IEEE JBHI 2026): a 5.5M-parameter ViT (width 192, 12 blocks, 12 heads, patch 16)
distilled from USFM, on timm's ``VisionTransformer``.

Key layout, read from MacDunno/TinyUSFM: ``model/tinyusfm.py`` (a timm ``VisionTransformer``
subclass inside ``TinyUSFM.model``; ``global_pool=True`` deletes ``norm`` and adds ``fc_norm``,
LayerNorm eps 1e-6) and ``utils/load_model.py`` (the released file is a plain state dict whose keys
start with ``module.model.``, ``module.`` or ``model.``, all mapped to ``model.``; ``head.*`` is
dropped; loaded non-strictly). Names after the prefix are timm's: ``cls_token``, ``pos_embed``
(1, 197, 192), ``patch_embed.proj.*``, ``blocks.{i}.norm1/attn.qkv/attn.proj/norm2/mlp.fc1/mlp.fc2``,
``fc_norm.*``. As there, ``fc_norm`` starts at its initialisation when absent and a distillation-time
``norm.*`` is unused. Heads (12) cannot be read from shapes; they are TinyUSFM's. Features:
``fc_norm`` of the mean patch token. Input (``utils/data_processing.py``): 224 x 224 resize, RGB,
ImageNet mean/std.
"""

from __future__ import annotations

import re

import torch

from usfmae.contract import IMAGENET_MEAN, IMAGENET_STD, DataContract
from usfmae.errors import UsfmaeError
from usfmae.models.adapters.base import (
    AdaptedEncoder,
    AdapterSpec,
    Source,
    StateDict,
    adapt_channels,
    contract_for,
    count_blocks,
    grid_of,
    load_checked,
    read_raw,
    require_weights,
    tensors_of,
)

TINYUSFM = AdapterSpec(
    name="tinyusfm", title="TinyUSFM",
    contract=DataContract(224, 3, IMAGENET_MEAN, IMAGENET_STD, "stretch"),
    weights="TinyUSFM publishes its weights on Google Drive: "
            "https://drive.google.com/file/d/1P_wDuU-StALLJEBaymioaYu52CScW-l-/view (github.com/MacDunno/TinyUSFM)",
    source="MacDunno/TinyUSFM: model/tinyusfm.py, utils/load_model.py, utils/data_processing.py",
    pooled="fc_norm of the mean patch token (TinyUSFM global_pool=True)")

NUM_HEADS = 12
_UNUSED = re.compile(r"^(?:head|norm)\.(?:weight|bias)$")


class PooledVitEncoder(AdaptedEncoder):
    """timm ``VisionTransformer`` with ``fc_norm``; token 0 is ``fc_norm(mean of the patch tokens)``."""

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.backbone.forward_features(x)  # (B, 1 + L, D); no final norm with fc_norm
        patches = tokens[:, self.backbone.num_prefix_tokens:]
        return self.backbone.fc_norm(patches.mean(dim=1)), patches


def convert(published: StateDict) -> tuple[StateDict, dict[str, str]]:
    """TinyUSFM's prefix rule (``module.model.`` / ``module.`` / ``model.`` -> none), ``head`` and
    ``norm`` dropped: ``(state, {our name: file name})``."""
    state, origin = {}, {}
    for original, value in published.items():
        key = original
        for prefix in ("module.model.", "module.", "model."):
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        if not _UNUSED.match(key):
            state[key], origin[key] = value, original
    return state, origin


def load(weights: Source, *, img_size: int | None = None,
         in_chans: int | None = None) -> tuple[PooledVitEncoder, DataContract]:
    """TinyUSFM's encoder from its released file (or a loaded dict), at 224 px or ``img_size``."""
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    require_weights(TINYUSFM, weights)
    contract = contract_for(TINYUSFM, img_size, in_chans)
    label = f"{'state dict' if isinstance(weights, dict) else weights} (TinyUSFM)"
    state, origin = convert(tensors_of(weights if isinstance(weights, dict) else read_raw(weights, TINYUSFM)))
    if "patch_embed.proj.weight" not in state:
        found = ", ".join(sorted(state)[:6]) or "none"
        raise UsfmaeError(f"{label}: not a TinyUSFM checkpoint: missing keys [patch_embed.proj.weight]; found {found}")
    proj = state["patch_embed.proj.weight"]
    embed_dim, patch = proj.shape[0], proj.shape[-1]
    if embed_dim % NUM_HEADS:
        raise UsfmaeError(f"{label}: width {embed_dim} is not divisible by TinyUSFM's {NUM_HEADS} heads")
    grid_of(contract, patch)
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=contract.img_size, in_chans=contract.in_chans,
        patch_size=patch, embed_dim=embed_dim, depth=count_blocks(state, r"blocks\.(\d+)\."), num_heads=NUM_HEADS,
        mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim if "blocks.0.mlp.fc1.weight" in state else 4.0,
        qkv_bias="blocks.0.attn.qkv.bias" in state, global_pool="avg", fc_norm=True, num_classes=0)
    state = adapt_channels(checkpoint_filter_fn(state, model), "patch_embed.proj.weight", contract.in_chans)
    load_checked(model, state, label, optional=[r"fc_norm\.(?:weight|bias)"], origin=origin)
    return PooledVitEncoder(model, TINYUSFM, contract, embed_dim, patch), contract
