"""Fine-tune an encoder (or a CNN/ViT baseline) on a labelled dataset, fold by fold and seed by seed.

Each (fold, seed) cell writes OUT/<dataset>__<label>__frac<F>__fold<K>__seed<S>.json (the
`usfmae report` schema) with per-image predictions, metrics (precision/recall/F1 macro and
weighted, accuracy, AUROC, confusion matrix), bootstrap 95 percent confidence intervals and the
protocol (input size, pretraining source and mask ratio, label fraction, recipe); re-running
skips finished cells. Early stopping uses an inner validation split of each training fold,
grouped by patient. Every epoch prints one line (train loss, validation macro-F1, lr) and is logged
to OUT/log.jsonl, drawn at the end as OUT/learning_curves.png; --tensorboard also writes
OUT/tensorboard (tensorboard --logdir OUT/tensorboard).

Examples:
  usfmae finetune --data busbra:~/data/BUSBRA --weights usfmae.pt --model mae_vit_base_patch16 \\
      --in-chans 3 --out runs/busbra_usfmae
  usfmae finetune --data folder:my_set --model resnet50 --split kfold --k 5 --seeds 0 1 2
  usfmae finetune --data phantom:demo_out/1_task --model mae_vit_micro_patch8_64 --mode linear   # after usfmae demo
"""

from __future__ import annotations

import argparse
import json

from usfmae.config import add_dataclass_arguments, config_from_args
from usfmae.eval.report import format_spread
from usfmae.train.finetune import FinetuneConfig
from usfmae.train.watch import EpochLog


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML preset with any of the settings below")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write TensorBoard event files to OUT/tensorboard (needs tensorboard)")
    add_dataclass_arguments(parser, FinetuneConfig)


def run(args: argparse.Namespace) -> int:
    from usfmae.train import finetune

    cfg = config_from_args(FinetuneConfig, args)
    watch = EpochLog(cfg.out, tensorboard=args.tensorboard)  # a line per epoch, OUT/log.jsonl
    try:
        summary = finetune.run(cfg, on_epoch_end=watch)
    finally:
        watch.close()  # OUT/learning_curves.png
    agg = summary["summary"]
    mean, std, count = agg.get("mean", {}), agg.get("std", {}), agg.get("count", {})
    # Mean +- sample std over the cells; one cell has no spread ("n/a", not 0.000).
    shown = {k: format_spread(mean[k], std.get(k), count.get(k, 1), digits=3)
             for k in ("precision_macro", "recall_macro", "f1_macro", "accuracy") if k in mean}
    print(json.dumps({"out": cfg.out, "cells": len(summary["cells"]), "skipped": summary["skipped"], **shown},
                     ensure_ascii=False))
    return 0
