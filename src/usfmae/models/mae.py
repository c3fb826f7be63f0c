"""A masked autoencoder with a Vision Transformer encoder, in one file.

Reading order: config, small blocks (patch embedding, attention, MLP, block), positional embeddings,
then the model (masking, encoder, decoder, loss). Shapes use B = batch, C = channels, H/W = image
size, p = patch size, L = number of patches, K = visible patches, D = width.

Parameter names are the contract that lets weights move without renaming: the encoder's names equal
timm's ``VisionTransformer`` (``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.N.*``,
``norm``) and the decoder's equal facebookresearch MAE (``mask_token``, ``decoder_embed``,
``decoder_pos_embed``, ``decoder_blocks.N.*``, ``decoder_norm``, ``decoder_pred``). Patches are
flattened as (p, p, C), the layout of the released USF-MAE ``decoder_pred``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from usfmae.config import check, to_dict
from usfmae.contract import GRAY_MEAN, GRAY_STD, IMAGENET_MEAN, IMAGENET_STD, DataContract, default_mean_std
from usfmae.errors import UsfmaeError

# The statistics live with the data contract; re-exported here for older imports.
__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "GRAY_MEAN", "GRAY_STD", "default_mean_std", "MAEConfig",
           "VisionTransformerEncoder", "MaskedAutoencoderViT", "is_decoder_key", "sincos_pos_embed_2d"]


@dataclass
class MAEConfig:
    """Architecture and data contract of a masked autoencoder (saved inside every checkpoint).

    ``mean``/``std`` left as ``None`` take :func:`default_mean_std` for ``in_chans``; ``fit`` is how
    images were made square for pretraining ("pad" or "stretch", see :mod:`usfmae.imaging`), which
    downstream stages reuse. Together with ``img_size`` and ``in_chans`` they form the model's
    :class:`~usfmae.contract.DataContract` (``model.data_contract``).
    """

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 1
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 8
    mask_ratio: float = 0.25
    norm_pix_loss: bool = False
    pos_embed: str = "sincos"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    grad_checkpointing: bool = False
    norm_eps: float = 1e-6  # LayerNorm epsilon: 1e-6 in timm and MAE, 1e-12 in Hugging Face ViTMAE configs
    fit: str = "pad"

    def __post_init__(self) -> None:
        check(self.in_chans >= 1, f"in_chans must be >= 1, got {self.in_chans}")
        check(self.patch_size >= 1 and self.img_size % self.patch_size == 0,
              f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}")
        check(self.embed_dim % self.num_heads == 0, f"embed_dim {self.embed_dim} not divisible by {self.num_heads} heads")
        check(self.decoder_embed_dim % self.decoder_num_heads == 0,
              f"decoder_embed_dim {self.decoder_embed_dim} not divisible by {self.decoder_num_heads} heads")
        check(0.0 <= self.mask_ratio < 1.0, f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        check(self.pos_embed in ("sincos", "learned"), f"pos_embed must be 'sincos' or 'learned', got {self.pos_embed!r}")
        if self.pos_embed == "sincos":
            check(self.embed_dim % 4 == 0 and self.decoder_embed_dim % 4 == 0,
                  "sin-cos positional embeddings need widths divisible by 4")
        mean, std = default_mean_std(self.in_chans)
        self.mean = tuple(float(v) for v in (mean if self.mean is None else self.mean))
        self.std = tuple(float(v) for v in (std if self.std is None else self.std))
        check(len(self.mean) == self.in_chans and len(self.std) == self.in_chans,
              f"mean/std need {self.in_chans} values, got {len(self.mean)}/{len(self.std)}")
        check(all(s > 0 for s in self.std), "std values must be positive")
        check(self.fit in ("pad", "stretch"), f"fit must be 'pad' or 'stretch', got {self.fit!r}")

    @property
    def grid_size(self) -> int:
        """Patches per side (the patch grid is square)."""
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    def to_dict(self) -> dict[str, Any]:
        """Plain types (tuples -> lists), for checkpoints and JSON."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MAEConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a checkpoint from another model)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UsfmaeError(f"unknown MAEConfig field(s): {', '.join(unknown)}")
        return cls(**values)


