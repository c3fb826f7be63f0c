"""DINOv2-family ViTs on timm's ``VisionTransformer`` (``vit_base_patch14_dinov2`` keys): DINOv2 ViT-B/14
and UltraDINO (DINOv2 pretrained on fetal ultrasound, Ambsdorf et al., MICCAI 2025).

Key layouts, read from public code:

* Meta's released backbone (``dinov2_vitb14_pretrain.pth``, facebookresearch/dinov2
  ``dinov2/models/vision_transformer.py``): a plain state dict with ``cls_token``, ``pos_embed``
  (1, 1 + 37*37, 768 at 518 px), ``mask_token``, optional ``register_tokens``, ``patch_embed.proj.*``,
  ``blocks.{i}.norm1/attn.qkv/attn.proj/ls1.gamma/norm2/mlp.fc1/mlp.fc2/ls2.gamma``, ``norm.*``;
  with ``block_chunks > 0`` blocks are named ``blocks.{chunk}.{i}``.
* A DINOv2 training checkpoint, which is what UltraDINO's pretraining writes
  (jakobamb/UltraDINO ``dinov2/utils/utils.py`` ``load_pretrained_weights``: take ``"teacher"``,
  strip ``module.`` and ``backbone.``; its ``dino_head.*`` / ``ibot_head.*`` are pretraining heads).
* timm's own layout (``reg_token``, registers outside the positional table) loads as it is.

timm ``models/vision_transformer.py`` ``checkpoint_filter_fn`` (``_convert_dinov2``) maps Meta's
names to timm's and resamples the positional table to the input grid. Features: the CLS token after
the final norm (DINOv2's ``x_norm_clstoken``; UltraDINO's classifier uses it). Inputs: DINOv2 224 px
RGB ImageNet mean/std; UltraDINO 224 px, one channel, the FUS13M statistics of its pretraining data
(``dinov2/data/transforms.py``: mean 0.1842924807, std 0.2187705424), resize without keeping the
aspect (``classification/data/classification_data.py``).
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

DINOV2 = AdapterSpec(
    name="dinov2_vitb14", title="DINOv2 ViT-B/14",
    contract=DataContract(224, 3, IMAGENET_MEAN, IMAGENET_STD, "stretch"),
    weights="Meta publishes dinov2_vitb14_pretrain.pth at "
            "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth (github.com/facebookresearch/dinov2)",
    source="facebookresearch/dinov2: dinov2/models/vision_transformer.py; "
           "timm: models/vision_transformer.py checkpoint_filter_fn (_convert_dinov2)",
    pooled="CLS token after the final norm (x_norm_clstoken)",
    note="natural-image pretraining (LVD-142M)")

ULTRADINO = AdapterSpec(
    name="ultradino", title="UltraDINO",
    contract=DataContract(224, 1, (0.1842924807,), (0.2187705424,), "stretch"),
    weights="UltraDINO's authors publish code only (github.com/jakobamb/UltraDINO, no weights); pass the "
            "teacher_checkpoint.pth its DINOv2 pretraining writes",
    source="jakobamb/UltraDINO: dinov2/utils/utils.py (load_pretrained_weights), dinov2/configs/train/"
           "vitb16_dinus_13m.yaml (ViT-B/16, 1 channel, 4 registers), dinov2/data/transforms.py (FUS13M mean/std)",
    pooled="CLS token after the final norm (UltraDINO fine-tuning head input)",
    note="weights not public; pretraining data FUS13M (private fetal ultrasound)")

_HEADS = re.compile(r"^(?:dino_head|ibot_head|head)\.")
_CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.")


class VitEncoder(AdaptedEncoder):
    """timm ``VisionTransformer``; token 0 is its CLS token after the final norm."""

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.backbone.forward_features(x)  # (B, 1 + registers + L, D), normed
        return tokens[:, 0], tokens[:, self.backbone.num_prefix_tokens:]


def convert(published: StateDict) -> tuple[StateDict, dict[str, str]]:
    """A DINOv2 training checkpoint's backbone names unwrapped, its heads dropped and chunked blocks
    renumbered (Meta's names kept): ``(state, {our name: file name})``."""
    state, origin = {}, {}
    for original, value in published.items():
        key = original.removeprefix("module.").removeprefix("backbone.")
        if not _HEADS.match(key):
            key = _CHUNKED.sub(r"blocks.\1.", key)
            state[key], origin[key] = value, original
    return state, origin


def _load(spec: AdapterSpec, weights: Source, img_size: int | None,
          in_chans: int | None) -> tuple[VitEncoder, DataContract]:
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    require_weights(spec, weights)
    contract = contract_for(spec, img_size, in_chans)
    label = f"{'state dict' if isinstance(weights, dict) else weights} ({spec.title})"
    raw = weights if isinstance(weights, dict) else read_raw(weights, spec)
    state, origin = convert(tensors_of(raw, "teacher", "model", "state_dict"))
    if "patch_embed.proj.weight" not in state or "pos_embed" not in state:
        found = ", ".join(sorted(state)[:6]) or "none"
        raise UsfmaeError(f"{label}: not a DINOv2 ViT: missing keys [patch_embed.proj.weight, pos_embed]; found {found}")
    proj = state["patch_embed.proj.weight"]
    embed_dim, patch = proj.shape[0], proj.shape[-1]
    registers = state.get("register_tokens", state.get("reg_token"))
    n_reg = 0 if registers is None else registers.shape[1]
    grid_of(contract, patch)
    model = timm.create_model(
        "vit_base_patch14_dinov2", pretrained=False, img_size=contract.img_size, in_chans=contract.in_chans,
        patch_size=patch, embed_dim=embed_dim, depth=count_blocks(state, r"blocks\.(\d+)\."),
        num_heads=max(1, embed_dim // 64),  # DINOv2 ViTs use 64-wide heads (S 6, B 12, L 16)
        mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim if "blocks.0.mlp.fc1.weight" in state else 4.0,
        init_values=1e-5 if "blocks.0.ls1.gamma" in state else None, reg_tokens=n_reg, no_embed_class=n_reg > 0,
        num_classes=0)
    # timm's filter renames Meta's keys (mask_token dropped, registers -> reg_token) and resamples
    # pos_embed to the grid; the input channels are adapted afterwards, to the contract's count.
    state = adapt_channels(checkpoint_filter_fn(state, model), "patch_embed.proj.weight", contract.in_chans)
    load_checked(model, state, label, origin=origin)
    return VitEncoder(model, spec, contract, embed_dim, patch), contract


def load_dinov2(weights: Source, *, img_size: int | None = None,
                in_chans: int | None = None) -> tuple[VitEncoder, DataContract]:
    """DINOv2 ViT (Meta's released file, a DINOv2 training checkpoint or timm's layout)."""
    return _load(DINOV2, weights, img_size, in_chans)


def load_ultradino(weights: Source, *, img_size: int | None = None,
                   in_chans: int | None = None) -> tuple[VitEncoder, DataContract]:
    """UltraDINO: a DINOv2 teacher checkpoint from its pretraining (ViT-B/16, 1 channel, 4 registers)."""
    return _load(ULTRADINO, weights, img_size, in_chans)
