"""Remove burned-in annotations (text, calipers, rulers, colour marks) and resize to 224x224.

INPUT is a folder of images (searched recursively) or a Parquet manifest written by `usfmae ingest`
(rows with status "ok"). For each image the command writes a cleaned PNG and the mask of removed
pixels, then a manifest.parquet, rejects.jsonl and a before/after contact sheet. Re-running skips
images already cleaned with the same method. With --shard I/N a run cleans only part I of N of the
images (the split of `usfmae ingest --shard`: a SLURM array task each); `usfmae merge` then checks that
all N finished and writes what one run writes (same manifest rows, images hard-linked).

Methods:
  usfmae  (default) finds the scan fan, blanks everything drawn on the screen around it, removes thin
          or flat bright marks and thin colour marks inside it (keeping colour Doppler and small
          anatomy), inpaints them, then resizes with area interpolation (aspect kept by padding).
  paper   the USF-MAE paper's pipeline: Tesseract word boxes + HSV K-means colour mask + Canny
          contour mask, 5x5 close/open, Navier-Stokes inpainting, nearest-neighbour 224x224.

Example:
  usfmae clean corpus/manifest.parquet --out cleaned --workers 2
  usfmae clean my_pngs/ --out cleaned_paper --method paper --sheet 12
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from usfmae.clean.run import CleanConfig, run_clean
from usfmae.config import add_dataclass_arguments, config_from_args
from usfmae.errors import DataError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="image folder or ingest manifest (.parquet)")
    parser.add_argument("--out", required=True, help="output folder (created; re-runs resume)")
    parser.add_argument("--config", help="YAML preset with any of the settings below")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_dataclass_arguments(parser, CleanConfig)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(CleanConfig, args)
    source = Path(args.input)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    summary = run_clean(source, args.out, cfg, progress=not args.no_progress)
    print(json.dumps(summary))
    return 0
