"""Hugging Face ``ViTMAEForPreTraining`` / ``ViTMAEModel`` weights in and out, without transformers.

Key names differ from ours (timm / facebookresearch MAE) in three ways: prefixes (``vit.``,
``decoder.``), block names, and attention as three projections (q, k, v) where we keep one fused
``qkv``. Two generations of transformers names are read:

* current (transformers 5): ``vit.layers.N.attention.{q,k,v,o}_proj``, ``vit.layers.N.mlp.fc{1,2}``;
* legacy (transformers 4 files, the hub's, and what transformers 5 ``save_pretrained`` writes):
  ``vit.encoder.layer.N.attention.attention.{query,key,value}``, ``...attention.output.dense``,
  ``...intermediate.dense``, ``...output.dense``; decoder blocks ``decoder.decoder_layers.N`` (4) or
  ``decoder.decoder_encoder.layer.N`` (5).

Both share ``layernorm_before``/``layernorm_after``, ``vit.embeddings.*``, ``vit.layernorm`` and the
decoder's ``decoder.decoder_*`` names; a bare ``ViTMAEModel`` has no ``vit.`` prefix. The layout of
patch pixels (p, p, C), the sin-cos tables and the masking noise are the same as ours, so a converted
model gives exactly the same loss, predictions and mask. Head counts and the LayerNorm epsilon are
not in the tensors: they come from the checkpoint's ``config.json`` (``hf_config``) when there is one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from usfmae.contract import DataContract
from usfmae.errors import UsfmaeError
from usfmae.fileio import write_json
from usfmae.models.mae import MAEConfig, VisionTransformerEncoder
from usfmae.models.serialize import save_safetensors

StateDict = dict[str, torch.Tensor]

# (ours, current transformers, legacy transformers) for the parts of one block; {p} is the block prefix.
_BLOCK_NAMES = [
    ("norm1", "layernorm_before", "layernorm_before"),
    ("norm2", "layernorm_after", "layernorm_after"),
    ("attn.proj", "attention.o_proj", "attention.output.dense"),
    ("mlp.fc1", "mlp.fc1", "intermediate.dense"),
    ("mlp.fc2", "mlp.fc2", "output.dense"),
]
_QKV_CURRENT = ("attention.q_proj", "attention.k_proj", "attention.v_proj")
_QKV_LEGACY = ("attention.attention.query", "attention.attention.key", "attention.attention.value")
# (ours, Hugging Face without the "vit."/"decoder." prefixes) outside the blocks.
_ENCODER_NAMES = [("cls_token", "embeddings.cls_token"), ("pos_embed", "embeddings.position_embeddings"),
                  ("patch_embed.proj.weight", "embeddings.patch_embeddings.projection.weight"),
                  ("patch_embed.proj.bias", "embeddings.patch_embeddings.projection.bias"),
                  ("norm.weight", "layernorm.weight"), ("norm.bias", "layernorm.bias")]
_DECODER_NAMES = ["mask_token", "decoder_embed.weight", "decoder_embed.bias", "decoder_pos_embed",
                  "decoder_norm.weight", "decoder_norm.bias", "decoder_pred.weight", "decoder_pred.bias"]


def is_hf_state(state: StateDict) -> bool:
    """True for a ``ViTMAEForPreTraining`` (``vit.embeddings.*``) or ``ViTMAEModel`` (``embeddings.*``) state dict."""
    return any(k.startswith(("vit.embeddings.patch_embeddings.", "embeddings.patch_embeddings.")) for k in state)


def _block_indices(state: StateDict, prefix: str) -> list[int]:
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.")
    return sorted({int(m.group(1)) for k in state if (m := pattern.match(k))})


def _convert_blocks(state: StateDict, out: StateDict, used: set[str], src_prefix: str, dst_prefix: str) -> None:
    """Move the blocks under ``src_prefix`` (``vit.layers.`` or ``vit.encoder.layer.`` ...) to ``dst_prefix``."""
    for i in _block_indices(state, src_prefix):
        src, dst = f"{src_prefix}{i}.", f"{dst_prefix}{i}."
        legacy = f"{src}{_QKV_LEGACY[0]}.weight" in state
        for param in ("weight", "bias"):
            names = [f"{src}{n}.{param}" for n in (_QKV_LEGACY if legacy else _QKV_CURRENT)]
            if all(n in state for n in names):
                # Our fused qkv is [q; k; v] along the output dimension, each in head-major order.
                out[f"{dst}attn.qkv.{param}"] = torch.cat([state[n] for n in names], dim=0)
                used.update(names)
            for ours, current, old in _BLOCK_NAMES:
                name = f"{src}{old if legacy else current}.{param}"
                if name in state:
                    out[f"{dst}{ours}.{param}"] = state[name]
                    used.add(name)


def from_hf_state(state: StateDict) -> StateDict:
    """Rename a Hugging Face ViTMAE state dict (current or legacy names) to ours.

    Raises:
        UsfmaeError: keys that have no counterpart here (named, at most 6).
    """
    enc = "vit." if any(k.startswith("vit.") for k in state) else ""
    out: StateDict = {}
    used: set[str] = set()
    for ours, theirs in _ENCODER_NAMES:
        if enc + theirs in state:
            out[ours] = state[enc + theirs]
            used.add(enc + theirs)
    for layers in (f"{enc}layers.", f"{enc}encoder.layer."):
        _convert_blocks(state, out, used, layers, "blocks.")
    for name in _DECODER_NAMES:
        if f"decoder.{name}" in state:
            out[name] = state[f"decoder.{name}"]
            used.add(f"decoder.{name}")
    # transformers 5's save_pretrained writes the decoder blocks as "decoder_encoder.layer." (its
    # legacy renaming applied inside "decoder_layers."); transformers 4 wrote "decoder_layers.".
    for layers in ("decoder.decoder_layers.", "decoder.decoder_encoder.layer."):
        _convert_blocks(state, out, used, layers, "decoder_blocks.")
    left = sorted(set(state) - used)
    if left:
        raise UsfmaeError(f"Hugging Face ViTMAE weights with keys usfmae cannot place: {', '.join(left[:6])}"
                          + (f" (+{len(left) - 6} more)" if len(left) > 6 else ""))
    return out


def to_hf_state(state: StateDict, cfg: MAEConfig, legacy: bool = False, encoder_only: bool = False) -> StateDict:
    """Our state dict in Hugging Face names: ``ViTMAEForPreTraining`` keys, or ``ViTMAEModel`` keys
    when ``encoder_only`` (no ``vit.`` prefix, no decoder). ``legacy`` writes transformers 4 names,
    which transformers 5 also reads."""
    enc = "" if encoder_only else "vit."
    out: StateDict = {}
    for ours, theirs in _ENCODER_NAMES:
        out[enc + theirs] = state[ours]
    blocks = [("blocks.", f"{enc}encoder.layer." if legacy else f"{enc}layers.", cfg.embed_dim, cfg.depth)]
    if not encoder_only and "decoder_embed.weight" in state:
        blocks.append(("decoder_blocks.", "decoder.decoder_layers.", cfg.decoder_embed_dim, cfg.decoder_depth))
        for name in _DECODER_NAMES:
            out[f"decoder.{name}"] = state[name]
    for src_prefix, dst_prefix, dim, depth in blocks:
        for i in range(depth):
            src, dst = f"{src_prefix}{i}.", f"{dst_prefix}{i}."
            for param in ("weight", "bias"):
                for name, part in zip(_QKV_LEGACY if legacy else _QKV_CURRENT,
                                      state[f"{src}attn.qkv.{param}"].split(dim, dim=0), strict=True):
                    out[f"{dst}{name}.{param}"] = part
                for ours, current, old in _BLOCK_NAMES:
                    out[f"{dst}{old if legacy else current}.{param}"] = state[f"{src}{ours}.{param}"]
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> MAEConfig:
    """Our :class:`MAEConfig` from a ``ViTMAEConfig`` dict (``config.json`` of a Hugging Face checkpoint).

    Missing fields take transformers' ``ViTMAEConfig`` defaults (ViT-B/16, decoder 8 x 512 with 16 heads).

    Raises:
        UsfmaeError: settings this model does not have (non-GELU activation, no qkv bias, a decoder
            MLP ratio different from the encoder's, non-square images).
    """
    from usfmae.models.registry import resolve_config

    g = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
         "hidden_act": "gelu", "layer_norm_eps": 1e-12, "image_size": 224, "patch_size": 16, "num_channels": 3,
         "qkv_bias": True, "decoder_num_attention_heads": 16, "decoder_hidden_size": 512,
         "decoder_num_hidden_layers": 8, "decoder_intermediate_size": 2048, "mask_ratio": 0.75,
         "norm_pix_loss": False, **hf}
    ratio = g["intermediate_size"] / g["hidden_size"]
    problems = [p for p, bad in (
        (f"hidden_act {g['hidden_act']!r} (only 'gelu')", g["hidden_act"] != "gelu"),
        ("qkv_bias false", not g["qkv_bias"]),
        (f"decoder MLP ratio {g['decoder_intermediate_size'] / g['decoder_hidden_size']:g} differs from the "
         f"encoder's {ratio:g}", g["decoder_intermediate_size"] / g["decoder_hidden_size"] != ratio),
        (f"non-square image_size {g['image_size']}", isinstance(g["image_size"], (list, tuple))
         and len(set(g["image_size"])) > 1)) if bad]
    if problems:
        raise UsfmaeError("Hugging Face ViTMAE config not supported: " + "; ".join(problems))
    size = g["image_size"][0] if isinstance(g["image_size"], (list, tuple)) else g["image_size"]
    patch = g["patch_size"][0] if isinstance(g["patch_size"], (list, tuple)) else g["patch_size"]
    values = dict(img_size=int(size), patch_size=int(patch), in_chans=int(g["num_channels"]),
                  embed_dim=g["hidden_size"], depth=g["num_hidden_layers"], num_heads=g["num_attention_heads"],
                  mlp_ratio=ratio, decoder_embed_dim=g["decoder_hidden_size"],
                  decoder_depth=g["decoder_num_hidden_layers"], decoder_num_heads=g["decoder_num_attention_heads"],
                  mask_ratio=float(g["mask_ratio"]), norm_pix_loss=bool(g["norm_pix_loss"]),
                  norm_eps=float(g["layer_norm_eps"]))
    return resolve_config(values, **overrides)


def config_to_hf(cfg: MAEConfig, encoder_only: bool = False) -> dict[str, Any]:
    """The ``config.json`` of ``ViTMAEForPreTraining`` (or ``ViTMAEModel``) for a model with ``cfg``."""
    return {
        "model_type": "vit_mae", "architectures": ["ViTMAEModel" if encoder_only else "ViTMAEForPreTraining"],
        "hidden_size": cfg.embed_dim, "num_hidden_layers": cfg.depth, "num_attention_heads": cfg.num_heads,
        "intermediate_size": int(cfg.embed_dim * cfg.mlp_ratio), "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02,
        "layer_norm_eps": cfg.norm_eps, "image_size": cfg.img_size, "patch_size": cfg.patch_size,
        "num_channels": cfg.in_chans, "qkv_bias": True, "decoder_num_attention_heads": cfg.decoder_num_heads,
        "decoder_hidden_size": cfg.decoder_embed_dim, "decoder_num_hidden_layers": cfg.decoder_depth,
        "decoder_intermediate_size": int(cfg.decoder_embed_dim * cfg.mlp_ratio), "mask_ratio": cfg.mask_ratio,
        "norm_pix_loss": cfg.norm_pix_loss,
    }


def read_hf_config(folder: str | Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(config.json, preprocessor_config.json)`` of a Hugging Face ViTMAE folder, each None when absent
    (or, for config.json, when it is not a ``vit_mae`` config)."""
    folder = Path(folder)
    config = preprocessor = None
    try:
        if (folder / "config.json").is_file():
            loaded = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            config = loaded if isinstance(loaded, dict) and loaded.get("model_type") == "vit_mae" else None
        if (folder / "preprocessor_config.json").is_file():
            preprocessor = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsfmaeError(f"{folder}: unreadable Hugging Face config ({exc})") from exc
    return config, preprocessor


def hf_metadata(state: StateDict, folder: str | Path | None) -> dict[str, Any]:
    """Checkpoint metadata (``model_name``, ``model_cfg``, ``data_contract``) for converted Hugging Face
    weights: from the folder's ``config.json`` when there is one, else empty (shapes decide)."""
    from usfmae.models.registry import find_variant

    config, preprocessor = read_hf_config(folder) if folder is not None else (None, None)
    if config is None:
        return {}
    overrides: dict[str, Any] = {}
    if preprocessor and preprocessor.get("image_mean") and len(preprocessor["image_mean"]) == config.get(
            "num_channels", 3):
        overrides = {"mean": tuple(preprocessor["image_mean"]), "std": tuple(preprocessor["image_std"])}
    cfg = config_from_hf(config, **overrides)
    return {"format": "huggingface", "model_name": find_variant(cfg), "model_cfg": cfg.to_dict(),
            "data_contract": DataContract(cfg.img_size, cfg.in_chans, cfg.mean, cfg.std, cfg.fit).to_dict()}


def export_hf(model: VisionTransformerEncoder, out: str | Path, legacy: bool = True) -> Path:
    """Write ``out/`` as a folder ``ViTMAEForPreTraining.from_pretrained(out)`` loads (``ViTMAEModel``
    when ``model`` has no decoder): ``config.json``, ``model.safetensors``, ``preprocessor_config.json``.

    ``legacy`` (default) writes transformers 4 names, the hub's format, which transformers 4 and 5
    both load; ``legacy=False`` writes transformers 5's in-memory names.

    Returns:
        ``out``.
    """

    model = getattr(model, "encoder", model)  # an EncoderClassifier exports its encoder
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg
    encoder_only = not hasattr(model, "decoder_embed")
    state = to_hf_state(model.state_dict(), cfg, legacy=legacy, encoder_only=encoder_only)
    save_safetensors(state, out / "model.safetensors", metadata={"format": "pt"})
    write_json(out / "config.json", config_to_hf(cfg, encoder_only))
    write_json(out / "preprocessor_config.json", {
        "image_processor_type": "ViTImageProcessor", "do_resize": True,
        "size": {"height": cfg.img_size, "width": cfg.img_size}, "resample": 3, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(cfg.mean), "image_std": list(cfg.std)})
    return out


HUB_PREFIX = "hf-hub:"


def download_hub(source: str) -> Path:
    """The local folder of ``hf-hub:ORG/NAME[@REVISION]`` (downloaded once into the Hugging Face cache).

    Works offline for a model already in the cache; otherwise needs the network.

    Raises:
        UsfmaeError: huggingface_hub missing, or the model could not be fetched (one line, with why).
    """
    repo_id, _, revision = source[len(HUB_PREFIX):].partition("@")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise UsfmaeError(f"{source}: loading from the hub needs huggingface_hub (pip install huggingface_hub)") from exc
    try:
        return Path(snapshot_download(repo_id, revision=revision or None,
                                      allow_patterns=["*.json", "*.safetensors", "*.bin", "*.md"]))
    except Exception as exc:  # noqa: BLE001 - network, authentication, missing repo: one line for the user
        raise UsfmaeError(f"{source}: could not fetch from the Hugging Face hub "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'})") from exc
