"""Find evaluation images that also sit in a pretraining corpus (exact or near-duplicate).

--pretrain is an ingest manifest (or its corpus folder); --eval is a manifest or a plain folder
of images / videos / DICOM / volumes, hashed on the fly. Writes OUT/pairs.csv (+ .parquet), one
row per overlapping pair, and OUT/summary.md (+ .json) with counts per evaluation source and the
pretraining sources they overlap. Feed pairs.csv back to ingest to remove the overlap.

Examples:
  usfmae audit --pretrain corpus/manifest.parquet --eval /data/BUSBRA/Images --out audit
  usfmae ingest /data/openus --out corpus --exclude audit/pairs.csv
"""

from __future__ import annotations

import argparse

from usfmae.config import add_dataclass_arguments, config_from_args
from usfmae.curate.audit import AuditConfig, audit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pretrain", required=True, help="pretraining manifest.parquet (or corpus folder)")
    parser.add_argument("--eval", required=True, dest="evaluation", help="evaluation manifest or folder")
    parser.add_argument("--out", required=True, help="output folder for pairs and summary")
    parser.add_argument("--config", help="YAML preset with any of the settings below")
    add_dataclass_arguments(parser, AuditConfig, skip=("pretrain", "evaluation", "out"))


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(AuditConfig, args)
    summary = audit(cfg)
    print(f"{summary['eval_frames_overlapping']} of {summary['eval_frames']} evaluation frames overlap the "
          f"pretraining corpus ({summary['pairs']} pairs) -> {cfg.out}/pairs.csv, {cfg.out}/summary.md")
    for s in summary["per_source"]:
        print(f"  {s['eval_source']}: {s['any']}/{s['eval_frames']} ({s['exact']} exact, {s['near_only']} near only)")
    return 0
