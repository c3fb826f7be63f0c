"""Weights in and out: the released USF-MAE file, facebookresearch MAE, timm encoders, our own checkpoints.

Formats read (detected from content, not from the name):

* a plain state dict with MAE keys (the released ``USF-MAE_full_pretrain_43dataset_100epochs.pt``);
* ``{"model": state_dict, ...}`` (facebookresearch MAE; ours add ``model_name``, ``model_cfg``,
  ``data_contract``; older files ``data_config``) or ``{"state_dict": ...}``;
* a timm ``VisionTransformer`` encoder state dict, ``.safetensors`` or ``.pt`` (the decoder then keeps
  its initialisation; classifier ``head.*``/``fc_norm.*`` keys are ignored).

Adaptation on load: 3-channel patch filters are summed into 1 channel (the response to a gray image
replicated to RGB is unchanged) and 1 -> N repeats them divided by N; ``decoder_pred`` outputs are
averaged (N -> 1) or repeated (1 -> N); positional tables are resampled bicubically on the patch grid
when the image size differs, keeping the CLS row. Anything else that does not fit raises
:class:`UsfmaeError` naming the missing/unexpected keys and the mismatched shapes.

Only tensors and plain containers are unpickled (``torch.load(weights_only=True)``) unless the caller
passes ``allow_pickle=True`` for a file it trusts.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn

from usfmae.errors import UsfmaeError
from usfmae.fileio import write_json
from usfmae.models import hf
from usfmae.models.mae import MAEConfig, MaskedAutoencoderViT, VisionTransformerEncoder, is_decoder_key
from usfmae.models.registry import describe_model, find_variant, resolve_config, variant_config
from usfmae.models.serialize import save_checkpoint, save_safetensors

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
_STRIP_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers
_IGNORED_PREFIXES = ("head.", "fc_norm.")  # timm classifier parts an encoder does not have
_TIMM_NAMES = {(192, 12): "vit_tiny_patch16_224", (384, 12): "vit_small_patch16_224",
               (768, 12): "vit_base_patch16_224", (1024, 24): "vit_large_patch16_224"}


@dataclass
class LoadResult:
    """What :func:`load_mae_weights` did: keys loaded, decoder keys left at init, keys ignored, adaptations."""

    loaded: list[str]
    kept_init: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------
# Reading


def read_checkpoint(source: str | os.PathLike | dict, allow_pickle: bool = False) -> tuple[StateDict, dict[str, Any]]:
    """THE checkpoint reader: weights and metadata from a file (``.safetensors`` or ``torch.save``,
    memory-mapped) or an already loaded object. Every loader in usfmae reads through it.

    Only tensors, plain containers and the allow-listed classes (``argparse.Namespace``, which
    facebookresearch MAE pickles as ``args``) are unpickled unless ``allow_pickle`` is set.

    Returns:
        (state_dict with wrapper prefixes stripped, metadata). Metadata is every other entry of a
        ``{"model": ...}`` payload (ours: ``model_name``, ``model_cfg``, ``data_contract`` (older files
        ``data_config``), and for a
        pretraining checkpoint ``format``, ``step``, ``optimizer``, ``rng``, ``config``, ...;
        facebookresearch MAE: ``args``, ``epoch``, ...), the ``usfmae`` header of a safetensors
        file, and empty for a bare state dict.
    """
    name = "checkpoint" if isinstance(source, dict) else str(source)
    folder = None
    if isinstance(source, dict):
        obj: Any = source
    else:
        path = weights_file(source)
        folder = path.parent
        obj = _load_safetensors(path) if _is_safetensors(path) else _torch_load(path, allow_pickle)
    meta: dict[str, Any] = {}
    if isinstance(obj, tuple):  # from _load_safetensors: (tensors, metadata)
        obj, meta = obj
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        meta = {k: v for k, v in obj.items() if k != "model" and v is not None}
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        meta = {k: v for k, v in obj.items() if k != "state_dict" and v is not None}
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        keys = ", ".join(map(str, list(obj)[:8])) if isinstance(obj, dict) else type(obj).__name__
        raise UsfmaeError(f"{name}: no model weights found (expected a state dict or a dict with 'model'); got: {keys}")
    state = {}
    for key, value in obj.items():
        while key.startswith(_STRIP_PREFIXES):
            key = key.split(".", 1)[1]
        state[key] = value
    if hf.is_hf_state(state):  # Hugging Face ViTMAE names; its config.json (if any) gives the heads
        meta = {**hf.hf_metadata(state, folder), **meta}
        state = hf.from_hf_state(state)
    return state, meta


_FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.pt")


def weights_file(source: str | os.PathLike) -> Path:
    """The weights file of ``source``: the file itself, the weights in a folder written by
    ``usfmae export --format hub`` / Hugging Face ``save_pretrained`` (``model.safetensors``,
    ``pytorch_model.bin``), or those of ``hf-hub:ORG/NAME`` (downloaded; needs the network once).

    Raises:
        UsfmaeError: nothing there, or a folder without a weights file.
    """
    if str(source).startswith(hf.HUB_PREFIX):
        source = hf.download_hub(str(source))
    path = Path(source).expanduser()
    if path.is_dir():
        for name in _FOLDER_WEIGHTS:
            if (path / name).is_file():
                return path / name
        raise UsfmaeError(f"{path}: folder has no weights file ({', '.join(_FOLDER_WEIGHTS)})")
    if not path.is_file():
        raise UsfmaeError(f"{path}: checkpoint file not found")
    return path


def _is_safetensors(path: Path) -> bool:
    # safetensors files start with an 8-byte little-endian header length followed by '{'.
    with open(path, "rb") as handle:
        head = handle.read(9)
    return path.suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{")


def _load_safetensors(path: Path) -> tuple[StateDict, dict[str, Any]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            raw_meta = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise UsfmaeError(f"{path}: not a readable safetensors file ({exc})") from exc
    meta = json.loads(raw_meta["usfmae"]) if "usfmae" in raw_meta else {}
    return tensors, meta


# Harmless classes that real checkpoints pickle beside their tensors: facebookresearch MAE saves its
# argparse Namespace as "args". Allow-listing them keeps weights_only loading (no code execution).
_SAFE_CHECKPOINT_GLOBALS = [argparse.Namespace]


def _torch_load(path: Path, allow_pickle: bool) -> Any:
    try:
        # Memory-map zip checkpoints: tensors are read on use, so a ViT-B file costs no extra copy.
        with torch.serialization.safe_globals(_SAFE_CHECKPOINT_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=not allow_pickle, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        if not zipfile.is_zipfile(path):  # torch.save writes zip archives; anything else is damaged or legacy
            raise UsfmaeError(f"{path}: not a readable PyTorch checkpoint (damaged, or a legacy pickle: "
                              "pass allow_pickle=True only if you trust it)") from exc
        raise UsfmaeError(f"{path}: holds Python objects beyond tensors and plain containers; "
                          "pass allow_pickle=True only if you trust this file") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        # EOFError from an empty or cut-off file has no message at all
        reason = (str(exc).strip().splitlines() or ["empty or truncated file"])[0]
        raise UsfmaeError(f"{path}: not a readable PyTorch checkpoint ({reason})") from exc


# ----------------------------------------------------------------------------------------------------
# Adaptation


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt patch-projection filters (O, I, k, k) to ``in_chans`` input channels.

    N -> 1 sums the filters, so a gray image gives the response the N-channel model gives to that
    image replicated N times. 1 -> N (and other counts) tiles the filters and scales by I / N, which
    preserves the response to replicated gray input.
    """
    out_ch, in_ch = weight.shape[:2]
    if in_ch == in_chans:
        return weight
    w = weight.float()
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        w = w.repeat(1, math.ceil(in_chans / in_ch), 1, 1)[:, :in_chans] * (in_ch / in_chans)
    return w.to(weight.dtype)