# ----------------------------------------------------------------------------------------------------
# Building blocks


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens: (B, C, H, W) -> (B, L, D), via a strided conv."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.proj.in_channels or x.shape[-2:] != (self.img_size, self.img_size):
            raise UsfmaeError(f"model expects images (B, {self.proj.in_channels}, {self.img_size}, {self.img_size}), "
                              f"got {tuple(x.shape)}")
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention`` (flash/memory-efficient kernels)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, D)."""
        B, N, D = x.shape
        # (B, N, 3*D) -> (3, B, heads, N, D/heads): q, k, v per head.
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, D))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def default_feature_indices(depth: int) -> list[int]:
    """Blocks whose outputs feed a segmentation decoder: 3, 5, 7, 11 of 12 (ViTDet/BEiT), proportional
    for other depths (e.g. 7, 11, 15, 23 of 24; 0, 1, 2, 3 of 4), distinct and increasing."""
    picked = [max(0, round(depth * (i + 1) / 12) - 1) for i in (3, 5, 7, 11)]
    out: list[int] = []
    for i in picked:  # shallow encoders: keep them distinct where the depth allows
        out.append(min(depth - 1, max(i, out[-1] + 1)) if out else i)
    return out


def sincos_pos_embed_2d(dim: int, grid_size: int, cls_token: bool = True) -> torch.Tensor:
    """Fixed 2D sine-cosine positional embedding, (1 + grid_size**2, dim) with a zero CLS row.

    The first half of the channels encodes the column, the second half the row; each half is
    [sin(pos * w_k), cos(pos * w_k)] with w_k = 10000^(-k / (dim/4)). This is the layout of the
    released checkpoints. Computed in float64, returned as float32.
    """
    quarter = dim // 4
    # Explicit CPU device: a fixed table, computed the same whatever the default device is.
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64, device="cpu") / quarter)
    coords = torch.arange(grid_size, dtype=torch.float64, device="cpu")
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # row-major patch order

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega.reshape(1, -1)  # (L, dim/4)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    emb = torch.cat([encode(cols), encode(rows)], dim=1)  # (L, dim)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype, device="cpu"), emb], dim=0)
    return emb.float()


def _init_positions(param: nn.Parameter, kind: str, grid_size: int) -> None:
    """Fill a (1, 1 + L, D) positional table: fixed sin-cos, or N(0, 0.02) when learned."""
    if param.is_meta:  # shape-only model (checkpoint loading): nothing to fill
        return
    if kind == "sincos":
        param.data.copy_(sincos_pos_embed_2d(param.shape[-1], grid_size).unsqueeze(0))
    else:
        nn.init.normal_(param, std=0.02)


def _init_linear_and_norm(*modules: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every Linear; unit/zero LayerNorms."""
    for root in modules:
        for module in root.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


# ----------------------------------------------------------------------------------------------------
# The model


