"""Fine-tune an encoder (or the U-Net ResNet-50 baseline) for segmentation, fold by fold and seed by seed.

Each (fold, seed) cell writes OUT/<dataset>__<label>__frac<F>__fold<K>__seed<S>.json (the
`usfmae report` schema, protocol.task = segmentation) with Dice, IoU and HD95 per image and class
at the original image size, bootstrap 95 percent confidence intervals and the protocol; beside it a
folder with the predicted masks (label-index PNGs) and the trained model (model.safetensors +
model.json, for `usfmae predict` and `usfmae export`). Re-running skips finished cells.

Examples:
  usfmae segment --data busbra:~/data/BUSBRA --weights usfmae.pt --model mae_vit_base_patch16 \\
      --in-chans 3 --head pyramid --out runs/busbra_seg
  usfmae segment --data mmotu:~/data/OTU_2d --model unet_resnet50 --out runs/mmotu_unet
  usfmae segment --data phantom:demo_out/1_task --model mae_vit_micro_patch8_64 --head linear --freeze
"""

from __future__ import annotations

import argparse
import json

from usfmae.config import add_dataclass_arguments, config_from_args
from usfmae.train.segment import SegmentConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML preset with any of the settings below")
    add_dataclass_arguments(parser, SegmentConfig)


def run(args: argparse.Namespace) -> int:
    from usfmae.train import segment

    cfg = config_from_args(SegmentConfig, args)
    summary = segment.run(cfg)
    mean, std = summary["summary"].get("mean", {}), summary["summary"].get("std", {})
    shown = {k: f"{mean[k]:.3f} +- {std[k]:.3f}" for k in ("dice", "iou", "hd95", "hd95_mm") if k in mean}
    print(json.dumps({"out": cfg.out, "cells": len(summary["cells"]), "skipped": summary["skipped"], **shown}))
    return 0
