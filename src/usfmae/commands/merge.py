"""Combine the output folders of a stage's `--shard I/N` runs (one per machine) into one output.

The kind of the first folder says which stage's merge runs: an ingest output (ingest_config.yaml)
-> the ingest merge, which checks that every shard 0..N-1 finished with the same settings and that
every file of the input folder was done by its shard, then finds duplicates across shards and
writes OUT as a single `usfmae ingest` run would have (same manifest rows, frames hard-linked).
OUT is locked while the merge runs. See examples/slurm_array.sh.

Examples:
  usfmae merge parts/shard-0 parts/shard-1 parts/shard-2 parts/shard-3 --out corpus
  usfmae merge parts/shard-* --out corpus
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from usfmae.curate.merge import merge_ingest
from usfmae.errors import DataError


def _ingest_line(result: dict[str, Any]) -> str:
    return (f"{result['shards']} shards, {result['files']} files: {result['ok']} frames ok, "
            f"{result['duplicate']} duplicate, {result['near_duplicate']} near-duplicate, "
            f"{result['excluded']} excluded, {result['rejected']} rejected -> {result['manifest']}")


# (file that marks a stage's output folder, that stage's merge(folders, out, progress=) -> result,
#  the summary line of its result); the first folder's marker picks the entry
KINDS: tuple[tuple[str, Callable[..., dict[str, Any]], Callable[[dict[str, Any]], str]], ...] = (
    ("ingest_config.yaml", merge_ingest, _ingest_line),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", nargs="+", help="output folders of one stage's --shard I/N runs (all N)")
    parser.add_argument("--out", required=True, help="merged output folder (created, locked)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    first = Path(args.shards[0])
    for marker, merge, line in KINDS:
        if (first / marker).is_file():
            print(line(merge(args.shards, args.out, progress=not args.no_progress)))
            return 0
    markers = ", ".join(marker for marker, _, _ in KINDS)
    raise DataError(f"{first}: not the output folder of a --shard run (it has none of: {markers})")
