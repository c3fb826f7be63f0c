"""Write an MAE reconstruction grid (input | masked | reconstruction | reconstruction + visible).

--weights takes any MAE checkpoint: ours (checkpoints/last.pt or final.pt of `usfmae pretrain`), the
released USF-MAE file, or a facebookresearch MAE checkpoint (architecture inferred from the tensor
shapes, or named with --model). IMAGES are image files and/or folders (searched recursively);
unreadable files are skipped with one line. Images are decoded and fitted as in pretraining (the
model's data contract; --fit pad or stretch overrides its fit policy). The mask is reproducible (--seed).

Examples:
  usfmae reconstruct --weights runs/tiny/checkpoints/final.pt --out grid.png scans/a.png scans/b.png
  usfmae reconstruct --weights USF-MAE_full_pretrain_43dataset_100epochs.pt --mask-ratio 0.25 --out g.png scans/
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from usfmae import imaging
from usfmae.contract import normalise, prepare, resolve_contract
from usfmae.data.images import list_images
from usfmae.errors import ConfigError, DataError
from usfmae.eval.figures import reconstruction_grid
from usfmae.models.checkpoint import build_from_checkpoint

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", type=Path, help="image files and/or folders")
    parser.add_argument("--weights", type=Path, required=True, help="MAE checkpoint (ours, released USF-MAE, MAE)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--model", help="registered model name, for files that do not record their architecture")
    parser.add_argument("--in-chans", type=int, choices=(1, 3), help="adapt the weights to 1 or 3 channels")
    parser.add_argument("--mask-ratio", type=float, help="fraction of patches hidden (default: the model's)")
    parser.add_argument("--fit", choices=["pad", "stretch"],
                        help="how images become square (default: the model's pretraining fit, usually pad)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mask (default: 0)")
    parser.add_argument("--max-images", type=int, default=16, help="at most this many rows (default: 16)")


def run(args: argparse.Namespace) -> int:
    if args.mask_ratio is not None and not 0.0 <= args.mask_ratio < 1.0:
        raise ConfigError(f"--mask-ratio must be in [0, 1), got {args.mask_ratio}")
    if args.max_images < 1:
        raise ConfigError(f"--max-images must be positive, got {args.max_images}")
    overrides = {"in_chans": args.in_chans} if args.in_chans else {}
    model = build_from_checkpoint(args.weights, model_name=args.model, **overrides)
    contract = resolve_contract(model, fit=args.fit)
    files: list[Path] = []
    for item in args.images:
        if item.is_dir():
            files.extend(list_images(item))
        else:
            files.append(item)
    images = []
    for file in files:
        if len(images) == args.max_images:
            break
        try:
            images.append(normalise(prepare(imaging.read_image(file), contract), contract))
        except DataError as exc:
            log.warning("skipped %s", exc)
    if not images:
        raise DataError("no readable images among " + ", ".join(str(p) for p in args.images))
    loss = reconstruction_grid(model, torch.stack(images), contract.to_dict(), args.out, seed=args.seed,
                               mask_ratio=args.mask_ratio)
    print(f"wrote {args.out} ({len(images)} images, masked-patch MSE {loss:.4f})")
    return 0
