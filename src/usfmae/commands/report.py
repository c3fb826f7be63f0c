"""Render evaluation results as the paper's Table 2 (Markdown + CSV) with figures.

Reads every result JSON under RESULTS_DIR (written by finetune, probe and benchmark; one file per
model x dataset x fold x seed), averages each model/dataset cell over folds and seeds, and writes:

  table.md, table.csv             P/R/F1 in %, mean ± std (and 95% bootstrap CI with --ci)
  confusion/<dataset>__<model>.png  confusion matrices summed over folds and seeds
  label_efficiency_<dataset>.png  F1 vs label fraction, when several fractions were run
  label_efficiency.csv

Examples:
  usfmae report runs/paper --out reports/paper --with-paper
  usfmae report runs/demo --out reports/demo --average weighted --ci
"""

from __future__ import annotations

import argparse

from usfmae.config import add_dataclass_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from usfmae.eval.report import ReportConfig

    parser.add_argument("results_dir", metavar="RESULTS_DIR", help="folder of result JSON files (searched recursively)")
    parser.add_argument("--config", help="YAML preset of report settings")
    add_dataclass_arguments(parser, ReportConfig)


def run(args: argparse.Namespace) -> int:
    from usfmae.eval.report import ReportConfig, write_report

    cfg = config_from_args(ReportConfig, args)
    written = write_report(args.results_dir, cfg)
    table_md = (written.get("tables") or written["seg_tables"])[0]
    print(table_md.read_text(encoding="utf-8"), end="")
    for kind, paths in written.items():
        for path in paths:
            print(f"wrote {kind}: {path}")
    return 0
