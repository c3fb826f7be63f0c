"""The feature files of ``usfmae embed``, written and read in chunks (memory flat in the number of images).

Two formats, both written atomically (a stopped run leaves no partial file under the final name):

- ``.parquet``: columns ``path`` (string) and ``feature`` (fixed-size list of D float32), row
  groups of :data:`ROW_GROUP` rows, the run's description as JSON under the schema metadata key
  ``usfmae``;
- ``.npy``: one float32 ``(N, D)`` array, with the names one a line in a sibling ``.paths.txt``.
  Rows are appended as they come after a header written for ``(0, D)``; NumPy pads every header
  so that its first dimension can grow in place, and the header is rewritten with the final N.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from usfmae.errors import UsfmaeError
from usfmae.fileio import atomic_open, atomic_path

ROW_GROUP = 8192
META_KEY = b"usfmae"


def feature_schema(dim: int, metadata: dict[str, Any] | None = None) -> pa.Schema:
    """The Parquet schema of a feature file of ``dim`` features."""
    schema = pa.schema([("path", pa.string()), ("feature", pa.list_(pa.float32(), dim))])
    return schema.with_metadata({META_KEY: json.dumps(metadata)}) if metadata is not None else schema


class FeatureWriter:
    """Append ``(features (B, D) float32, names)`` chunks to ``out`` (.parquet or .npy).

    Use as a context manager: the file replaces ``out`` when the block ends without an exception.

    Args:
        out: the output file; its suffix picks the format.
        metadata: the description stored in a Parquet file's schema (not in .npy).
    """

    def __init__(self, out: str | Path, metadata: dict[str, Any] | None = None) -> None:
        self.out = Path(out)
        if self.out.suffix not in (".parquet", ".npy"):
            raise UsfmaeError(f"{self.out}: output must end in .parquet or .npy")
        self.metadata = metadata
        self.n = 0
        self.dim: int | None = None
        self._stack = contextlib.ExitStack()
        self._tmp: Path | None = None
        self._npy: IO[bytes] | None = None
        self._names: IO[str] | None = None
        self._parquet: pq.ParquetWriter | None = None
        self._rows: list[tuple[np.ndarray, list[str]]] = []
        self._buffered = 0

    def __enter__(self) -> FeatureWriter:
        self._tmp = self._stack.enter_context(atomic_path(self.out))
        if self.out.suffix == ".npy":
            self._names = self._stack.enter_context(atomic_open(self.out.with_suffix(".paths.txt"), "w",
                                                                encoding="utf-8"))
        return self

    def add(self, feats: np.ndarray, names: Sequence[str]) -> None:
        """Append ``feats`` (B, D) float32 and their B names."""
        feats = np.ascontiguousarray(feats, dtype=np.float32)
        if feats.ndim != 2 or len(feats) != len(names):
            raise ValueError(f"features must be (B, D) with B names, got {feats.shape} and {len(names)}")
        if self.dim is None:
            self._open(feats.shape[1])
        elif feats.shape[1] != self.dim:
            raise ValueError(f"features of dimension {feats.shape[1]}, the file holds {self.dim}")
        self.n += len(feats)
        if self._npy is not None:
            self._npy.write(feats.tobytes())
            assert self._names is not None
            self._names.writelines(name + "\n" for name in names)
            return
        self._rows.append((feats, list(names)))
        self._buffered += len(feats)
        if self._buffered >= ROW_GROUP:
            self._flush()

    def _open(self, dim: int) -> None:
        self.dim = dim
        assert self._tmp is not None
        if self.out.suffix == ".npy":
            self._npy = self._stack.enter_context(open(self._tmp, "wb"))
            self._header(0)
        else:
            self._parquet = pq.ParquetWriter(self._tmp, feature_schema(dim, self.metadata))

    def _header(self, rows: int) -> None:
        assert self._npy is not None
        self._npy.seek(0)
        np.lib.format.write_array_header_1_0(self._npy, {"descr": "<f4", "fortran_order": False,
                                                         "shape": (rows, self.dim)})

    def _flush(self) -> None:
        if not self._rows or self._parquet is None:
            return
        feats = np.concatenate([f for f, _ in self._rows])
        names = [name for _, chunk in self._rows for name in chunk]
        column = pa.FixedSizeListArray.from_arrays(pa.array(feats.reshape(-1), pa.float32()), self.dim)
        self._parquet.write_table(pa.Table.from_arrays([pa.array(names, pa.string()), column],
                                                       schema=self._parquet.schema))
        self._rows, self._buffered = [], 0

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if self.dim is None:
                    raise UsfmaeError(f"{self.out}: no features to write")
                if self._npy is not None:
                    self._header(self.n)  # same length: NumPy leaves room for the first dimension to grow
                self._flush()
            if self._parquet is not None:
                self._parquet.close()
        except BaseException as error:
            self._stack.__exit__(type(error), error, error.__traceback__)
            raise
        self._stack.__exit__(exc_type, exc, tb)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``usfmae`` description of a Parquet feature file ({} when it has none)."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta[META_KEY]) if META_KEY in meta else {}


def iter_feature_rows(path: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, feature (D,) float32)`` of a Parquet feature file, one row group at a time."""
    handle = pq.ParquetFile(path)
    for batch in handle.iter_batches(batch_size=ROW_GROUP, columns=["path", "feature"]):
        column = batch.column("feature")
        feats = column.flatten().to_numpy().reshape(len(batch), -1)
        yield from zip(batch.column("path").to_pylist(), feats, strict=True)
