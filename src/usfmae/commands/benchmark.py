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

import yaml

from usfmae.downstream.benchmark import as_number
from usfmae.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="paper", help="built-in suite name or a YAML path (default: paper)")
    parser.add_argument("--data-root", required=True, help="folder holding the downloaded datasets")
    parser.add_argument("--out", required=True, help="output folder (results per cell, table.md, table.csv)")
    parser.add_argument("--weights", help="checkpoint for the suite's {weights} model (USF-MAE)")
    parser.add_argument("--baseline-weights", help="folder of local ImageNet weight files (vgg19.pth, ...)")
    parser.add_argument("--fm-weights", help="folder of foundation-model weight files under their published names "
                        "(UltraSam.pth, USFM_latest.pth, ...); models without theirs are left out")
    parser.add_argument("--models", nargs="+", help="run only these models of the suite")
    parser.add_argument("--datasets", nargs="+", help="run only these datasets of the suite")
    parser.add_argument("--sweep", action="store_true", help="run the suite's hyper-parameter sweep")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override recipe settings for every cell, e.g. epochs=5 device=cuda")


def parse_overrides(items: list[str]) -> dict:
    """``["epochs=5", "seeds=[0,1]"]`` -> ``{"epochs": 5, "seeds": [0, 1]}`` (values read as YAML)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key.replace("-", "_")] = as_number(yaml.safe_load(value))
    return out


def run(args: argparse.Namespace) -> int:
    from usfmae.downstream import benchmark

    summary = benchmark.run(args.suite, args.data_root, args.out, weights=args.weights,
                            baseline_weights=args.baseline_weights, sweep=args.sweep, models=args.models,
                            datasets=args.datasets, overrides=parse_overrides(args.set), fm_weights=args.fm_weights)
    print(f"cells run: {summary['cells_run']}, skipped (already done): {summary['cells_skipped']}")
    if summary["table"]:
        print(open(summary["table"], encoding="utf-8").read())
    return 0
