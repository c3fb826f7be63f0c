"""Generate synthetic B-mode ultrasound images with burned-in scanner overlays and ground truth.

Each image comes with its clean version (no overlays), the exact overlay mask, the scan-fan
geometry and a benign/malignant (optionally normal) label; a Parquet manifest lists them all.
The same --seed always gives the same images, and image i does not depend on --n.

Examples:
  usfmae phantom --n 200 --out data/phantom
  usfmae phantom --n 1000 --out data/hard --contrast 0.4 --noise 3 --geometry convex
  usfmae phantom --n 0 --sheet docs/figures/phantom_sheet.png      # only the contact sheet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from usfmae.config import add_dataclass_arguments, config_from_args
from usfmae.errors import ConfigError
from usfmae.phantom.generate import PhantomConfig, contact_sheet, write_phantom_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, required=True, help="number of images to generate (0 = none)")
    parser.add_argument("--out", type=Path, help="output folder (images/, clean/, masks/, manifest.parquet)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    parser.add_argument("--sheet", type=Path, help="also write a labelled contact sheet PNG of examples here")
    parser.add_argument("--config", type=Path, help="YAML preset of the settings below (flags win)")
    add_dataclass_arguments(parser, PhantomConfig)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(PhantomConfig, args)
    if args.n < 0:
        raise ConfigError(f"--n must be zero or positive, got {args.n}")
    if args.n > 0 and args.out is None:
        raise ConfigError("--out is required when --n is positive")
    if args.out is None and args.sheet is None:
        raise ConfigError("nothing to do: give --out (with --n) and/or --sheet")
    if args.out is not None:
        manifest = write_phantom_dataset(args.out, args.n, args.seed, cfg, progress=sys.stderr.isatty())
        print(f"wrote {args.n} images and {manifest}")
    if args.sheet is not None:
        contact_sheet(args.sheet, seed=args.seed, size=cfg.size, cfg=cfg)
        print(f"wrote contact sheet {args.sheet}")
    return 0
