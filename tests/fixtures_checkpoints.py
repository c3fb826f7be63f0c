"""State dicts laid out exactly as other projects publish their encoders, with random values.

Each builder writes the key names and shapes of the released file (tiny widths by default; the
real ViT-B shapes with the defaults of the paper's models where a test asks for them). The names
are spelled out here from the projects' public code, independently of the adapters' mappings, so
a test loading them checks those mappings.
"""

from __future__ import annotations

import torch

StateDict = dict[str, torch.Tensor]


def _rand(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * 0.02


def _linear(s: StateDict, gen: torch.Generator, name: str, out: int, inp: int, bias: bool = True) -> None:
    s[f"{name}.weight"] = _rand(gen, out, inp)
    if bias:
        s[f"{name}.bias"] = _rand(gen, out)


def _norm(s: StateDict, gen: torch.Generator, name: str, dim: int) -> None:
    s[f"{name}.weight"] = 1 + _rand(gen, dim)
    s[f"{name}.bias"] = _rand(gen, dim)


def sam_image_encoder(dim: int = 32, depth: int = 4, heads: int = 2, grid: int = 8, window: int = 3,
                      global_blocks: tuple[int, ...] = (1, 3), neck: int = 16, patch: int = 16,
                      seed: int = 0) -> StateDict:
    """segment-anything ``image_encoder.*`` (``sam_vit_b_01ec64.pth``: dim 768, depth 12, heads 12,
    grid 64, window 14, global blocks 2, 5, 8, 11, neck 256), plus one prompt-encoder entry."""
    gen = torch.Generator().manual_seed(seed)
    s: StateDict = {}
    p = "image_encoder."
    s[p + "patch_embed.proj.weight"] = _rand(gen, dim, 3, patch, patch)
    s[p + "patch_embed.proj.bias"] = _rand(gen, dim)
    s[p + "pos_embed"] = _rand(gen, 1, grid, grid, dim)
    for i in range(depth):
        b = f"{p}blocks.{i}."
        length = 2 * (grid if i in global_blocks else window) - 1
        _norm(s, gen, b + "norm1", dim)
        _linear(s, gen, b + "attn.qkv", 3 * dim, dim)
        _linear(s, gen, b + "attn.proj", dim, dim)
        s[b + "attn.rel_pos_h"] = _rand(gen, length, dim // heads)
        s[b + "attn.rel_pos_w"] = _rand(gen, length, dim // heads)
        _norm(s, gen, b + "norm2", dim)
        _linear(s, gen, b + "mlp.lin1", 4 * dim, dim)
        _linear(s, gen, b + "mlp.lin2", dim, 4 * dim)
    s[p + "neck.0.weight"] = _rand(gen, neck, dim, 1, 1)
    _norm(s, gen, p + "neck.1", neck)
    s[p + "neck.2.weight"] = _rand(gen, neck, neck, 3, 3)
    _norm(s, gen, p + "neck.3", neck)
    s["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = _rand(gen, 2, 128)
    return s


def sam_to_ultrasam(sam: StateDict) -> dict:
    """An mmdet checkpoint as UltraSam's ``weights/convert_sam_bb_to_mmdet.py`` writes the image encoder:
    ``image_encoder.`` -> ``backbone.``, blocks -> layers, patch_embed.proj -> patch_embed.projection,
    norm -> ln, neck -> channel_reduction, mlp.lin1 -> ffn.layers.0.0, mlp.lin2 -> ffn.layers.1; the
    detector's other parts beside it under their own prefixes, mmengine ``meta`` alongside."""
    backbone = {}
    for key, value in sam.items():
        if not key.startswith("image_encoder."):
            continue
        key = key.replace("image_encoder.", "").replace("blocks.", "layers.")
        key = key.replace("patch_embed.proj", "patch_embed.projection").replace("norm", "ln")
        key = key.replace("neck", "channel_reduction")
        key = key.replace("mlp.lin1", "ffn.layers.0.0").replace("mlp.lin2", "ffn.layers.1")
        backbone[f"backbone.{key}"] = value
    others = {"prompt_encoder.label_encoder.label_embedding.weight": torch.zeros(12, 8),
              "bbox_head.iou_prediction_head.layers.0.weight": torch.zeros(4, 8)}
    return {"meta": {"mmdet_version": "3.3.0", "dataset_meta": {"classes": ("object",)}},
            "state_dict": {**backbone, **others}}


def usfm(dim: int = 32, depth: int = 3, heads: int = 4, grid: int = 14, patch: int = 16, seed: int = 0) -> StateDict:
    """``USFM_latest.pth`` as openmedlab/USFM loads it (ViT-B/16: dim 768, depth 12, heads 12, grid 14):
    BEiT names, q/v biases, layer scale, one shared relative-position table, a pretraining ``norm``."""
    gen = torch.Generator().manual_seed(seed)
    s: StateDict = {"cls_token": _rand(gen, 1, 1, dim), "patch_embed.proj.weight": _rand(gen, dim, 3, patch, patch),
                    "patch_embed.proj.bias": _rand(gen, dim),
                    "rel_pos_bias.relative_position_bias_table": _rand(gen, (2 * grid - 1) ** 2 + 3, heads)}
    for i in range(depth):
        b = f"blocks.{i}."
        _norm(s, gen, b + "norm1", dim)
        _linear(s, gen, b + "attn.qkv", 3 * dim, dim, bias=False)
        s[b + "attn.q_bias"], s[b + "attn.v_bias"] = _rand(gen, dim), _rand(gen, dim)
        _linear(s, gen, b + "attn.proj", dim, dim)
        _norm(s, gen, b + "norm2", dim)
        _linear(s, gen, b + "mlp.fc1", 4 * dim, dim)
        _linear(s, gen, b + "mlp.fc2", dim, 4 * dim)
        s[b + "gamma_1"], s[b + "gamma_2"] = 0.1 + _rand(gen, dim), 0.1 + _rand(gen, dim)
    _norm(s, gen, "norm", dim)
    return s


def tinyusfm(dim: int = 48, depth: int = 2, grid: int = 14, patch: int = 16, prefix: str = "module.model.",
             seed: int = 0) -> StateDict:
    """TinyUSFM's released file (dim 192, depth 12, 12 heads, grid 14): timm ViT names under ``prefix``,
    ``fc_norm`` (global pooling) and a classifier ``head``."""
    gen = torch.Generator().manual_seed(seed)
    s: StateDict = {"cls_token": _rand(gen, 1, 1, dim), "pos_embed": _rand(gen, 1, 1 + grid * grid, dim),
                    "patch_embed.proj.weight": _rand(gen, dim, 3, patch, patch), "patch_embed.proj.bias": _rand(gen, dim)}
    for i in range(depth):
        b = f"blocks.{i}."
        _norm(s, gen, b + "norm1", dim)
        _linear(s, gen, b + "attn.qkv", 3 * dim, dim)
        _linear(s, gen, b + "attn.proj", dim, dim)
        _norm(s, gen, b + "norm2", dim)
        _linear(s, gen, b + "mlp.fc1", 4 * dim, dim)
        _linear(s, gen, b + "mlp.fc2", dim, 4 * dim)
    _norm(s, gen, "fc_norm", dim)
    _linear(s, gen, "head", 2, dim)
    return {prefix + k: v for k, v in s.items()}


def dinov2(dim: int = 64, depth: int = 2, patch: int = 14, grid: int = 37, in_chans: int = 3, registers: int = 0,
           chunks: int = 0, seed: int = 0) -> StateDict:
    """Meta's DINOv2 backbone file (ViT-B/14: dim 768, depth 12, grid 37 at 518 px): ``mask_token``,
    layer scale ``ls1/ls2.gamma``, optional ``register_tokens`` and ``blocks.{chunk}.{i}`` chunking."""
    gen = torch.Generator().manual_seed(seed)
    s: StateDict = {"cls_token": _rand(gen, 1, 1, dim), "pos_embed": _rand(gen, 1, 1 + grid * grid, dim),
                    "mask_token": _rand(gen, 1, dim), "patch_embed.proj.weight": _rand(gen, dim, in_chans, patch, patch),
                    "patch_embed.proj.bias": _rand(gen, dim)}
    if registers:
        s["register_tokens"] = _rand(gen, 1, registers, dim)
    for i in range(depth):
        b = f"blocks.{i // (depth // chunks)}.{i}." if chunks else f"blocks.{i}."
        _norm(s, gen, b + "norm1", dim)
        _linear(s, gen, b + "attn.qkv", 3 * dim, dim)
        _linear(s, gen, b + "attn.proj", dim, dim)
        s[b + "ls1.gamma"] = _rand(gen, dim)
        _norm(s, gen, b + "norm2", dim)
        _linear(s, gen, b + "mlp.fc1", 4 * dim, dim)
        _linear(s, gen, b + "mlp.fc2", dim, 4 * dim)
        s[b + "ls2.gamma"] = _rand(gen, dim)
    _norm(s, gen, "norm", dim)
    return s


def dinov2_teacher(backbone: StateDict) -> dict:
    """A DINOv2 training checkpoint (what UltraDINO's pretraining writes): ``{"teacher": backbone.* + heads}``."""
    heads = {"dino_head.mlp.0.weight": torch.zeros(8, 4), "ibot_head.mlp.0.weight": torch.zeros(8, 4)}
    return {"teacher": {**{f"backbone.{k}": v for k, v in backbone.items()}, **heads}}


def published(name: str) -> dict:
    """The tiny published-layout checkpoint of adapter ``name``, as its file holds it."""
    return {
        "ultrasam": lambda: sam_to_ultrasam(sam_image_encoder()),
        "sam_vit_b": sam_image_encoder,
        "usfm": usfm,
        "tinyusfm": tinyusfm,
        "dinov2_vitb14": dinov2,
        "ultradino": lambda: dinov2_teacher(dinov2(patch=16, grid=14, in_chans=1, registers=4, chunks=2)),
    }[name]()
