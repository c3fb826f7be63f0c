"""Ingest's per-file progress records -> ``manifest.parquet``, in memory flat in the number of frames.

Every finished file has one record in ``.ingest/progress.jsonl`` (its size, date, settings and
manifest rows, about 8 KB a frame). Neither the records nor the rows are held: :func:`index_progress`
keeps a byte offset per file, :func:`read_records` reads them back one at a time in path order,
:func:`finalize` makes the cross-file decisions in two passes over them and :func:`write_manifest`
writes the rows in Parquet row groups as they come.

What :func:`finalize` holds between its passes is compact, per frame: a 20-byte pixel digest, the
64-bit pHash, a group number and a status byte (33 bytes, numpy), then its decisions (17 bytes).
Exact duplicates are a sort of the digests; near duplicates are searched group by group (frames
sorted by group, stably, so each group is done in path order as a single sequential pass would,
and only that group's hashes are indexed at a time). Corpus-wide near-duplicate search
(``near_dup_scope=corpus``) is one group: its index holds every kept frame's hash (about 100 bytes
each). The ids of the frames that others are duplicates of are kept as the second pass meets them.
"""

from __future__ import annotations

import filecmp
import json
import os
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from usfmae.curate.hashing import GroupedHammingIndex
from usfmae.fileio import atomic_path


class DuplicateSettings(Protocol):
    """The settings the cross-file decisions read (``usfmae.curate.ingest.IngestConfig`` has them;
    a protocol, so this module does not import the stage that imports it)."""

    near_dup: str          # "drop" | "flag" | "keep"
    near_dup_scope: str    # "group" | "corpus"
    phash_threshold: int

STATUSES = ("ok", "duplicate", "near_duplicate", "rejected", "excluded")

MANIFEST_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("path", pa.string()), ("source_path", pa.string()),
    ("kind", pa.string()),
    ("frame_index", pa.int32()), ("timestamp", pa.float64()), ("width", pa.int32()),
    ("height", pa.int32()), ("channels", pa.int8()), ("bit_depth", pa.int8()),
    ("pixel_hash", pa.string()), ("phash", pa.int64()), ("phash_hex", pa.string()),
    ("group_id", pa.string()), ("status", pa.string()), ("reason", pa.string()),
    ("duplicate_of", pa.string()), ("phash_distance", pa.int8()), ("modality", pa.string()),
])

ROW_GROUP = 16_384  # manifest rows per Parquet row group (~5 MB buffered; a smaller corpus is one, as before)
_BATCH = 2_048  # rows held as Python dicts before they become an Arrow batch (~2 KB each)
_MASK64 = (1 << 64) - 1
_DIGEST = 20  # bytes of a SHA-1 pixel hash

# what pass 1 records per row: rejected rows take part in nothing; other rows count as the first
# occurrence of their pixels; "ok" rows may be exact duplicates of an earlier file's frame; "ok"
# rows not already flagged within their file are also near-duplicate candidates
_REJECTED, _SEEN, _OK, _CANDIDATE = 0, 1, 2, 3


class ProgressEntry(NamedTuple):
    """Where a file's last record is in ``progress.jsonl``, and what the resume check compares."""

    size: int
    mtime_ns: int
    recipe: str
    offset: int
    stem: str = ""  # the frame-id stem given to the file when another file shared its plain one, else ""


def index_progress(path: str | os.PathLike, repair: bool = True) -> dict[str, ProgressEntry]:
    """The last record of each file in a progress file, by relative path (records not kept).

    A line torn by a killed run is skipped (that file is simply redone); with ``repair`` a torn last
    line is closed with a newline so the next record does not glue onto it.
    """
    path = Path(path)
    done: dict[str, ProgressEntry] = {}
    if not path.exists():
        return done
    recipes: dict[str, str] = {}  # one string object per distinct recipe, not one per file
    with open(path, "rb+" if repair else "rb") as handle:
        offset = 0
        for line in handle:
            try:
                record = json.loads(line)
                recipe = recipes.setdefault(record["recipe"], record["recipe"])
                done[record["path"]] = ProgressEntry(record["size"], record["mtime_ns"], recipe, offset,
                                                   record.get("stem", ""))
            except (ValueError, KeyError, TypeError):
                pass
            offset += len(line)
        if repair and offset and (handle.seek(-1, os.SEEK_END), handle.read(1))[1] != b"\n":
            handle.write(b"\n")
    return done


