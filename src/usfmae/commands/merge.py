"""Combine the output folders of `usfmae ingest --shard I/N` runs (one per machine) into one corpus.

Checks that every shard 0..N-1 finished with the same settings and that every file of the input
folder was done by its shard, then finds duplicates across shards and writes OUT as a single
`usfmae ingest` run would have (same manifest rows, frames hard-linked). See examples/slurm_array.sh.

Examples:
  usfmae merge parts/shard-0 parts/shard-1 parts/shard-2 parts/shard-3 --out corpus
  usfmae merge parts/shard-* --out corpus
"""

from __future__ import annotations

import argparse

from usfmae.curate.merge import merge_ingest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", nargs="+", help="output folders of `usfmae ingest --shard I/N` (all N)")
    parser.add_argument("--out", required=True, help="merged corpus folder (created)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    result = merge_ingest(args.shards, args.out, progress=not args.no_progress)
    print(f"{result['shards']} shards, {result['files']} files: {result['ok']} frames ok, "
          f"{result['duplicate']} duplicate, {result['near_duplicate']} near-duplicate, "
          f"{result['excluded']} excluded, {result['rejected']} rejected -> {result['manifest']}")
    return 0
