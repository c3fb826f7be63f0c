"""Packed uint8 frame shards: written once by ``usfmae pack``, memory-mapped by the pretraining loader.

Layout of a shard folder::

    SHARDS/
      shards.json             format, frame shape (H, W, C), shard size, frame count
      shard_00000.npy         (shard_size, H, W, C) uint8, a plain NumPy .npy file
      shard_00001.npy         ... the last shard may hold fewer frames
      index.parquet           one row per frame: index, shard, offset, id, source, label
      rejects.jsonl           inputs that ``usfmae pack`` skipped and why

Every ``.npy`` file is filled through ``np.lib.format.open_memmap`` under a hidden temporary name
and renamed into place when complete, and ``index.parquet`` is rewritten atomically after each
shard, so the index only ever lists shards that are whole on disk. A stopped run resumes: complete
shards are kept, the last partial shard is dropped and its frames are packed again.

Reading costs no decode: :class:`ShardReader` memory-maps every shard (``mmap_mode="r"``) and
gathers a batch with one NumPy fancy-index per shard, so throughput is bounded by memory (or page
cache) bandwidth, not by PNG decoding.
"""

from __future__ import annotations

import logging
import mmap
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from usfmae.errors import DataError
from usfmae.fileio import atomic_path, read_json, reserve_space, write_json

log = logging.getLogger(__name__)

FORMAT = "usfmae-shards"
VERSION = 1
META_NAME = "shards.json"
INDEX_NAME = "index.parquet"
_INDEX_SCHEMA = pa.schema([
    ("index", pa.int64()), ("shard", pa.int32()), ("offset", pa.int32()),
    ("id", pa.string()), ("source", pa.string()), ("label", pa.string()),
])


def shard_name(number: int) -> str:
    """File name of shard ``number`` (``shard_00042.npy``)."""
    return f"shard_{number:05d}.npy"


