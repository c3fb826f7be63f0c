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

from usfmae.curate.audit import run_audit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pretrain", required=True, help="pretraining manifest.parquet (or corpus folder)")
    parser.add_argument("--eval", required=True, dest="evaluation", help="evaluation manifest or folder")
    parser.add_argument("--out", required=True, help="output folder for pairs and summary")
    parser.add_argument("--threshold", type=int, default=6,
                        help="largest pHash Hamming distance (of 64 bits) counted as near duplicate (default: 6)")
    parser.add_argument("--fps", type=float, default=3.0, help="frame rate when hashing videos in a folder")
    parser.add_argument("--axis", type=int, default=2, choices=[0, 1, 2], help="volume slicing axis")


def run(args: argparse.Namespace) -> int:
    summary = run_audit(args.pretrain, args.evaluation, args.out, threshold=args.threshold,
                        fps=args.fps, axis=args.axis)
    print(f"{summary['eval_frames_overlapping']} of {summary['eval_frames']} evaluation frames overlap the "
          f"pretraining corpus ({summary['pairs']} pairs) -> {args.out}/pairs.csv, {args.out}/summary.md")
    for s in summary["per_source"]:
        print(f"  {s['eval_source']}: {s['any']}/{s['eval_frames']} ({s['exact']} exact, {s['near_only']} near only)")
    return 0
