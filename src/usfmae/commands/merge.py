"""Combine the output folders of a stage's `--shard I/N` runs (one per machine) into one output.

The kind of the first folder says which stage's merge runs: an ingest output (ingest_config.yaml)
-> the ingest merge, which checks that every shard 0..N-1 finished with the same settings and that
every file of the input folder was done by its shard, then finds duplicates across shards and
writes OUT as a single `usfmae ingest` run would have (same manifest rows, frames hard-linked).
OUT is locked while the merge runs. See examples/slurm_array.sh. A clean output folder
(clean_config.yaml), a pack shard folder (shards.json) or an embed .parquet file -> that stage's
merge: the same checks, then what one run of the stage writes (same manifest rows, same shard files,
same features, in the same order).

Examples:
  usfmae merge parts/shard-0 parts/shard-1 parts/shard-2 parts/shard-3 --out corpus
  usfmae merge parts/shard-* --out corpus
  usfmae merge parts/clean-* --out cleaned
  usfmae merge parts/feats-*.parquet --out feats.parquet
"""

from __future__ import annotations

import argparse

from usfmae.config import add_dataclass_arguments, config_from_args
from usfmae.downstream.merge import MergeConfig, run_merge


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", nargs="+", help="outputs of one stage's --shard I/N runs (all N)")
    parser.add_argument("--out", required=True, help="merged output (created, locked)")
    parser.add_argument("--config", help="YAML preset with any of the settings below")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dataclass_arguments(parser, MergeConfig, skip=("shards", "out"))


def run(args: argparse.Namespace) -> int:
    print(run_merge(config_from_args(MergeConfig, args), progress=not args.no_progress))
    return 0