def is_shard_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder written by :class:`ShardWriter` (has the meta and index files)."""
    path = Path(path)
    return (path / META_NAME).is_file() and (path / INDEX_NAME).is_file()


def check_layout(root: str | os.PathLike, frame_shape: Sequence[int], shard_size: int, fit: str | None = None) -> None:
    """Raise DataError when ``root`` already holds shards of another frame shape, shard size or fit policy."""
    root = Path(root)
    if not is_shard_dir(root):
        return
    meta = read_json(root / META_NAME)
    old_shape = tuple(meta.get("frame_shape", ()))
    if old_shape != tuple(frame_shape):
        raise DataError(f"{root}: already packed with frames {old_shape}, not {tuple(frame_shape)}; "
                        "use another --out folder")
    if int(meta.get("shard_size", -1)) != shard_size:
        raise DataError(f"{root}: already packed with shard size {meta.get('shard_size')}, not {shard_size}; "
                        "use the same --shard-size or another --out folder")
    old_fit = meta.get("fit", "pad")  # shards written before the fit was recorded were letterboxed
    if fit is not None and old_fit != fit:
        raise DataError(f"{root}: already packed with --fit {old_fit}, not {fit}; use another --out folder")


def packed_ids(root: str | os.PathLike) -> set[str]:
    """Ids of the frames a shard folder holds (empty when it is none): only the id column is read."""
    root = Path(root)
    if not is_shard_dir(root):
        return set()
    return set(pq.read_table(root / INDEX_NAME, columns=["id"]).column("id").to_pylist())


def _read_index(root: Path) -> dict[str, list]:
    table = pq.read_table(root / INDEX_NAME)
    return {name: table.column(name).to_pylist() for name in _INDEX_SCHEMA.names}


class ShardWriter:
    """Append (H, W, C) uint8 frames to fixed-size ``.npy`` shards with a Parquet index.

    Use as a context manager; leaving the block without an exception finalises the last,
    partial shard. Opening a folder that already holds shards resumes it (see module docstring):
    ``writer.done_ids`` lists the frames that are safely packed, so the caller skips them.

    Args:
        out_dir: shard folder (created if missing).
        frame_shape: (H, W, C) of every frame, e.g. (224, 224, 1).
        shard_size: frames per shard file; 4096 grayscale 224x224 frames make ~200 MB.
        fit: the fit policy the frames were made square with ("pad" or "stretch").
    """

    def __init__(self, out_dir: str | os.PathLike, frame_shape: Sequence[int], shard_size: int = 4096,
                 fit: str = "pad") -> None:
        if len(frame_shape) != 3 or min(frame_shape) < 1:
            raise DataError(f"frame shape must be (H, W, C) with positive sizes, got {tuple(frame_shape)}")
        if shard_size < 1:
            raise DataError(f"shard size must be positive, got {shard_size}")
        self.root = Path(out_dir)
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.shard_size = int(shard_size)
        self.fit = fit  # how the frames were made square (usfmae.imaging.fit), recorded in shards.json
        self.root.mkdir(parents=True, exist_ok=True)
        # index rows of the complete shards, one Arrow table each: ~40 bytes a frame, not Python objects
        self._tables: list[pa.Table] = []
        self._n_done = 0
        self._open: np.memmap | None = None
        self._open_tmp: Path | None = None
        self._fill = 0
        self._pending: list[tuple[str, str, str | None]] = []
        self._resume()

    # -- resume -------------------------------------------------------------------------------
    def _resume(self) -> None:
        for stale in self.root.glob(".shard_*"):
            stale.unlink()  # a shard that was being filled (or trimmed) when the last run stopped
        if is_shard_dir(self.root):
            check_layout(self.root, self.frame_shape, self.shard_size, self.fit)
            table = pq.read_table(self.root / INDEX_NAME).cast(_INDEX_SCHEMA)
            shards = table.column("shard").to_numpy().astype(np.int64)
            counts = np.bincount(shards) if len(shards) else np.zeros(0, dtype=np.int64)
            # keep the leading run of complete shards that exist on disk; drop everything after
            keep = 0
            while (keep < len(counts) and counts[keep] == self.shard_size
                   and (self.root / shard_name(keep)).is_file()):
                keep += 1
            n_keep = keep * self.shard_size
            self._tables = [table.slice(0, n_keep)] if n_keep else []
            self._n_done = n_keep
            self._shards_done = keep
            if n_keep < len(shards):
                self._write_index()  # the index must never list a shard about to be deleted
        else:
            self._shards_done = 0
        for path in self.root.glob("shard_*.npy"):
            if int(path.stem.split("_")[1]) >= self._shards_done:
                path.unlink()  # partial or orphaned shard: its frames are packed again
        if self._shards_done:
            log.info("resuming %s: %d complete shard(s), %d frames kept", self.root, self._shards_done,
                     self._n_done)

    @property
    def done_ids(self) -> set[str]:
        """Ids of frames already packed in complete shards (plus any added in this session)."""
        done = {frame_id for table in self._tables for frame_id in table.column("id").to_pylist()}
        return done | {p[0] for p in self._pending}

    def __len__(self) -> int:
        return self._n_done + self._fill

    # -- writing ------------------------------------------------------------------------------
    def add(self, frame: np.ndarray, frame_id: str, source: str = "", label: str | None = None) -> int:
        """Append one frame; returns its global index.

        Args:
            frame: (H, W, C) uint8, or (H, W) when C == 1.
            frame_id: unique id (e.g. the manifest id or the relative path).
            source: source dataset name ("" when unknown).
            label: optional class label, stored as text.
        """
        if frame.ndim == 2:
            frame = frame[:, :, None]
        if frame.shape != self.frame_shape or frame.dtype != np.uint8:
            raise DataError(f"frame {frame_id!r} is {frame.dtype} {frame.shape}, expected uint8 {self.frame_shape}")
        if self._open is None:
            self._open_tmp = self.root / f".shard_{self._shards_done:05d}.partial.npy"
            self._open = np.lib.format.open_memmap(self._open_tmp, mode="w+", dtype=np.uint8,
                                                   shape=(self.shard_size, *self.frame_shape))
            reserve_space(self._open_tmp)  # a full disk: OSError now, not SIGBUS in the middle
        self._open[self._fill] = frame
        self._pending.append((frame_id, source, None if label is None else str(label)))
        self._fill += 1
        if self._fill == self.shard_size:
            self._finish_shard()
        return len(self) - 1

    def add_many(self, frames: Iterable[tuple[np.ndarray, str, str, str | None]]) -> None:
        """Append ``(frame, id, source, label)`` tuples in order."""
        for frame, frame_id, source, label in frames:
            self.add(frame, frame_id, source, label)

    def _finish_shard(self) -> None:
        assert self._open is not None and self._open_tmp is not None
        number, n = self._shards_done, self._fill
        final = self.root / shard_name(number)
        if n == self.shard_size:
            self._open.flush()
            del self._open
            os.replace(self._open_tmp, final)
        else:
            # the last shard is trimmed to its real length: copy into a right-sized file
            with atomic_path(final) as tmp:
                trimmed = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, *self.frame_shape))
                reserve_space(tmp)
                trimmed[:] = self._open[:n]
                trimmed.flush()
                del trimmed
            del self._open
            self._open_tmp.unlink()
        start = self._n_done
        ids, sources, labels = zip(*self._pending, strict=True)
        self._tables.append(pa.table({
            "index": np.arange(start, start + n, dtype=np.int64), "shard": np.full(n, number, dtype=np.int32),
            "offset": np.arange(n, dtype=np.int32), "id": list(ids), "source": list(sources), "label": list(labels),
        }, schema=_INDEX_SCHEMA))
        self._n_done += n
        self._open, self._open_tmp, self._fill, self._pending = None, None, 0, []
        self._shards_done += 1
        self._write_index()

    def _write_index(self) -> None:
        table = pa.concat_tables(self._tables) if self._tables else _INDEX_SCHEMA.empty_table()
        with atomic_path(self.root / INDEX_NAME) as tmp:
            pq.write_table(table, tmp)
        write_json(self.root / META_NAME, {
            "format": FORMAT, "version": VERSION, "frame_shape": list(self.frame_shape), "dtype": "uint8",
            "shard_size": self.shard_size, "num_frames": self._n_done, "num_shards": self._shards_done,
            "fit": self.fit,
        })

    def close(self) -> None:
        """Write the last partial shard (if any) and the final index."""
        if self._fill:
            self._finish_shard()
        elif not (self.root / INDEX_NAME).is_file():
            self._write_index()  # an empty corpus still gives a readable (empty) shard folder

    def abort(self) -> None:
        """Drop the shard being filled; complete shards and their index stay for a resume."""
        if self._open is not None:
            del self._open
            self._open = None
            if self._open_tmp is not None and self._open_tmp.exists():
                self._open_tmp.unlink()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ShardReader:
    """Random access to a shard folder; every shard is memory-mapped read-only.

    ``reader[i]`` copies one (H, W, C) uint8 frame out of the page cache; ``read_batch`` a batch.
    Pickling keeps only the path (a worker process re-maps the files instead of copying them).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.root = Path(path)
        if not is_shard_dir(self.root):
            raise DataError(f"{self.root}: not a shard folder (no {META_NAME} / {INDEX_NAME}); run `usfmae pack` first")
        meta = read_json(self.root / META_NAME)
        if meta.get("format") != FORMAT:
            raise DataError(f"{self.root / META_NAME}: not a usfmae shard folder (format {meta.get('format')!r})")
        self.frame_shape: tuple[int, int, int] = tuple(int(s) for s in meta["frame_shape"])  # type: ignore[assignment]
        self.fit: str = meta.get("fit", "pad")  # older shards were letterboxed
        rows = _read_index(self.root)
        self.ids: list[str] = rows["id"]
        self.sources: list[str] = rows["source"]
        self.labels: list[str | None] = rows["label"]
        shard_of = np.asarray(rows["shard"], dtype=np.int64)
        counts = np.bincount(shard_of) if len(shard_of) else np.zeros(0, dtype=np.int64)
        self._shards: list[np.ndarray] = []
        for number, count in enumerate(counts):
            file = self.root / shard_name(number)
            if not file.is_file():
                raise DataError(f"{file}: shard listed in the index is missing")
            arr = np.load(file, mmap_mode="r")
            if arr.shape[0] < count or arr.shape[1:] != self.frame_shape or arr.dtype != np.uint8:
                raise DataError(f"{file}: holds {arr.dtype} {arr.shape}, index expects {count} x {self.frame_shape}")
            self._shards.append(arr)
        # starts[k] = global index of the first frame of shard k; a sentinel end makes searchsorted exact
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._dropped = 0  # shards whose pages drop_pages_before gave back

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def num_shards(self) -> int:
        return len(self._shards)

    def _locate(self, index: int) -> tuple[int, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame {index} out of range for {len(self)} frames")
        index %= len(self)
        shard = int(np.searchsorted(self._starts, index, side="right")) - 1
        return shard, index - int(self._starts[shard])

    def drop_pages_before(self, index: int) -> None:
        """Give back the mapped pages of every shard that ends at or before frame ``index``.

        A sequential pass (``usfmae embed``) would otherwise keep every page it read mapped into the
        process, so its resident memory would grow with the corpus; the pages stay in the page cache.
        """
        last = int(np.searchsorted(self._starts, index, side="right")) - 1
        for shard in range(self._dropped, min(last, len(self._shards))):
            handle = getattr(self._shards[shard], "_mmap", None)  # np.memmap's mapping
            if handle is not None and hasattr(mmap, "MADV_DONTNEED"):
                handle.madvise(mmap.MADV_DONTNEED)
        self._dropped = max(self._dropped, last)

    def __getitem__(self, index: int) -> np.ndarray:
        """(H, W, C) uint8 copy of frame ``index`` (writable, so torch.from_numpy is safe on it)."""
        shard, offset = self._locate(int(index))
        return np.array(self._shards[shard][offset])

    def read_batch(self, indices: Sequence[int] | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Gather frames into one (B, H, W, C) uint8 array, in the order given.

        Sorted indices are fastest: each shard's frames are then a contiguous block of ``out``,
        filled by one ``np.take`` straight from the memory map (no intermediate copy).

        Args:
            indices: (B,) global frame indices.
            out: optional preallocated (B, H, W, C) uint8 C-contiguous array (e.g. pinned memory).
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if out is None:
            out = np.empty((len(idx), *self.frame_shape), dtype=np.uint8)
        elif out.shape != (len(idx), *self.frame_shape) or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous uint8 {(len(idx), *self.frame_shape)}, got {out.dtype} {out.shape}")
        if len(idx) == 0:
            return out
        if idx.min() < 0 or idx.max() >= len(self):
            raise IndexError(f"frame indices must lie in [0, {len(self)})")
        order = None
        if np.any(idx[1:] < idx[:-1]):
            order = np.argsort(idx, kind="stable")
            idx = idx[order]
        target = out if order is None else np.empty_like(out)
        shard_ids = np.searchsorted(self._starts, idx, side="right") - 1
        bounds = np.flatnonzero(np.diff(shard_ids)) + 1
        for lo, hi in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(idx)]]), strict=True):
            shard = int(shard_ids[lo])
            local = idx[lo:hi] - self._starts[shard]
            # mode="clip" avoids the temporary buffer numpy uses for mode="raise" (bounds checked above)
            np.take(self._shards[shard], local, axis=0, out=target[lo:hi], mode="clip")
        if order is not None:
            out[order] = target
        return out

    def __getstate__(self) -> dict:
        return {"root": str(self.root)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"])  # type: ignore[misc]
