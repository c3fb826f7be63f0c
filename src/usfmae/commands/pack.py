"""Pack a corpus of frames into memory-mapped uint8 shards for fast pretraining.

CORPUS is a folder of images (PNG, JPEG, BMP, TIFF; searched recursively) or a Parquet manifest
with columns ``id`` and ``path`` (relative to the manifest's folder), and optionally ``status``
(only "ok" rows are packed), ``source`` and ``label``. Each image is decoded and resized with area
interpolation to fit SIZE x SIZE by the same code every stage uses (usfmae.imaging): --fit pad (the
default) keeps its aspect ratio with black borders, --fit stretch ignores it. Frames are stored as
grayscale (--channels 1, the default) or RGB (--channels 3). Pack at the encoder's size, channels and
fit, and `usfmae embed` / `usfmae pretrain` on the shards see the pixels they would see on the files.

Re-running resumes: complete shards are kept, the last partial shard is rewritten, and files
listed in SHARDS/rejects.jsonl (unreadable images) are not retried. With --shard I/N a run packs
only part I of N of the frames (a SLURM array task each); `usfmae merge` then checks that all N
finished and repacks them into the shard files one run writes (same ids and pixels, same order).

Example:
    usfmae pack corpus/manifest.parquet --out shards/ --size 224 --channels 1
    usfmae pack cleaned_pngs/ --out shards/ --shard-size 4096
"""

from __future__ import annotations

import argparse

from usfmae.config import add_dataclass_arguments, config_from_args
from usfmae.fileio import ensure_output_dir
from usfmae.shards.pack import PackConfig, pack_corpus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpus", help="image folder or Parquet manifest (id, path[, status, source, label])")
    parser.add_argument("--out", required=True, help="shard folder to write (resumed if it exists)")
    parser.add_argument("--config", help="YAML file with any of the settings below")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_dataclass_arguments(parser, PackConfig)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(PackConfig, args)
    out = ensure_output_dir(args.out)
    stats = pack_corpus(args.corpus, out, cfg, progress=not args.no_progress)
    print(f"packed {stats['frames']} frames in {out} ({stats['added']} added, {stats['rejected']} rejected, "
          f"{stats['skipped']} already done)")
    return 0
