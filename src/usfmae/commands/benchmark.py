"""Run a benchmark grid (models x datasets x folds x seeds) with resume, then render the table.

The built-in suite `paper` reproduces the USF-MAE paper's Table 2: USF-MAE, VGG-19, ResNet-50,
ViT-B/16 and UltraSam fine-tuned with one protocol on BUS-BRA, MMOTU-2D and GIST514-DB, laid out
under --data-root as downloaded (BUSBRA/, OTU_2d/, usd514-db/). The suite `fm-zoo` runs every
ultrasound foundation model whose weights are in --fm-weights on the same protocol. A finished cell (its results JSON
exists) is skipped, so re-running the same command resumes an interrupted grid.

Examples:
  usfmae benchmark --suite paper --data-root ~/data --weights usfmae.pt --out runs/paper
  usfmae benchmark --suite paper --data-root ~/data --models resnet50 vit_b16 --sweep --out runs/sweep
  usfmae benchmark --suite fm-zoo --data-root ~/data --fm-weights ~/weights --out runs/zoo
  usfmae benchmark --suite my_suite.yaml --data-root ~/data --out runs/mine --set epochs=5
"""

from __future__ import annotations

import argparse

from usfmae.config import add_dataclass_arguments, config_from_args
from usfmae.downstream.benchmark import BenchmarkConfig, run_benchmark


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", required=True, help="folder holding the downloaded datasets")
    parser.add_argument("--out", required=True, help="output folder (results per cell, table.md, table.csv)")
    parser.add_argument("--config", help="YAML preset with any of the settings below")
    add_dataclass_arguments(parser, BenchmarkConfig, skip=("data_root", "out"))


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(BenchmarkConfig, args)
    summary = run_benchmark(cfg)
    print(f"cells run: {summary['cells_run']}, skipped (already done): {summary['cells_skipped']}")
    if summary["table"]:
        with open(summary["table"], encoding="utf-8") as handle:
            print(handle.read())
    return 0