def read_records(path: str | os.PathLike, entries: Iterable[ProgressEntry]) -> Iterator[dict[str, Any]]:
    """The records at ``entries``' offsets of progress file ``path``, one at a time, in that order."""
    with open(path, "rb") as handle:
        for entry in entries:
            handle.seek(entry.offset)
            line = handle.readline()
            if not line.strip():  # an appended record that closed a torn line starts one byte later
                line = handle.readline()
            yield json.loads(line)


class _Plan(NamedTuple):
    rows: int
    exact_of: np.ndarray  # (rows,) int64: row number of the earlier frame with the same pixels, or -1
    near_of: np.ndarray  # (rows,) int64: row number of the nearest earlier kept frame, or -1
    distance: np.ndarray  # (rows,) int8: pHash distance to near_of


def _plan(records: Iterable[dict[str, Any]], cfg: DuplicateSettings) -> _Plan:
    """Pass 1: read the compact per-frame state, decide exact and near duplicates across files."""
    digests, phashes, groups, kinds = bytearray(), array("q"), array("i"), bytearray()
    group_numbers: dict[Any, int] = {}
    grouped = cfg.near_dup_scope == "group"
    previous = None
    for record in records:
        if previous is not None and record["path"] <= previous:
            raise ValueError(f"finalize needs records in path order: {record['path']!r} after {previous!r}")
        previous = record["path"]
        for row in record["rows"]:
            status = row["status"]
            if status == "rejected":
                kinds.append(_REJECTED)
                digests += bytes(_DIGEST)
                phashes.append(0)
                groups.append(0)
                continue
            kinds.append(_SEEN if status != "ok" else _OK if row["duplicate_of"] else _CANDIDATE)
            digests += bytes.fromhex(row["pixel_hash"])
            phashes.append(row["phash"])
            groups.append(group_numbers.setdefault(row["group_id"], len(group_numbers)) if grouped else 0)
    del group_numbers
    n = len(kinds)
    kind = np.frombuffer(kinds, np.uint8)
    exact_of = np.full(n, -1, np.int64)
    seen = np.flatnonzero(kind != _REJECTED)
    if seen.size:
        # np.unique's return_index is each value's first occurrence: the frame a single run keeps
        _, first, inverse = np.unique(np.frombuffer(digests, f"S{_DIGEST}")[seen], return_index=True,
                                      return_inverse=True)
        first_row = seen[first[inverse]]
        later = (first_row != seen) & (kind[seen] >= _OK)
        exact_of[seen[later]] = first_row[later]
    del digests
    near_of = np.full(n, -1, np.int64)
    distance = np.full(n, -1, np.int8)
    if cfg.near_dup != "keep":
        candidates = np.flatnonzero((kind == _CANDIDATE) & (exact_of < 0))
        group = np.frombuffer(groups, np.int32)[candidates]
        by_group = np.argsort(group, kind="stable")  # by group, row order within each
        order = candidates[by_group]
        starts = np.flatnonzero(np.diff(group[by_group])) + 1
        hashes = np.frombuffer(phashes, np.int64)
        for members in np.split(order, starts) if order.size else ():
            index = GroupedHammingIndex(cfg.phash_threshold)  # one group at a time
            for i in members.tolist():
                h = int(hashes[i]) & _MASK64
                hit = index.nearest(0, h)
                if hit is None:
                    index.add(0, h, i)
                else:
                    near_of[i], distance[i] = hit
    return _Plan(n, exact_of, near_of, distance)


