"""``usfmae merge``: one stage's ``--shard I/N`` outputs (one per machine) into what a single run writes.

The first output given says which stage's merge runs (:data:`KINDS`): an ingest output folder
(:func:`usfmae.curate.merge.merge_ingest`), a clean output folder
(:func:`usfmae.clean.merge.merge_clean`), a pack shard folder (:func:`usfmae.shards.merge.merge_packs`)
or an embed ``.parquet`` file (:func:`usfmae.downstream.embed.merge_embeddings`). Each checks that all
N parts are there, finished and run alike, then writes the single run's outputs in its order; OUT is
locked while it runs. It lives here, above every stage it dispatches to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from usfmae.clean.merge import is_clean_shard, merge_clean
from usfmae.config import check, opt
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


@dataclasses.dataclass
class MergeConfig:
    """Settings of ``usfmae merge``."""

    shards: list[str] = opt([], "outputs of one stage's --shard I/N runs (all N)")
    out: str = opt("", "merged output (created, locked)")

    def __post_init__(self) -> None:
        check(bool(self.shards), "give the outputs of the --shard runs to merge")
        check(bool(self.out), "--out is required")


def run_merge(cfg: MergeConfig, progress: bool = True) -> str:
    """Merge ``cfg.shards`` into ``cfg.out`` with the first matching :data:`KINDS` entry; returns its summary line.

    Raises:
        DataError: the first output is of no known kind, or the merge's own checks fail.
    """
    first = Path(cfg.shards[0])
    for kind in KINDS:
        if kind.matches(first):
            return kind.summary(kind.merge(list(cfg.shards), cfg.out, progress=progress))
    raise DataError(f"{first}: not the output of a --shard run (expected {' or '.join(k.name for k in KINDS)})")