def adapt_pred_channels(tensor: torch.Tensor, patch_area: int, in_chans: int) -> torch.Tensor:
    """Adapt ``decoder_pred`` weight (p*p*I, D) or bias (p*p*I,) to ``in_chans`` output channels.

    Outputs are laid out (p, p, C); N -> 1 averages the channel predictions of each pixel (they predict
    the same gray value), 1 -> N repeats them.
    """
    in_ch = tensor.shape[0] // patch_area
    if in_ch == in_chans:
        return tensor
    grouped = tensor.reshape(patch_area, in_ch, *tensor.shape[1:])
    if in_chans == 1:
        grouped = grouped.float().mean(dim=1, keepdim=True).to(tensor.dtype)
    elif in_ch == 1:
        grouped = grouped.repeat_interleave(in_chans, dim=1)
    else:
        raise UsfmaeError(f"cannot adapt decoder_pred from {in_ch} to {in_chans} channels")
    return grouped.reshape(patch_area * in_chans, *tensor.shape[1:])


def resample_pos_embed(pos_embed: torch.Tensor, new_grid: int, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Resample a (1, P + g*g, D) positional table to a new_grid x new_grid patch grid, bicubically.

    The ``num_prefix_tokens`` leading rows (CLS) are kept as they are.
    """
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old_grid = math.isqrt(grid.shape[1])
    if old_grid * old_grid != grid.shape[1]:
        raise UsfmaeError(f"positional table with {grid.shape[1]} patch rows is not a square grid")
    if old_grid == new_grid:
        return pos_embed
    dim = grid.shape[-1]
    image = grid.reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2).float()
    image = F.interpolate(image, size=(new_grid, new_grid), mode="bicubic", align_corners=False, antialias=True)
    grid = image.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


def _adapt(state: StateDict, model: nn.Module, cfg: MAEConfig) -> list[str]:
    """Fit channels and positional grids of ``state`` to ``model`` in place; returns notes."""
    target = model.state_dict()
    notes = []
    w = state.get("patch_embed.proj.weight")
    if w is not None and w.ndim == 4 and w.shape[1] != cfg.in_chans:
        state["patch_embed.proj.weight"] = adapt_input_conv(w, cfg.in_chans)
        notes.append(f"patch_embed.proj.weight: {w.shape[1]} -> {cfg.in_chans} input channels")
    area = cfg.patch_size**2
    for key in ("decoder_pred.weight", "decoder_pred.bias"):
        t = state.get(key)
        if t is not None and key in target and t.shape[0] != target[key].shape[0] and t.shape[0] % area == 0:
            state[key] = adapt_pred_channels(t, area, cfg.in_chans)
            notes.append(f"{key}: {t.shape[0] // area} -> {cfg.in_chans} output channels")
    for key in ("pos_embed", "decoder_pos_embed"):
        t = state.get(key)
        if t is not None and key in target and t.shape != target[key].shape and t.shape[-1] == target[key].shape[-1]:
            state[key] = resample_pos_embed(t, cfg.grid_size)
            notes.append(f"{key}: resampled {tuple(t.shape)} -> {tuple(state[key].shape)}")
    return notes


# ----------------------------------------------------------------------------------------------------
# Loading


def load_mae_weights(model: VisionTransformerEncoder, source: str | os.PathLike | dict,
                     encoder_only: bool = False, allow_pickle: bool = False) -> LoadResult:
    """Load weights from any supported format into ``model`` (an MAE or an encoder), adapting as needed.

    Args:
        model: the target; its config decides channels and image size.
        source: a file path or an already loaded checkpoint/state dict.
        encoder_only: ignore decoder weights in the file (e.g. a decoder of another depth).
        allow_pickle: allow arbitrary pickled objects (trusted files only).

    Returns:
        A :class:`LoadResult`. Decoder weights absent from the file keep their initialisation.

    Raises:
        UsfmaeError: missing encoder keys, unexpected keys or shape mismatches, all named in one line.
    """
    name = "checkpoint" if isinstance(source, dict) else str(source)
    state, meta = read_checkpoint(source, allow_pickle)
    if not meta.get("model_cfg") and not encoder_only:
        check_foreign_decoder(model, state, name)
    state, result = _fit_state(model, state, name, encoder_only)
    model.load_state_dict(state, strict=False)
    return result


def _fit_state(model: nn.Module, state: StateDict, name: str, encoder_only: bool) -> tuple[StateDict, LoadResult]:
    """Drop ignorable keys, adapt channels/grids and check keys and shapes against ``model`` (may be on meta)."""
    ignored = sorted(k for k in state if k.startswith(_IGNORED_PREFIXES) or (encoder_only and is_decoder_key(k)))
    state = {k: v for k, v in state.items() if k not in ignored}
    adapted = _adapt(state, model, model.cfg)
    target = model.state_dict()
    has_decoder = any(is_decoder_key(k) for k in state)
    missing = [k for k in target if k not in state and (has_decoder or not is_decoder_key(k))]
    unexpected = sorted(set(state) - set(target))
    mismatched = [f"{k} {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
                  for k in state if k in target and state[k].shape != target[k].shape]
    if missing or unexpected or mismatched:
        problems = [f"{label} {_first(items)}" for label, items in
                    (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", mismatched)) if items]
        model_name = getattr(model, "model_name", None) or type(model).__name__
        raise UsfmaeError(f"{name}: weights do not fit {model_name}: " + "; ".join(problems))
    for note in adapted:
        log.info("%s: %s", name, note)
    kept = [k for k in target if k not in state]
    return state, LoadResult(loaded=sorted(state), kept_init=kept, ignored=ignored, adapted=adapted)


def _first(items: list[str], n: int = 6) -> str:
    shown = ", ".join(items[:n])
    return f"[{shown}{f', ... (+{len(items) - n} more)' if len(items) > n else ''}]"


def infer_config(state: StateDict, **overrides: Any) -> MAEConfig:
    """Guess the architecture of a foreign state dict from its tensor shapes.

    Head counts cannot be read from shapes: the encoder assumes 64-wide heads (ViT convention) and
    the decoder 32-wide heads (facebookresearch MAE and the released weights: 512 wide, 16 heads,
    see :func:`foreign_decoder_heads`); override them if needed.
    Without decoder weights the decoder takes the :class:`MAEConfig` defaults.
    """
    try:
        proj, pos = state["patch_embed.proj.weight"], state["pos_embed"]
    except KeyError as exc:
        raise UsfmaeError(f"not a ViT/MAE state dict: no {exc.args[0]} key") from exc
    embed_dim, in_chans, patch = proj.shape[0], proj.shape[1], proj.shape[-1]
    grid = math.isqrt(pos.shape[1] - 1)
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    values: dict[str, Any] = dict(img_size=grid * patch, patch_size=patch, in_chans=in_chans, embed_dim=embed_dim,
                                  depth=max(blocks) + 1 if blocks else 0, num_heads=max(1, embed_dim // 64),
                                  mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim if blocks else 4.0)
    if "decoder_embed.weight" in state:
        dec_dim = state["decoder_embed.weight"].shape[0]
        dec_blocks = {int(m.group(1)) for k in state if (m := re.match(r"decoder_blocks\.(\d+)\.", k))}
        values.update(decoder_embed_dim=dec_dim, decoder_depth=max(dec_blocks) + 1 if dec_blocks else 0,
                      decoder_num_heads=foreign_decoder_heads(state) or max(1, dec_dim // 32))
    return resolve_config(values, **overrides)


def foreign_decoder_heads(state: StateDict) -> int | None:
    """Decoder heads of a file that records no config (released USF-MAE, facebookresearch MAE).

    Every facebookresearch MAE factory, and so the released USF-MAE weights, has a 512-wide decoder
    with 16 heads. None when the file has no decoder weights or another width (layout unknown).
    """
    weight = state.get("decoder_embed.weight")
    return 16 if weight is not None and weight.shape[0] == 512 else None


def match_foreign_decoder(cfg: MAEConfig, name: str | None, state: StateDict, label: str,
                          explicit: bool = False) -> tuple[MAEConfig, str | None]:
    """Give a chosen variant the decoder heads of foreign (released / facebookresearch) weights.

    The head count is not visible in the tensor shapes, so 16-head weights fit an 8-head variant
    and would run with the wrong attention. When ``cfg`` differs from the file's layout and the
    caller did not set ``decoder_num_heads`` (``explicit``), the file's layout wins and a warning
    says so; the returned name is the registered variant with that layout (e.g.
    ``mae_vit_base_patch16`` -> ``mae_vit_base_patch16_dec16``).
    """
    heads = foreign_decoder_heads(state)
    if (explicit or heads is None or heads == cfg.decoder_num_heads
            or state["decoder_embed.weight"].shape[0] != cfg.decoder_embed_dim):
        return cfg, name
    fixed = resolve_config(cfg, decoder_num_heads=heads)
    new_name = find_variant(fixed) or name
    chosen = f"{name} ({describe_model(name)})" if name and find_variant(cfg) == name else (name or "the model")
    log.warning("%s: decoder weights have the released USF-MAE / facebookresearch MAE layout (%d heads); "
                "%s has %d decoder heads: building %s with %d (pass decoder_num_heads to override)",
                label, heads, chosen, cfg.decoder_num_heads, new_name or "it", heads)
    return fixed, new_name


def check_foreign_decoder(model: VisionTransformerEncoder, state: StateDict, label: str) -> None:
    """Refuse foreign decoder weights whose head layout differs from an already built ``model``.

    Raises:
        UsfmaeError: naming the file's and the model's head counts and the variant to use instead.
    """
    cfg = model.cfg
    heads = foreign_decoder_heads(state)
    if (heads is None or not hasattr(model, "decoder_blocks") or heads == cfg.decoder_num_heads
            or state["decoder_embed.weight"].shape[0] != cfg.decoder_embed_dim):
        return
    name = getattr(model, "model_name", None) or "the model"
    match = find_variant(resolve_config(cfg, decoder_num_heads=heads))
    fix = f"--model {match}" if match else ""
    fix = f"{fix + ' or ' if fix else ''}--decoder-num-heads {heads} (decoder_num_heads={heads})"
    raise UsfmaeError(f"{label}: decoder weights have the released USF-MAE / facebookresearch MAE layout "
                      f"({heads} heads) but {name} has {cfg.decoder_num_heads} decoder heads; use {fix}, "
                      "or load the encoder only")


def architecture_name(source: str | os.PathLike | dict) -> str:
    """The architecture a checkpoint holds, as a label: its recorded ``model_name``, else the
    registered variant its config (recorded or inferred from shapes) equals, else ``vit_<D>x<depth>``."""
    state, meta = read_checkpoint(source)
    if meta.get("model_name"):
        return str(meta["model_name"])
    cfg = resolve_config(meta["model_cfg"]) if meta.get("model_cfg") else infer_config(state)
    return find_variant(cfg) or f"vit_{cfg.embed_dim}x{cfg.depth}"


def build_from_checkpoint(source: str | os.PathLike | dict, model_name: str | None = None, encoder_only: bool = False,
                          allow_pickle: bool = False, **overrides: Any) -> MaskedAutoencoderViT:
    """Recreate an MAE from a checkpoint and load its weights.

    The architecture comes from the checkpoint's stored ``model_cfg`` (ours, or an exported encoder),
    else from ``model_name``, else it is inferred from tensor shapes (released USF-MAE, MAE, timm).
    ``overrides`` change config fields, e.g. ``in_chans=1`` to adapt the released 3-channel weights or
    ``img_size=128`` to resample the positional tables.
    """
    state, meta = read_checkpoint(source, allow_pickle)
    label = "checkpoint" if isinstance(source, dict) else str(source)
    if meta.get("model_cfg"):
        cfg, name = resolve_config(meta["model_cfg"], **overrides), meta.get("model_name")
    elif model_name is not None:
        cfg, name = variant_config(model_name, **overrides), model_name
        if not encoder_only:
            cfg, name = match_foreign_decoder(cfg, name, state, label, "decoder_num_heads" in overrides)
    else:
        cfg = infer_config(state, **overrides)
        name = find_variant(cfg)
    # Check and adapt against a shape-only model first: when the file covers every weight, random
    # initialisation (seconds for ViT-B on a CPU) is skipped and the tensors are moved in directly.
    with torch.device("meta"):
        shell = MaskedAutoencoderViT(cfg)
    shell.model_name = name
    state, result = _fit_state(shell, state, label, encoder_only)
    if result.kept_init:
        model = MaskedAutoencoderViT(cfg)
        model.load_state_dict(state, strict=False)
    else:
        model = shell
        # Copy as float32 so the model neither aliases the caller's tensors nor inherits fp16/bf16.
        owned = {k: v.detach().to(torch.float32 if v.is_floating_point() else v.dtype, copy=True)
                 for k, v in state.items()}
        model.load_state_dict(owned, strict=True, assign=True)
    model.model_name = name
    return model


# ----------------------------------------------------------------------------------------------------
# Writing


def checkpoint_metadata(model: VisionTransformerEncoder) -> dict[str, Any]:
    """``{"model_name", "model_cfg", "data_contract"}``: put these beside ``"model"`` in every checkpoint."""
    return {"model_name": getattr(model, "model_name", None), "model_cfg": model.cfg.to_dict(),
            "data_contract": model.data_contract.to_dict()}


def save_model(model: VisionTransformerEncoder, path: str | os.PathLike, **extra: Any) -> Path:
    """Write ``{"model": state_dict, "model_name", "model_cfg", "data_contract", **extra}`` atomically."""
    return save_checkpoint({"model": model.state_dict(), **checkpoint_metadata(model), **extra}, path)


def timm_config(model: VisionTransformerEncoder) -> dict[str, Any]:
    """A timm/Hugging Face style ``config.json`` for the encoder (architecture, model_args, pretrained_cfg)."""
    cfg = model.cfg
    model_args = dict(img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans, embed_dim=cfg.embed_dim,
                      depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, global_pool="token")
    return {
        "architecture": _TIMM_NAMES.get((cfg.embed_dim, cfg.depth), "vit_base_patch16_224"),
        "num_classes": 0,
        "num_features": cfg.embed_dim,
        "model_args": model_args,
        "pretrained_cfg": {**model.data_contract.timm_cfg(), "first_conv": "patch_embed.proj", "classifier": "head"},
    }


def export_encoder(model: VisionTransformerEncoder, path: str | os.PathLike,
                   metadata: dict[str, Any] | None = None) -> Path:
    """Write the encoder as timm-compatible safetensors plus a JSON sidecar (``path`` with ``.json``).

    The file holds only encoder keys (no decoder, no mask token) and loads into
    ``timm.create_model(cfg["architecture"], num_classes=0, **cfg["model_args"])``. Our metadata
    (model name, config, data contract, ``metadata``) is stored both in the safetensors header and in
    the sidecar, whose ``pretrained_cfg`` gives timm the input size, mean and std.

    Returns:
        The path of the sidecar JSON.
    """
    model = getattr(model, "encoder", model)  # an EncoderClassifier exports its encoder
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not is_decoder_key(k)}
    info = {**checkpoint_metadata(model), **(metadata or {})}
    save_safetensors(state, path, metadata={"format": "pt", "usfmae": json.dumps(info, default=str)})
    sidecar = Path(path).with_suffix(".json")
    write_json(sidecar, {**timm_config(model), "usfmae": info})
    return sidecar