def _apply(records: Iterable[dict[str, Any]], plan: _Plan, cfg: DuplicateSettings,
           exclude: set[str]) -> Iterator[dict[str, Any]]:
    """Pass 2: the rows again, in order, with pass 1's decisions and the exclusions applied."""
    wanted = np.zeros(plan.rows, bool)
    wanted[plan.exact_of[plan.exact_of >= 0]] = True
    wanted[plan.near_of[plan.near_of >= 0]] = True
    ids: dict[int, str] = {}  # row number -> id, for the frames others are duplicates of
    scope = "group" if cfg.near_dup_scope == "group" else "corpus"
    status_near = "near_duplicate" if cfg.near_dup == "drop" else "ok"
    i = 0
    for record in records:
        for row in record["rows"]:
            if i >= plan.rows:
                raise ValueError("the records changed between finalize's two passes")
            row = dict(row)
            if wanted[i]:
                ids[i] = row["id"]
            if row["status"] != "rejected":
                if plan.exact_of[i] >= 0:
                    row.update(status="duplicate", duplicate_of=ids[int(plan.exact_of[i])], phash_distance=-1,
                               reason="same pixels as an earlier frame")
                elif plan.near_of[i] >= 0:
                    d = int(plan.distance[i])
                    row.update(duplicate_of=ids[int(plan.near_of[i])], phash_distance=d, status=status_near,
                               reason=f"pHash distance {d} to an earlier frame of the same {scope}")
                if row["id"] in exclude:
                    row.update(status="excluded", reason="overlaps an evaluation frame (audit pairs file)")
            yield row
            i += 1
    if i != plan.rows:
        raise ValueError("the records changed between finalize's two passes")


def finalize(records: Callable[[], Iterable[dict[str, Any]]], cfg: DuplicateSettings,
             exclude: set[str]) -> Iterator[dict[str, Any]]:
    """Cross-file decisions on rows in path, frame order: exact / near duplicates, exclusions.

    Args:
        records: called twice, each call giving the per-file progress records in path order (e.g.
            :func:`read_records`); neither pass keeps them.
        cfg: the ingest settings (``near_dup``, ``near_dup_scope``, ``phash_threshold``).
        exclude: frame ids to mark ``excluded``.

    Returns:
        The manifest rows (dicts with :data:`MANIFEST_SCHEMA`'s columns), one at a time; the first
        pass over ``records`` runs before the first row comes.
    """
    plan = _plan(records(), cfg)
    return _apply(records(), plan, cfg, exclude)


def _batches(rows: Iterable[dict[str, Any]], counts: dict[str, int]) -> Iterator[pa.RecordBatch]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        counts[row["status"]] += 1
        chunk.append(row)
        if len(chunk) == _BATCH:
            yield pa.RecordBatch.from_pylist(chunk, schema=MANIFEST_SCHEMA)
            chunk = []
    if chunk:
        yield pa.RecordBatch.from_pylist(chunk, schema=MANIFEST_SCHEMA)


def write_manifest(rows: Iterable[dict[str, Any]], path: str | os.PathLike) -> dict[str, int]:
    """Write manifest rows to ``path`` in row groups of :data:`ROW_GROUP` rows, atomically.

    An existing manifest with the same bytes is left untouched (its date too), so a rerun that
    changes nothing writes nothing. Returns the number of rows of each status.
    """
    path = Path(path)
    counts = dict.fromkeys(STATUSES, 0)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".parquet", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        with pq.ParquetWriter(tmp, MANIFEST_SCHEMA) as writer:
            group: list[pa.RecordBatch] = []
            written = 0
            for batch in _batches(rows, counts):
                group.append(batch)
                if sum(len(b) for b in group) >= ROW_GROUP:
                    writer.write_table(pa.Table.from_batches(group), row_group_size=ROW_GROUP)
                    written, group = written + 1, []
            if group or not written:  # the rest; an empty manifest still has its (empty) table
                writer.write_table(pa.Table.from_batches(group, schema=MANIFEST_SCHEMA), row_group_size=ROW_GROUP)
        if not (path.exists() and filecmp.cmp(tmp, path, shallow=False)):
            with atomic_path(path) as final:
                os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return counts
