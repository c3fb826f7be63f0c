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
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from usfmae.clean.merge import is_clean_shard, merge_clean
from usfmae.curate.merge import merge_ingest
from usfmae.errors import DataError
from usfmae.shards.merge import merge_packs
from usfmae.shards.store import is_shard_dir


@dataclasses.dataclass(frozen=True)
class Kind:
    """One stage's merge: how to recognise its --shard output, the merge, and its summary line."""

    name: str  # as the error for an unknown folder lists it
    matches: Callable[[Path], bool]  # the first shard output given (folder or file) is of this kind
    merge: Callable[..., dict[str, Any]]  # merge(shard_outputs, out, progress=bool) -> result
    summary: Callable[[dict[str, Any]], str]  # result -> the line printed


def _merge_embeddings(outputs: list[str], out: str, progress: bool = True) -> dict[str, Any]:
    from usfmae.downstream.embed import merge_embeddings  # imports torch: only when features are merged

    return merge_embeddings(outputs, out, progress=progress)


def _ingest_line(result: dict[str, Any]) -> str:
    return (f"{result['shards']} shards, {result['files']} files: {result['ok']} frames ok, "
            f"{result['duplicate']} duplicate, {result['near_duplicate']} near-duplicate, "
            f"{result['excluded']} excluded, {result['rejected']} rejected -> {result['manifest']}")


# the first entry whose `matches` accepts the first shard output runs; a stage adds its own Kind
KINDS: tuple[Kind, ...] = (
    Kind("an ingest output (ingest_config.yaml)", lambda path: (path / "ingest_config.yaml").is_file(),
         merge_ingest, _ingest_line),
    Kind("a clean output (clean_config.yaml)", is_clean_shard, merge_clean,
         lambda r: f"{r['shards']} shards, {r['total']} images: {r['cleaned']} cleaned, {r['rejected']} rejected "
                   f"-> {r['manifest']}"),
    Kind("a pack output (shards.json)", is_shard_dir, merge_packs,
         lambda r: f"{r['shards']} shards: {r['frames']} frames repacked, {r['rejected']} rejected -> {r['out']}"),
    Kind("an embed .parquet file", lambda path: path.is_file() and path.suffix == ".parquet", _merge_embeddings,
         lambda r: f"{r['shards']} shards: {r['n']} x {r['dim']} features, {r['rejected']} rejected -> {r['out']}"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", nargs="+", help="outputs of one stage's --shard I/N runs (all N)")
    parser.add_argument("--out", required=True, help="merged output (created, locked)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    first = Path(args.shards[0])
    for kind in KINDS:
        if kind.matches(first):
            print(kind.summary(kind.merge(args.shards, args.out, progress=not args.no_progress)))
            return 0
    raise DataError(f"{first}: not the output of a --shard run (expected {' or '.join(k.name for k in KINDS)})")
