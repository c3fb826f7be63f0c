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

from usfmae.config import add_dataclass_arguments, config_from_args
from usfmae.downstream.reconstruct import ReconstructConfig, reconstruct


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files and/or folders")
    parser.add_argument("--weights", required=True, help="MAE checkpoint (ours, released USF-MAE, MAE)")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--config", help="YAML preset with any of the settings below")
    add_dataclass_arguments(parser, ReconstructConfig, skip=("images", "weights", "out"))


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(ReconstructConfig, args)
    result = reconstruct(cfg)
    print(f"wrote {result['out']} ({result['images']} images, masked-patch MSE {result['loss']:.4f})")
    return 0
