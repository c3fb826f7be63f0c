"""Linear probe and k-NN on frozen encoder features, with label-fraction curves.

Features are extracted once (no masking, CLS or mean-pooled); then for every label fraction, fold
and seed a logistic regression on standardised features and a cosine k-NN are fit on the training
part and scored on the test part. Writes OUT/results/*.json (one per cell), OUT/curve.csv and
OUT/curve.json (mean/std macro-F1 and accuracy per method and fraction).

Examples:
  usfmae probe --weights demo_out/4_pretrain/checkpoints/final.pt --data phantom:demo_out/1_task
  usfmae probe --weights usfmae.pt --model mae_vit_base_patch16 --data busbra:~/data/BUSBRA \\
      --fractions 0.01 0.1 1 --seeds 0 1 2 --knn-k 20
"""

from __future__ import annotations

import argparse

from usfmae.config import add_dataclass_arguments, config_from_args
from usfmae.downstream.benchmark import ProbeConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML preset with any of the settings below")
    add_dataclass_arguments(parser, ProbeConfig)


def run(args: argparse.Namespace) -> int:
    from usfmae.downstream.benchmark import run_probe

    cfg = config_from_args(ProbeConfig, args)
    summary = run_probe(cfg)
    print(f"{summary['dataset']}: {summary['n_images']} images, features of dimension {summary['feature_dim']}")
    print("method  fraction  n_train  macro-F1         accuracy")
    for row in summary["curve"]:
        print(f"{row['method']:<7} {row['fraction']:>8g} {row['n_train_mean']:>8.0f}  "
              f"{row['f1_macro_mean']:.3f} +- {row['f1_macro_std']:.3f}  "
              f"{row['accuracy_mean']:.3f} +- {row['accuracy_std']:.3f}")
    print(f"curve: {cfg.out}/curve.csv")
    return 0
