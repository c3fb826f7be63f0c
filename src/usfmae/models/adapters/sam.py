"""SAM-family image encoders on timm's ``samvit_base_patch16``: UltraSam (mmdet checkpoint) and SAM.

Key layouts, read from public code:

* UltraSam (``UltraSam.pth``, an mmdet/mmengine checkpoint): ``{"state_dict": {...}, "meta": ...}``
  whose image encoder is ``mmpretrain.ViTSAM`` (arch base, 1024 px, window 14, rel. positions) under
  ``backbone.``: ``backbone.patch_embed.projection.*``, ``backbone.pos_embed`` (1, 64, 64, 768),
  ``backbone.layers.{i}.ln1.*``, ``.attn.qkv.*``, ``.attn.proj.*``, ``.attn.rel_pos_h``/``rel_pos_w``,
  ``.ln2.*``, ``.ffn.layers.0.0.*``, ``.ffn.layers.1.*`` and ``backbone.channel_reduction.{0..3}.*``
  (the neck). Sources: CAMMA-public/UltraSam ``weights/convert_sam_bb_to_mmdet.py`` (the SAM ->
  mmpretrain renaming) and ``configs/_base_/models/sam.py`` (backbone settings);
  open-mmlab/mmpretrain ``mmpretrain/models/backbones/vit_sam.py`` (module names, LayerNorm eps 1e-6).
  The other entries (``prompt_encoder.*``, ``decoder.*``, ``bbox_head.*``) are SAM's prompt encoder
  and mask decoder, not part of the image encoder.
* SAM (``sam_vit_b_01ec64.pth``, also MedSAM's ``medsam_vit_b.pth``): ``image_encoder.*`` with
  ``blocks.{i}.norm1``, ``mlp.lin1``/``lin2`` and ``neck.*``; timm ``models/vision_transformer_sam.py``
  ``checkpoint_filter_fn`` maps it (strip the prefix, ``mlp.lin`` -> ``mlp.fc``).

Features follow UltraSam's own classification configs (``configs/_base_/models/sam_classification.py``:
ViTSAM with ``out_channels=0`` and ``out_type="avg_featmap"``): the last block's 768-wide patch
tokens, averaged; the 256-channel neck feeds SAM's mask decoder and is not used. Input: 1024 px,
aspect kept and padded (mmdet ``FixScaleResize(keep_ratio)`` + ``Pad``; UltraSam pads bottom/right,
``fit="pad"`` centres), RGB, ImageNet mean/std. At another size the absolute positions are resampled
bicubically (timm ``resample_abs_pos_embed_nhwc``) and the global blocks' relative-position tables
linearly, as SAM and mmpretrain do when sizes differ; windowed blocks keep their 14 x 14 tables.
"""

from __future__ import annotations

import re
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

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

ULTRASAM = AdapterSpec(
    name="ultrasam", title="UltraSam",
    contract=DataContract(1024, 3, IMAGENET_MEAN, IMAGENET_STD, "pad"),
    weights="UltraSam publishes UltraSam.pth at https://s3.unistra.fr/camma_public/github/ultrasam/UltraSam.pth "
            "(github.com/CAMMA-public/UltraSam)",
    source="CAMMA-public/UltraSam: weights/convert_sam_bb_to_mmdet.py, configs/_base_/models/sam.py; "
           "open-mmlab/mmpretrain: mmpretrain/models/backbones/vit_sam.py",
    pooled="mean of the last block's patch tokens (UltraSam classification: ViTSAM avg_featmap, no neck)",
    note="UltraSam's pretraining data (US-43d) contains the training splits of BUS-BRA, MMOTU-2D and GIST514-DB")

SAM = AdapterSpec(
    name="sam_vit_b", title="SAM ViT-B",
    contract=DataContract(1024, 3, IMAGENET_MEAN, IMAGENET_STD, "pad"),
    weights="Meta publishes sam_vit_b_01ec64.pth at https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth "
            "(MedSAM's medsam_vit_b.pth has the same layout)",
    source="facebookresearch/segment-anything: segment_anything/modeling/image_encoder.py; "
           "timm: models/vision_transformer_sam.py checkpoint_filter_fn",
    pooled="mean of the last block's patch tokens (no neck)")

_NECK = re.compile(r"^(?:neck|channel_reduction)\.")


class SamEncoder(AdaptedEncoder):
    """timm ``VisionTransformerSAM`` without its neck; token 0 is the mean of the patch tokens."""

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.backbone.forward_features(x)  # (B, D, h, w): the neck is an identity
        patches = maps.flatten(2).transpose(1, 2)
        return patches.mean(dim=1), patches


def from_mmpretrain(state: StateDict) -> dict[str, str]:
    """``mmpretrain.ViTSAM`` names under ``backbone.`` -> timm samvit names (neck as ``neck.*``):
    ``{timm name: file name}``; the prompt encoder, mask decoder and heads are left out."""
    names = {}
    for original in state:
        if not original.startswith("backbone."):
            continue
        key = re.sub(r"^layers\.", "blocks.", original[len("backbone."):])
        key = key.replace("patch_embed.projection.", "patch_embed.proj.")
        key = key.replace(".ln1.", ".norm1.").replace(".ln2.", ".norm2.")
        key = key.replace(".ffn.layers.0.0.", ".mlp.fc1.").replace(".ffn.layers.1.", ".mlp.fc2.")
        names[key.replace("channel_reduction.", "neck.")] = original
    return names


