"""The records of ``--shard I/N`` runs of clean, pack and embed, and the ordered merge of their outputs.

A stage run with ``--shard I/N`` (the partition of :mod:`usfmae.curate.shard`) records a *run
record* beside its output (``shard.json`` in an output folder; the Parquet metadata of embed's
file): the stage, the shard, the input as given, the settings, and whether the run finished.

A stage's merge (:func:`usfmae.clean.merge.merge_clean`, :func:`usfmae.shards.merge.merge_packs`,
:func:`usfmae.downstream.embed.merge_embeddings`) checks the records with :func:`check_runs`,
lists the input again and walks it with :func:`in_input_order`. Every stage handles its inputs in
listing order, so each shard's results are a subsequence of that order and the single-run order is
rebuilt in one streaming pass (memory flat in the number of inputs); an input that its shard
neither did nor rejected is an error, which is how a merge proves that every input was done.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from usfmae.curate.shard import parse_shard, shard_of
from usfmae.errors import ConfigError, DataError
from usfmae.fileio import atomic_path, read_json, write_json

T = TypeVar("T")

RUN_NAME = "shard.json"
# settings that may differ between shards (where and how fast they ran), not what they produce
PER_SHARD = ("out", "shard", "workers", "num_workers")


def run_record(stage: str, shard: str, source: str | os.PathLike, settings: dict[str, Any],
               finished: bool) -> dict[str, Any]:
    """The run record of one ``--shard`` run (JSON-ready)."""
    return {"stage": stage, "shard": shard, "input": str(source), "settings": settings, "finished": finished}


def write_run(folder: str | os.PathLike, record: dict[str, Any]) -> None:
    """Write ``folder/shard.json`` atomically."""
    write_json(Path(folder) / RUN_NAME, record)


def record_run(folder: str | os.PathLike, stage: str, shard: str | None, source: str | os.PathLike,
               settings: dict[str, Any], finished: bool) -> None:
    """Write ``folder/shard.json`` for a ``--shard`` run; remove a stale one for a whole run (a folder
    that a whole run has since completed is no longer one shard of a split)."""
    if shard is None:
        (Path(folder) / RUN_NAME).unlink(missing_ok=True)
    else:
        write_run(folder, run_record(stage, shard, source, settings, finished))


def read_run(folder: str | os.PathLike, stage: str) -> dict[str, Any]:
    """The run record of a ``--shard`` output folder of ``stage``.

    Raises:
        DataError: no record (not a ``--shard`` output) or one of another stage.
    """
    path = Path(folder) / RUN_NAME
    if not path.is_file():
        raise DataError(f"{folder}: not the output of a `usfmae {stage} --shard I/N` run (no {RUN_NAME})")
    record = read_json(path)
    if not isinstance(record, dict) or record.get("stage") != stage:
        raise DataError(f"{folder}: a {record.get('stage') if isinstance(record, dict) else '?'} run, not {stage}")
    return record


def check_runs(runs: Sequence[tuple[str, dict[str, Any]]], stage: str) -> tuple[dict[str, Any], list[str]]:
    """Check that ``runs`` are all N shards of one split, finished, with the same input and settings.

    Args:
        runs: ``(name shown in errors, run record)`` per shard output, in any order.
        stage: the stage they must all come from.

    Returns:
        ``(the first run's record, names ordered by shard index)``.

    Raises:
        ConfigError: no runs given.
        DataError: a shard missing, given twice, unfinished, of another split, stage, input or
            settings (one line naming the shard and what differs).
    """
    if not runs:
        raise ConfigError(f"give the output of every `usfmae {stage} --shard I/N` run")
    first, base = runs[0]
    _, count = _shard(first, base, stage)
    common = {k: v for k, v in base.get("settings", {}).items() if k not in PER_SHARD}
    by_index: dict[int, str] = {}
    for name, record in runs:
        index, n = _shard(name, record, stage)
        if n != count:
            raise DataError(f"{name}: shard {record['shard']} of a split into {n}, {first} is one of {count}")
        if record.get("input") != base.get("input"):
            raise DataError(f"{name}: input {record.get('input')} differs from {first}'s ({base.get('input')})")
        settings = {k: v for k, v in record.get("settings", {}).items() if k not in PER_SHARD}
        differing = sorted(k for k in set(settings) | set(common) if settings.get(k) != common.get(k))
        if differing:
            raise DataError(f"{name}: setting {differing[0]} differs from {first}'s; shards must share settings")
        if index in by_index:
            raise DataError(f"shard {index}/{count} given twice: {by_index[index]} and {name}")
        if not record.get("finished"):
            raise DataError(f"{name}: shard {index}/{count} has not finished; rerun it")
        by_index[index] = name
    missing = sorted(set(range(count)) - set(by_index))
    if missing:
        raise DataError(f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} missing: give every shard's output")
    return base, [by_index[i] for i in range(count)]


def _shard(name: str, record: dict[str, Any], stage: str) -> tuple[int, int]:
    if record.get("stage") != stage:
        raise DataError(f"{name}: not the output of a `usfmae {stage} --shard I/N` run")
    try:
        shard = parse_shard(record.get("shard"))
    except ConfigError as exc:
        raise DataError(f"{name}: {exc}") from exc
    if shard is None:
        raise DataError(f"{name}: was not run with --shard I/N")
    return shard


_END = object()


def in_input_order(inputs: Iterable[tuple[str, str]], streams: Sequence[Iterator[T]], key_of: Callable[[T], str],
                   rejected: Sequence[Container[str]], names: Sequence[str]) -> Iterator[T]:
    """Results of N shards in the order a single run produces them.

    Args:
        inputs: ``(partition key, result key)`` of every input, in single-run order; the partition
            key is what :func:`usfmae.curate.shard.shard_of` was given, the result key what
            ``key_of`` returns for that input's result.
        streams: per shard index, its results in its own (= input) order.
        key_of: the result key of a result.
        rejected: per shard, the result keys it rejected (they have no result).
        names: per shard, its name for messages.

    Yields:
        Every result once, in single-run order.

    Raises:
        DataError: an input its shard neither did nor rejected, or a shard holding results the
            input does not list (the input changed since the shards ran).
    """
    count = len(streams)
    heads = [next(stream, _END) for stream in streams]
    for part_key, key in inputs:
        index = shard_of(part_key, count)
        head = heads[index]
        if head is not _END and key_of(head) == key:  # type: ignore[arg-type]
            yield head  # type: ignore[misc]
            heads[index] = next(streams[index], _END)
        elif key not in rejected[index]:
            raise DataError(f"{key}: not done by its shard {index}/{count} ({names[index]}); rerun that shard, "
                            "then merge")
    for index, head in enumerate(heads):
        if head is not _END:
            raise DataError(f"{names[index]}: holds {key_of(head)!r} (shard {index}/{count}), which the input "  # type: ignore[arg-type]
                            "does not list there now; rerun that shard on the current input, then merge")


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Make ``dst`` the file ``src``: a hard link (no copy, no space), or an atomic copy across
    file systems; a ``dst`` that is already that file is left alone."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        if os.path.samefile(src, dst):
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:  # another file system, or hard links not allowed
        with atomic_path(dst) as tmp:
            shutil.copy2(src, tmp)