class VisionTransformerEncoder(nn.Module):
    """ViT encoder with timm's parameter names; also the base of :class:`MaskedAutoencoderViT`."""

    def __init__(self, cfg: MAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_dim = self.num_features = cfg.embed_dim
        self.grad_checkpointing = cfg.grad_checkpointing
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        # Fixed sin-cos embeddings are parameters with requires_grad=False (not buffers), so they
        # appear in state_dict under the same names as in timm and the released weights.
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.num_patches, cfg.embed_dim),
                                      requires_grad=cfg.pos_embed == "learned")
        self.blocks = nn.ModuleList(Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.norm_eps)
                                    for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self._init_encoder_weights()

    @property
    def data_contract(self) -> DataContract:
        """The preprocessing contract (image size, channels, mean, std, fit policy)."""
        return DataContract(self.cfg.img_size, self.cfg.in_chans, self.cfg.mean, self.cfg.std, self.cfg.fit)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in backward (saves memory on large variants, costs ~30% time)."""
        self.grad_checkpointing = enable

    def _run_blocks(self, blocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        for blk in blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x

    def _init_encoder_weights(self) -> None:
        """MAE initialisation: sin-cos or N(0, 0.02) positions, xavier-uniform linears and patch projection."""
        _init_positions(self.pos_embed, self.cfg.pos_embed, self.cfg.grid_size)
        # Treat the patch projection like a linear layer (fan computed on the flattened kernel).
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        _init_linear_and_norm(self.blocks, self.norm)

    def random_masking(self, x: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keep a uniformly random subset of ``int(L * (1 - mask_ratio))`` tokens per sample.

        Args:
            x: tokens (B, L, D).
            mask_ratio: fraction of tokens to drop.
            generator: optional ``torch.Generator`` on ``x.device`` for reproducible masks; the
                noise is drawn from it, so with a fixed generator the mask depends on nothing else.

        Returns:
            x_visible (B, K, D); mask (B, L) with 1 = masked, in original order; ids_restore (B, L),
            the permutation that puts shuffled tokens back (``gather(shuffled, ids_restore)``).
        """
        B, L, D = x.shape
        len_keep = int(L * (1 - mask_ratio))
        noise = torch.rand(B, L, device=x.device, generator=generator)
        ids_shuffle = torch.argsort(noise, dim=1)  # ascending: the smallest noise values are kept
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_visible = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, D))
        # float32 whatever the autocast dtype: the loss divides by mask.sum(), which bf16 cannot count exactly.
        mask = torch.ones(B, L, device=x.device, dtype=torch.float32)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return x_visible, mask, ids_restore

    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the visible patches.

        Args:
            imgs: normalised images (B, C, H, W).
            mask_ratio: fraction of patches hidden from the encoder.
            generator: optional generator for the masking noise.

        Returns:
            latent (B, 1 + K, D) with the CLS token first, mask (B, L), ids_restore (B, L).
        """
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x, mask_ratio, generator)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = self._run_blocks(self.blocks, torch.cat([cls, x], dim=1))
        return self.norm(x), mask, ids_restore

    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """All tokens without masking, (B, C, H, W) -> (B, 1 + L, D); equals timm's ``forward_features``."""
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = self._run_blocks(self.blocks, torch.cat([cls, x], dim=1))
        return self.norm(x)

    def forward_intermediates(self, imgs: torch.Tensor, indices: int | Sequence[int] | None = None, *,
                              norm: bool = False, intermediates_only: bool = True) -> list[torch.Tensor]:
        """Block outputs as patch-grid feature maps, without masking (timm's ``forward_intermediates``).

        Args:
            imgs: normalised images (B, C, H, W).
            indices: block indices (negative counts from the end), or an int n for the last n
                blocks; None = :func:`default_feature_indices` (blocks 3, 5, 7, 11 of a 12-block ViT).
            norm: apply the final norm to each map (timm's ``norm`` flag).
            intermediates_only: accepted for timm compatibility; only the maps are returned.

        Returns:
            One (B, D, H/p, W/p) map per index, in the order of ``indices``; the CLS token dropped.
        """
        depth = len(self.blocks)
        if indices is None:
            indices = default_feature_indices(depth)
        elif isinstance(indices, int):
            indices = list(range(depth - indices, depth))
        if not indices or any(not -depth <= i < depth for i in indices):
            raise UsfmaeError(f"block indices {list(indices)} out of range for a {depth}-block encoder")
        wanted = [i % depth for i in indices]
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        grid = imgs.shape[-1] // self.cfg.patch_size
        found: dict[int, torch.Tensor] = {}
        for i in range(max(wanted) + 1):  # stop after the deepest block asked for
            x = self._run_blocks(self.blocks[i:i + 1], x)
            if i in wanted:
                tokens = self.norm(x) if norm else x
                found[i] = tokens[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, grid, grid)
        return [found[i] for i in wanted]

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        """The CLS feature (B, D), as timm's ``VisionTransformer(num_classes=0)`` returns."""
        return self.forward_features(imgs)[:, 0]


