"""Where did the model look: attention rollout and last-block CLS attention for ViTs, Grad-CAM for CNNs.

* :func:`attention_rollout` (Abnar & Zuidema, 2020): per block, the head-averaged attention plus the
  residual path, ``0.5 * A + 0.5 * I``, multiplied from the first block to the last; the CLS row over
  the patch tokens says how much each patch fed the CLS feature.
* :func:`cls_attention`: the last block's attention from the CLS token to the patches, head-averaged.
* :func:`grad_cam` (Selvaraju et al., 2017): the last spatial feature map weighted by the spatially
  averaged gradient of the target logit, rectified.

Attention weights are recomputed from each block's input (``qkv`` projection, scaled dot product,
softmax) by forward hooks, so the model keeps its fused attention kernel and nothing in it changes.
Every map is returned at the input size, scaled to [0, 1] per image (a constant map becomes 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from usfmae.errors import UsfmaeError
from usfmae.fileio import atomic_path

METHODS = ("rollout", "cls", "gradcam")


def _vit(model: nn.Module) -> nn.Module | None:
    """The ViT inside ``model`` (itself, or ``model.encoder``), or None for a CNN."""
    for candidate in (model, getattr(model, "encoder", None)):
        blocks = getattr(candidate, "blocks", None)
        if blocks is not None and len(blocks) and hasattr(blocks[0], "attn") and hasattr(blocks[0].attn, "qkv"):
            return candidate
    return None


def _attention_of(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax attention (B, heads, N, N) that ``attn`` (a ``qkv`` + ``num_heads`` module) applies to ``x``."""
    B, N, D = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(B, N, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    if isinstance(getattr(attn, "q_norm", None), nn.Module):  # timm ViTs may normalise queries/keys
        q = attn.q_norm(q)
    if isinstance(getattr(attn, "k_norm", None), nn.Module):
        k = attn.k_norm(k)
    scores = (q.float() @ k.float().transpose(-2, -1)) * (D // heads) ** -0.5
    return scores.softmax(dim=-1)


@torch.no_grad()
def vit_attentions(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Every block's attention for normalised ``images`` (B, C, H, W): a list of (B, heads, N, N).

    Raises:
        UsfmaeError: ``model`` has no ViT blocks.
    """
    vit = _vit(model)
    if vit is None:
        raise UsfmaeError(f"{type(model).__name__} has no attention blocks; use method='gradcam'")
    found: list[torch.Tensor] = []
    hooks = [blk.attn.register_forward_hook(lambda mod, inp, out: found.append(_attention_of(mod, inp[0])))
             for blk in vit.blocks]
    was_training = vit.training
    try:
        vit.eval().forward_features(images)
    finally:
        for hook in hooks:
            hook.remove()
        vit.train(was_training)
    return found


def attention_rollout(attentions: Sequence[torch.Tensor], residual: bool = True) -> torch.Tensor:
    """Attention rollout over blocks: (B, N, N), row i = how much each token fed token i at the end.

    Args:
        attentions: per block (B, heads, N, N) (or (B, N, N), already head-averaged), first block first.
        residual: add the skip connection as ``0.5 * A + 0.5 * I`` (rows renormalised to sum to 1).
    """
    result = None
    for attn in attentions:
        a = attn.float().mean(dim=1) if attn.ndim == 4 else attn.float()
        if residual:
            a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], device=a.device)
            a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    if result is None:
        raise UsfmaeError("attention rollout needs at least one block")
    return result


def cls_attention(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """The last block's CLS-to-token attention, head-averaged: (B, N)."""
    last = attentions[-1].float()
    return (last.mean(dim=1) if last.ndim == 4 else last)[:, 0]


def _to_maps(token_scores: torch.Tensor, size: int, num_prefix: int = 1) -> torch.Tensor:
    """CLS-row scores (B, P + g*g) -> (B, size, size) maps in [0, 1] (patch grid upsampled, nearest)."""
    patches = token_scores[:, num_prefix:]
    grid = int(round(patches.shape[1] ** 0.5))
    if grid * grid != patches.shape[1]:
        raise UsfmaeError(f"{patches.shape[1]} patch tokens do not form a square grid")
    maps = patches.reshape(-1, 1, grid, grid)
    maps = F.interpolate(maps, size=(size, size), mode="nearest")[:, 0]
    return _unit(maps)


def _unit(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map to [0, 1] (min 0, max 1); constant maps become 0."""
    flat = maps.flatten(1)
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    span = (hi - lo).clamp_min(1e-12).view(-1, *[1] * (maps.ndim - 1))
    out = (maps - lo.view_as(span)) / span
    return torch.where((hi - lo).view_as(span) > 0, out, torch.zeros_like(out))


def _last_spatial_module(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """The module whose 4-D output with a spatial size above 1 comes last in the forward pass."""
    order: list[tuple[nn.Module, tuple]] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: order.append((mod, tuple(out.shape))))
             for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model(images[:1])
    finally:
        for hook in hooks:
            hook.remove()
    spatial = [m for m, shape in order if len(shape) == 4 and shape[-1] * shape[-2] > 1]
    if not spatial:
        raise UsfmaeError(f"{type(model).__name__} has no spatial feature map for Grad-CAM")
    return spatial[-1]


def grad_cam(model: nn.Module, images: torch.Tensor, target: int | Sequence[int] | None = None,
             layer: nn.Module | None = None) -> torch.Tensor:
    """Grad-CAM maps (B, H, W) in [0, 1] for a classifier ``(B, C, H, W) -> logits (B, K)``.

    Args:
        target: class per image (or one for all); default: the predicted class.
        layer: the feature map to explain; default: the last module with a spatial output.
    """
    was_training = model.training
    model.eval()
    layer = layer or _last_spatial_module(model, images)
    store: dict[str, torch.Tensor] = {}

    def keep(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        out.retain_grad()
        store["act"] = out

    hook = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(images.detach().requires_grad_(True))
            if target is None:
                classes = logits.argmax(dim=1)
            else:
                classes = torch.as_tensor([target] * len(images) if isinstance(target, int) else list(target),
                                          device=logits.device)
            logits.gather(1, classes.view(-1, 1)).sum().backward()
    finally:
        hook.remove()
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    act, grad = store["act"].detach(), store["act"].grad.detach()
    weights = grad.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    cam = F.relu((weights * act).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return _unit(cam)


def explain(model: nn.Module, images: torch.Tensor, method: str = "rollout",
            target: int | Sequence[int] | None = None) -> torch.Tensor:
    """Maps (B, H, W) in [0, 1] for normalised ``images`` (B, C, H, W) by ``method`` (see :data:`METHODS`).

    ``rollout`` and ``cls`` need a ViT (an encoder, an MAE or a classifier around one); a CNN gets
    ``gradcam`` whatever ``method`` says, since it has no attention.
    """
    if method not in METHODS:
        raise UsfmaeError(f"unknown explanation method {method!r}; use one of {', '.join(METHODS)}")
    if method == "gradcam" or _vit(model) is None:
        return grad_cam(model, images, target)
    attentions = vit_attentions(model, images)
    scores = attention_rollout(attentions)[:, 0] if method == "rollout" else cls_attention(attentions)
    return _to_maps(scores, images.shape[-1], int(getattr(_vit(model), "num_prefix_tokens", 1)))


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """An RGB uint8 picture of ``image`` (H, W[, C] uint8) with ``heat`` (h, w) in [0, 1] as a JET map."""
    img = image if image.ndim == 3 else image[..., None]
    rgb = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[..., :3]
    heat = cv2.resize(heat.astype(np.float32), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.clip(heat * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    return np.clip((1 - alpha) * rgb + alpha * colour, 0, 255).astype(np.uint8)


def save_overlays(images: Sequence[np.ndarray], maps: np.ndarray, out_dir: str | Path,
                  names: Sequence[str]) -> list[Path]:
    """Write ``out_dir/<name>.png`` overlays (atomically); returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for image, heat, name in zip(images, maps, names, strict=True):
        path = out / f"{Path(name).stem}.png"
        with atomic_path(path) as tmp:  # the temporary name keeps .png, so OpenCV picks the format
            if not cv2.imwrite(str(tmp), overlay(image, heat)[..., ::-1]):
                raise UsfmaeError(f"{path}: could not write the overlay")
        written.append(path)
    return written
