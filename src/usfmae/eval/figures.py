"""Figures for pretraining: MAE reconstruction grids and the loss curve (matplotlib, Agg backend).

Both write PNG files atomically and return what they drew, so tests can check numbers, not pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from usfmae.fileio import atomic_path  # noqa: E402

MASKED_GRAY = 0.5  # display value of hidden patches in the "masked" column


@torch.no_grad()
def reconstruct(model: torch.nn.Module, images: torch.Tensor, seed: int = 0, mask_ratio: float | None = None
                ) -> dict[str, torch.Tensor]:
    """Mask, reconstruct and paste back, with a reproducible mask.

    Args:
        model: a MaskedAutoencoderViT (unwrapped).
        images: (n, C, H, W) normalised images.
        seed: seed of the masking noise.
        mask_ratio: overrides the model's ratio.

    Returns:
        dict of CPU tensors in the normalised space: ``input``, ``masked`` (hidden patches zeroed),
        ``reconstruction`` (prediction everywhere), ``pasted`` (visible patches + predicted hidden
        ones), all (n, C, H, W); ``mask`` (n, 1, H, W) with 1 = hidden; ``loss`` scalar.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = images.to(device, torch.float32)
    generator = torch.Generator(device=device).manual_seed(seed)
    loss, pred, mask = model(x, mask_ratio, generator)
    pred = pred.float()
    if model.cfg.norm_pix_loss:
        # The model predicts per-patch normalised pixels: undo that with the input's own statistics.
        target = model.patchify(x)
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        pred = pred * (var + 1e-6) ** 0.5 + mean
    recon = model.unpatchify(pred)
    p, c = model.cfg.patch_size, model.cfg.in_chans
    mask_img = model.unpatchify(mask.unsqueeze(-1).expand(-1, -1, p * p * c).float())[:, :1]
    model.train(was_training)
    out = {"input": x, "masked": x * (1 - mask_img), "reconstruction": recon,
           "pasted": x * (1 - mask_img) + recon * mask_img, "mask": mask_img}
    out = {k: v.detach().cpu() for k, v in out.items()}
    out["loss"] = loss.detach().float().cpu()
    return out


def _to_display(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(C,H,W) normalised -> (H,W) or (H,W,3) float in [0, 1]."""
    m = torch.as_tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype).view(-1, 1, 1)
    img = (x * s + m).clamp(0, 1)
    return img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)


def reconstruction_grid(model: torch.nn.Module, images: torch.Tensor, data_config: dict, path: str | Path,
                        seed: int = 0, mask_ratio: float | None = None) -> float:
    """Write a grid, one row per image: input | masked | reconstruction | reconstruction + visible.

    Args:
        model: a MaskedAutoencoderViT (unwrapped).
        images: (n, C, H, W) normalised images.
        data_config: the model's ``{"mean", "std", ...}`` to undo the normalisation.
        path: PNG to write.
        seed, mask_ratio: as :func:`reconstruct`.

    Returns:
        The masked-patch loss on these images.
    """
    r = reconstruct(model, images, seed, mask_ratio)
    mean, std = data_config["mean"], data_config["std"]
    columns = ("input", "masked", "reconstruction", "pasted")
    titles = ("input", "masked", "reconstruction", "recon. + visible")
    n = images.shape[0]
    fig, axes = plt.subplots(n, len(columns), figsize=(2.0 * len(columns), 2.0 * n), squeeze=False)
    for i in range(n):
        for j, key in enumerate(columns):
            img = _to_display(r[key][i], mean, std)
            if key == "masked":  # show hidden patches as flat gray, not as the mean colour
                hidden = r["mask"][i, 0].bool()
                img = img.clone()
                img[hidden] = MASKED_GRAY
            ax = axes[i, j]
            ax.imshow(img.numpy(), cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=9)
    fig.suptitle(f"masked-patch MSE {float(r['loss']):.4f}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return float(r["loss"])


def loss_curve(records: Sequence[dict], path: str | Path, title: str = "MAE pretraining") -> int:
    """Plot ``loss`` (and ``lr`` on a second axis) against ``step`` from JSONL log records.

    Returns:
        Number of points plotted.
    """
    points = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if points:
        steps, losses = zip(*points, strict=True)
        ax.plot(steps, losses, color="tab:blue", label="loss")
        lrs = [(r["step"], r["lr"]) for r in records if r.get("lr") is not None]
        if lrs:
            ax2 = ax.twinx()
            ax2.plot(*zip(*lrs, strict=True), color="tab:orange", alpha=0.6, linewidth=1)
            ax2.set_ylabel("learning rate", color="tab:orange")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("masked-patch MSE", color="tab:blue")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return len(points)
