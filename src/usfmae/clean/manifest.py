"""``manifest.parquet`` of ``usfmae clean``, streamed in row groups (memory flat in the number of frames).

:class:`ManifestWriter` is what a single run (:func:`usfmae.clean.run.run_clean`) and a merge of
``--shard`` runs (:func:`usfmae.clean.merge.merge_clean`) both write through, so the two give the
same file; it also keeps the run's totals and the few rows the contact sheet shows.
:func:`done_index` and :func:`read_records` read the resume log ``done.jsonl`` by byte offset, so
a run holds one integer per frame instead of every record.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from usfmae.fileio import atomic_path

MANIFEST_COLUMNS = ["id", "path", "mask_path", "source", "method", "width", "height", "mask_fraction",
                    "scan_status", "scan_reason", "residual_words", "residual_text", "seconds"]
MANIFEST_SCHEMA = pa.schema([
    ("id", pa.string()), ("path", pa.string()), ("mask_path", pa.string()), ("source", pa.string()),
    ("method", pa.string()), ("width", pa.int64()), ("height", pa.int64()), ("mask_fraction", pa.float64()),
    ("scan_status", pa.string()), ("scan_reason", pa.string()), ("residual_words", pa.int64()),
    ("residual_text", pa.string()), ("seconds", pa.float64()),
])
# a done.jsonl written before these columns existed
_DEFAULTS = {"scan_status": "", "scan_reason": "", "residual_words": -1, "residual_text": ""}
ROW_GROUP = 4096


def sheet_positions(count: int, sheet: int) -> set[int]:
    """Row positions (0..count-1) the contact sheet shows: ``sheet`` spread evenly over the rows."""
    if not sheet or not count:
        return set()
    return {int(i) for i in np.linspace(0, count - 1, min(sheet, count)).round().astype(int)}


class ManifestWriter:
    """Append clean records (dicts with :data:`MANIFEST_COLUMNS`) to ``manifest.parquet``.

    Also, when given ``done_log``, writes each record as a line of the resume log. Totals of the
    summary are counted as rows pass; ``sheet_rows`` keeps the records at ``sheet`` positions.

    Args:
        handle_path: the (temporary) Parquet file to write.
        sheet: the row positions whose records go to ``sheet_rows``.
        done_log: an open text file for the resume log's JSON lines, or None.
    """

    def __init__(self, handle_path: Path, sheet: set[int] = frozenset(), done_log: Any = None) -> None:
        self._writer = pq.ParquetWriter(handle_path, MANIFEST_SCHEMA)
        self._rows: list[dict] = []
        self._sheet = sheet
        self._done = done_log
        self.sheet_rows: list[dict] = []
        self.count = self.residual_words = self.frames_with_text = self.scan_unsure = 0

    def add(self, record: dict) -> None:
        row = {c: record.get(c, _DEFAULTS.get(c)) for c in MANIFEST_COLUMNS}
        if self.count in self._sheet:
            self.sheet_rows.append(row)
        if self._done is not None:
            self._done.write(json.dumps(row, default=str) + "\n")
        words = row["residual_words"] or 0
        self.residual_words += max(0, words)
        self.frames_with_text += words > 0
        self.scan_unsure += row["scan_status"] == "unsure"
        self.count += 1
        self._rows.append(row)
        if len(self._rows) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=MANIFEST_SCHEMA))
            self._rows = []

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def totals(self) -> dict[str, int]:
        return {"residual_words": self.residual_words, "frames_with_text": self.frames_with_text,
                "scan_unsure": self.scan_unsure}


@contextlib.contextmanager
def manifest_writer(path: Path, sheet: set[int] = frozenset(), done_log: Any = None) -> Iterator[ManifestWriter]:
    """A :class:`ManifestWriter` whose file replaces ``path`` only when the block succeeds."""
    with atomic_path(path) as tmp:
        writer = ManifestWriter(tmp, sheet, done_log)
        try:
            yield writer
        finally:
            writer.close()


def iter_manifest(path: Path) -> Iterator[dict]:
    """The rows of a clean ``manifest.parquet`` as dicts, one row group at a time."""
    handle = pq.ParquetFile(path)
    for batch in handle.iter_batches(batch_size=ROW_GROUP):
        yield from batch.to_pylist()


def done_index(path: Path, out: Path, method: str) -> dict[str, int]:
    """``{id: byte offset of its record}`` in ``done.jsonl`` for items done with ``method`` whose image
    exists (the last record of an id wins; torn lines, from a killed run, are skipped)."""
    index: dict[str, int] = {}
    if not path.exists():
        return index
    offset = 0
    with open(path, "rb") as handle:
        for raw in handle:
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                record = None
            if isinstance(record, dict) and record.get("method") == method and "path" in record \
                    and (out / record["path"]).exists():
                index[record["id"]] = offset
            offset += len(raw)
    return index


def read_records(path: Path, index: dict[str, int], ids: Iterator[str]) -> Iterator[dict]:
    """The ``done.jsonl`` records of ``ids``, in that order, read one at a time."""
    if not index:
        return
    with open(path, "rb") as handle:
        for item_id in ids:
            handle.seek(index[item_id])
            yield json.loads(handle.readline().decode("utf-8"))