class MaskedAutoencoderViT(VisionTransformerEncoder):
    """MAE: encode visible patches, decode all positions with mask tokens, regress masked pixels."""

    def __init__(self, cfg: MAEConfig) -> None:
        super().__init__(cfg)
        self.model_name: str | None = None  # set by registry.create_model
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_embed_dim))
        self.decoder_embed = nn.Linear(cfg.embed_dim, cfg.decoder_embed_dim)
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.num_patches, cfg.decoder_embed_dim),
                                              requires_grad=cfg.pos_embed == "learned")
        self.decoder_blocks = nn.ModuleList(Block(cfg.decoder_embed_dim, cfg.decoder_num_heads, cfg.mlp_ratio, cfg.norm_eps)
                                            for _ in range(cfg.decoder_depth))
        self.decoder_norm = nn.LayerNorm(cfg.decoder_embed_dim, eps=cfg.norm_eps)
        self.decoder_pred = nn.Linear(cfg.decoder_embed_dim, cfg.patch_size**2 * cfg.in_chans)
        _init_positions(self.decoder_pos_embed, cfg.pos_embed, cfg.grid_size)
        nn.init.normal_(self.mask_token, std=0.02)
        _init_linear_and_norm(self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, L, p*p*C), each patch flattened as (row, col, channel)."""
        p, C = self.cfg.patch_size, self.cfg.in_chans
        B, _, H, W = imgs.shape
        h, w = H // p, W // p
        x = imgs.reshape(B, C, h, p, w, p)
        x = torch.einsum("bchpwq->bhwpqc", x)
        return x.reshape(B, h * w, p * p * C)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, p*p*C) -> (B, C, H, W); the exact inverse of :meth:`patchify` (square grid)."""
        p, C = self.cfg.patch_size, self.cfg.in_chans
        B, L, _ = x.shape
        h = w = math.isqrt(L)
        if h * w != L:
            raise ValueError(f"unpatchify needs a square number of patches, got {L}")
        x = x.reshape(B, h, w, p, p, C)
        x = torch.einsum("bhwpqc->bchpwq", x)
        return x.reshape(B, C, h * p, w * p)

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Decode (B, 1 + K, D) encoder tokens into per-patch pixel predictions (B, L, p*p*C)."""
        x = self.decoder_embed(latent)
        B, L = ids_restore.shape
        mask_tokens = self.mask_token.expand(B, L - (x.shape[1] - 1), -1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # visible tokens, then mask tokens: shuffled order
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))  # back to image order
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        x = self.decoder_norm(self._run_blocks(self.decoder_blocks, x))
        return self.decoder_pred(x)[:, 1:, :]

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over masked patches only.

        Args:
            imgs: (B, C, H, W); pred: (B, L, p*p*C); mask: (B, L), 1 = masked.

        Returns:
            Scalar loss: per-patch MSE averaged over masked patches (0 when nothing is masked).
            With ``norm_pix_loss`` the target is each patch normalised by its own mean and std.
        """
        target = self.patchify(imgs)
        if self.cfg.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = ((pred.float() - target.float()) ** 2).mean(dim=-1)  # (B, L)
        return (per_patch * mask).sum() / mask.sum().clamp_min(1)

    def forward(self, imgs: torch.Tensor, mask_ratio: float | None = None, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mask, encode, decode, score.

        Args:
            imgs: normalised images (B, C, H, W).
            mask_ratio: overrides ``cfg.mask_ratio`` when given.
            generator: optional generator for the masking noise.

        Returns:
            loss (scalar), pred (B, L, p*p*C), mask (B, L) with 1 = masked.
        """
        ratio = self.cfg.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore = self.forward_encoder(imgs, ratio, generator)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """Encoder weights only (timm ``VisionTransformer`` keys): no decoder, no mask token."""
        return {k: v for k, v in self.state_dict().items() if not is_decoder_key(k)}


def is_decoder_key(key: str) -> bool:
    """True for MAE decoder-side keys (``decoder_*`` and ``mask_token``)."""
    return key.startswith("decoder_") or key == "mask_token"