def from_sam(state: StateDict) -> dict[str, str]:
    """Segment-anything names (``image_encoder.*``) -> timm samvit names, as timm's filter maps them."""
    return {key[len("image_encoder."):].replace("mlp.lin", "mlp.fc"): key
            for key in state if key.startswith("image_encoder.")}


def resample_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """A decomposed relative-position table ``(L, C)`` resampled linearly to ``(length, C)``."""
    if table.shape[0] == length:
        return table
    resized = F.interpolate(table.float().T[None], size=length, mode="linear")
    return resized[0].T.to(table.dtype)


def build(state: StateDict, contract: DataContract) -> tuple[nn.Module, StateDict, int]:
    """A timm samvit shaped like ``state`` (timm names) at ``contract``'s size, and ``state`` fitted to it.

    Width, depth, heads (from the relative-position width), window and global blocks (from the
    table lengths) are read from the tensors, so any SAM size (and tiny test models) load.

    Returns:
        (model, fitted state without the neck, patch size).
    """
    import timm
    from timm.layers import resample_abs_pos_embed_nhwc

    encoder = {k: v for k, v in state.items() if not _NECK.match(k)}
    proj, pos, rel0 = (encoder.get(k) for k in ("patch_embed.proj.weight", "pos_embed", "blocks.0.attn.rel_pos_h"))
    if proj is None or pos is None or pos.ndim != 4 or rel0 is None:
        found = ", ".join(sorted(encoder)[:6]) or "none"
        raise UsfmaeError("not a SAM image encoder: missing keys [patch_embed.proj.weight, pos_embed (1, H, W, D), "
                          f"blocks.0.attn.rel_pos_h]; found {found}")
    embed_dim, patch, head_dim = proj.shape[0], proj.shape[-1], rel0.shape[1]
    depth = count_blocks(encoder, r"blocks\.(\d+)\.")
    # Global blocks' tables span the whole native grid (2g - 1 rows), windowed ones a window (2w - 1).
    native_rel = 2 * pos.shape[1] - 1
    lengths = {i: encoder[f"blocks.{i}.attn.rel_pos_h"].shape[0] for i in range(depth)
               if f"blocks.{i}.attn.rel_pos_h" in encoder}
    global_blocks = [i for i, n in lengths.items() if n == native_rel]
    window = next(((n + 1) // 2 for n in lengths.values() if n != native_rel), 0)
    grid = grid_of(contract, patch)
    model = timm.create_model(
        "samvit_base_patch16", pretrained=False, img_size=contract.img_size, in_chans=contract.in_chans,
        patch_size=patch, embed_dim=embed_dim, depth=depth, num_heads=max(1, embed_dim // head_dim),
        mlp_ratio=encoder["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim if "blocks.0.mlp.fc1.weight" in encoder else 4.0,
        window_size=window, global_attn_indexes=global_blocks, num_classes=0, neck_chans=0,
        norm_layer=partial(nn.LayerNorm, eps=1e-6))
    model.neck = nn.Identity()  # no final norm: SAM's blocks end without one
    if pos.shape[1] != grid:
        encoder["pos_embed"] = resample_abs_pos_embed_nhwc(pos, (grid, grid))
        for i in global_blocks:
            for axis in ("h", "w"):
                key = f"blocks.{i}.attn.rel_pos_{axis}"
                if key in encoder:
                    encoder[key] = resample_rel_pos(encoder[key], 2 * grid - 1)
    return model, adapt_channels(encoder, "patch_embed.proj.weight", contract.in_chans), patch


def _load(spec: AdapterSpec, convert, weights: Source, img_size: int | None,
          in_chans: int | None) -> tuple[SamEncoder, DataContract]:
    contract = contract_for(spec, img_size, in_chans)
    require_weights(spec, weights)
    label = "state dict" if isinstance(weights, dict) else str(weights)
    raw = weights if isinstance(weights, dict) else read_raw(weights, spec)
    published = tensors_of(raw, "state_dict", "model")
    origin = convert(published)
    if not origin:
        prefix = "backbone." if convert is from_mmpretrain else "image_encoder."
        found = ", ".join(sorted(published)[:4]) or "none"
        raise UsfmaeError(f"{label} ({spec.title}): no {prefix}* keys, so no image encoder of this layout "
                          f"(found {found}, ...)")
    model, state, patch = build({key: published[name] for key, name in origin.items()}, contract)
    load_checked(model, state, f"{label} ({spec.title})", origin=origin)
    return SamEncoder(model, spec, contract, model.embed_dim, patch), contract


def load_ultrasam(weights: Source, *, img_size: int | None = None,
                  in_chans: int | None = None) -> tuple[SamEncoder, DataContract]:
    """UltraSam's image encoder from ``UltraSam.pth`` (or its loaded dict), at 1024 px or ``img_size``."""
    return _load(ULTRASAM, from_mmpretrain, weights, img_size, in_chans)


def load_sam(weights: Source, *, img_size: int | None = None,
             in_chans: int | None = None) -> tuple[SamEncoder, DataContract]:
    """SAM's (or MedSAM's) ViT image encoder from a segment-anything checkpoint."""
    return _load(SAM, from_sam, weights, img_size, in_chans)
