"""Run every stage once on embedded phantom data: the quickest way to see what usfmae does.

Generates screen-like phantom ultrasound with burned-in overlays, cleans and packs it, pretrains a
micro MAE for a few CPU minutes, then compares on a few-label benign/malignant task: the
pretrained encoder (linear probe and fine-tune) vs the same ViT from scratch vs ResNet-50 from
scratch, with P/R/F1 and 95% bootstrap intervals. Re-running resumes finished stages.

Example:
    usfmae demo --out demo_out
    usfmae demo --out demo_small --n-pretrain 200 --pretrain-steps 50 --n-task 100
"""

from __future__ import annotations

import argparse

from usfmae.config import add_dataclass_arguments, config_from_args
from usfmae.demo import DemoConfig, run_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML preset with any of the settings below")
    add_dataclass_arguments(parser, DemoConfig)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(DemoConfig, args)
    summary = run_demo(cfg)
    print()
    print(summary["table"])
    print(f"outputs: {cfg.out}/ (figures: 4_pretrain/loss_curve.png, 4_pretrain/recon_*.png, "
          f"2_clean/contact_sheet.png, 6_report/confusion/)")
    return 0
