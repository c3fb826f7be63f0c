"""Turn a folder of ultrasound sources into PNG frames and a Parquet manifest.

ROOT holds one sub-folder per source (see `usfmae sources check ROOT`). Images (PNG, JPEG, BMP,
TIFF; 8/16-bit), videos (MP4, AVI, MOV; sampled at --fps), DICOM (single frame and cine, sampled at
--fps) and volumes (NIfTI, NRRD, MHA/MHD; sliced along --axis, empty slices skipped) become frames
under CORPUS/frames/ and rows of CORPUS/manifest.parquet. Exact duplicates are dropped; near
duplicates (pHash distance <= --phash-threshold) are dropped or flagged. Unreadable files become
"rejected" rows and lines in CORPUS/rejects.jsonl; the run goes on. Re-running resumes: files
already done are skipped.

Examples:
  usfmae ingest /data/openus --out corpus
  usfmae ingest /data/openus --out corpus --fps 3 --near-dup flag --workers 8
  usfmae ingest /data/openus --out corpus --exclude audit/pairs.csv   # drop evaluation overlap
"""

from __future__ import annotations

import argparse

from usfmae.config import add_dataclass_arguments, config_from_args
from usfmae.curate.ingest import IngestConfig, run_ingest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="folder with one sub-folder per source")
    parser.add_argument("--out", required=True, help="output corpus folder (created; resumed if it exists)")
    parser.add_argument("--config", help="YAML preset with any of the settings below")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dataclass_arguments(parser, IngestConfig, skip=("root", "out"))


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(IngestConfig, args)
    result = run_ingest(cfg, progress=not args.no_progress)
    print(f"{result['files']} files ({result['processed']} processed now): {result['ok']} frames ok, "
          f"{result['duplicate']} duplicate, {result['near_duplicate']} near-duplicate, "
          f"{result['excluded']} excluded, {result['rejected']} rejected -> {result['manifest']}")
    return 0
