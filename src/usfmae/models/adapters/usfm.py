"""USFM (Jiao et al., Medical Image Analysis 2024): a BEiT-style ViT-B/16 on timm's ``beit_base_patch16_224``.

Key layout of ``USFM_latest.pth``, read from openmedlab/USFM: ``usdsgen/utils/modelutils.py``
(``load_pretrained`` + ``remap_pretrained_keys_vit``: the file is a plain state dict, loaded as it
is; its shared ``rel_pos_bias.relative_position_bias_table`` is copied into every block and
``relative_position_index`` buffers are dropped), ``usdsgen/modules/backbone/vision_transformer.py``
(module names) and ``configs/model/Cls/vit.yaml`` (ViT-B/16, qkv bias as ``q_bias``/``v_bias``,
layer scale ``gamma_1``/``gamma_2`` with init 0.1, no absolute positions, relative position bias,
mean pooling + ``fc_norm``, LayerNorm eps 1e-6). Names: ``cls_token``, ``patch_embed.proj.*``,
``blocks.{i}.norm1.*``, ``.attn.qkv.weight``, ``.attn.q_bias``, ``.attn.v_bias``, ``.attn.proj.*``,
``.norm2.*``, ``.mlp.fc1.*``, ``.mlp.fc2.*``, ``.gamma_1``, ``.gamma_2`` -- the names timm's BEiT uses.

As in USFM's own fine-tuning, ``fc_norm`` starts at its initialisation when the file lacks it, and
entries that model does not have (a pretraining ``norm``, ``mask_token``, ``pos_embed``, ``head``)
are left unused; anything else is refused. Input (``usdsgen/data/datasets.py``): 224 x 224 resize
(no aspect kept), RGB, ImageNet mean/std.
"""

from __future__ import annotations

import math
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

USFM = AdapterSpec(
    name="usfm", title="USFM",
    contract=DataContract(224, 3, IMAGENET_MEAN, IMAGENET_STD, "stretch"),
    weights="USFM publishes USFM_latest.pth on Google Drive: "
            "https://drive.google.com/file/d/1KRwXZgYterH895Z8EpXpR1L1eSMMJo4q/view (github.com/openmedlab/USFM)",
    source="openmedlab/USFM: usdsgen/utils/modelutils.py, usdsgen/modules/backbone/vision_transformer.py, "
           "configs/model/Cls/vit.yaml",
    pooled="fc_norm of the mean patch token (USFM use_mean_pooling)")

SHARED_TABLE = "rel_pos_bias.relative_position_bias_table"
# In the file but not in USFM's fine-tuning model, which therefore never uses them.
_UNUSED = re.compile(r"^(?:norm\.(?:weight|bias)|mask_token|pos_embed|head\.(?:weight|bias)|rel_pos_bias\.relative_position_index)$")


class BeitEncoder(AdaptedEncoder):
    """timm ``Beit`` with ``fc_norm``; token 0 is ``fc_norm(mean of the patch tokens)``."""

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.backbone.forward_features(x)  # (B, 1 + L, D); the final norm is an identity
        patches = tokens[:, 1:]
        return self.backbone.fc_norm(patches.mean(dim=1)), patches


def convert(published: StateDict) -> StateDict:
    """USFM's remap: the shared relative-position table into every block, index buffers and unused
    entries dropped. Names are already timm's BEiT names."""
    state = {k: v for k, v in published.items() if "relative_position_index" not in k and not _UNUSED.match(k)}
    shared = state.pop(SHARED_TABLE, None)
    if shared is not None:
        depth = count_blocks(state, r"blocks\.(\d+)\.")
        for i in range(depth):
            state.setdefault(f"blocks.{i}.attn.relative_position_bias_table", shared.clone())
    return state


def load(weights: Source, *, img_size: int | None = None, in_chans: int | None = None) -> tuple[BeitEncoder, DataContract]:
    """USFM's encoder from ``USFM_latest.pth`` (or its loaded dict) at 224 px or ``img_size``.

    Width, depth, heads (from the bias table) and the native grid are read from the tensors.
    """
    import timm
    from timm.models.beit import checkpoint_filter_fn

    require_weights(USFM, weights)
    contract = contract_for(USFM, img_size, in_chans)
    label = "state dict" if isinstance(weights, dict) else str(weights)
    published = tensors_of(weights if isinstance(weights, dict) else read_raw(weights, USFM))
    state = convert(published)
    try:
        proj, table = state["patch_embed.proj.weight"], state["blocks.0.attn.relative_position_bias_table"]
    except KeyError as exc:
        raise UsfmaeError(f"{label} (USFM): not a USFM checkpoint: missing keys [{exc.args[0]}] "
                          f"(needs patch_embed.proj.weight and {SHARED_TABLE})") from exc
    embed_dim, patch = proj.shape[0], proj.shape[-1]
    native_grid = (math.isqrt(table.shape[0] - 3) + 1) // 2
    model = timm.create_model(
        "beit_base_patch16_224", pretrained=False, img_size=contract.img_size, in_chans=contract.in_chans,
        patch_size=patch, embed_dim=embed_dim, depth=count_blocks(state, r"blocks\.(\d+)\."),
        num_heads=table.shape[1], num_classes=0, global_pool="avg", qkv_bias="blocks.0.attn.q_bias" in state,
        mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim if "blocks.0.mlp.fc1.weight" in state else 4.0,
        init_values=0.1 if "blocks.0.gamma_1" in state else None)
    if native_grid != grid_of(contract, patch):
        state = checkpoint_filter_fn(state, model)  # resizes the bias tables (timm resize_rel_pos_bias_table)
    state = adapt_channels(state, "patch_embed.proj.weight", contract.in_chans)
    load_checked(model, state, f"{label} (USFM)", optional=[r"fc_norm\.(?:weight|bias)"])
    return BeitEncoder(model, USFM, contract, embed_dim, patch), contract
