"""Packing a frame corpus into memory-mapped uint8 shards (the logic behind ``usfmae pack``).

:func:`list_corpus` lists the frames of an image folder (searched recursively; the first folder
level is the source name) or of a Parquet manifest (``id``, ``path`` relative to the manifest, and
optionally ``status`` (only "ok" rows), ``source``, ``label``). :func:`load_frame` fits one image
into a (size, size, channels) uint8 array with :mod:`usfmae.imaging` (the decoder and fit policy
every stage shares; ``PackConfig.fit``, recorded in ``shards.json``), gray or RGB. :func:`pack_corpus` decodes them on ``PackConfig.workers`` threads and appends them to a
:class:`usfmae.shards.store.ShardWriter`; it resumes (complete shards kept, rejected files listed in
``rejects.jsonl`` not retried) and returns the counts the command prints.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import pyarrow.parquet as pq

from usfmae import imaging
from usfmae.config import check, opt, to_dict
from usfmae.curate.shard import in_shard, parse_shard
from usfmae.curate.shard_runs import record_run
from usfmae.errors import DataError
from usfmae.fileio import PathsUnder, RejectLog, printable_name, unique_names
from usfmae.imaging import DEFAULT_MAX_PIXELS, FIT_POLICIES, image_relpaths
from usfmae.runtime import configure_threads, progress_bar
from usfmae.shards.store import ShardWriter, check_layout, packed_ids

log = logging.getLogger(__name__)



@dataclass
class PackConfig:
    """Settings of ``usfmae pack``."""

    size: int = opt(224, "side of the square frames in pixels")
    channels: int = opt(1, "1 = grayscale, 3 = RGB", choices=[1, 3])
    shard_size: int = opt(4096, "frames per shard file")
    workers: int = opt(2, "decode threads (OpenCV releases the GIL)")
    allow_outside: bool = opt(False, "accept manifest paths outside the manifest's folder")
    fit: str = opt("pad", "how frames become square: pad (aspect kept, black borders) or stretch",
                   choices=list(FIT_POLICIES))
    shard: str | None = opt(None, "pack only part I of N of the frames (I/N, 0-based; e.g. a SLURM array "
                                  "task); `usfmae merge` combines the N shard folders")

    def __post_init__(self) -> None:
        parse_shard(self.shard)
        check(8 <= self.size <= 4096, f"--size must be between 8 and 4096, got {self.size}")
        check(self.channels in (1, 3), f"--channels must be 1 or 3, got {self.channels}")
        check(self.shard_size >= 1, f"--shard-size must be positive, got {self.shard_size}")
        check(self.workers >= 1, f"--workers must be positive, got {self.workers}")
        check(self.fit in FIT_POLICIES, f"--fit must be pad or stretch, got {self.fit!r}")


@dataclass(frozen=True, slots=True)  # slots: one of these per frame of the corpus is held
class CorpusItem:
    """One input frame: unique id, file, source dataset name, optional label."""

    id: str
    path: str  # a string, not a Path: ~220 bytes less per frame held
    source: str = ""
    label: str | None = None


def list_corpus(corpus: str | os.PathLike, allow_outside: bool = False) -> list[CorpusItem]:
    """The frames of an image folder (sorted by relative path) or of a Parquet manifest (row order).

    Folder ids are relative paths without suffix (with it when two files share a stem: ``img.png``,
    ``img.tif``), bytes that are not UTF-8 shown as ``\\xNN``; files that still share an id get
    ``~`` and 8 hex of the SHA-1 of their path (:func:`usfmae.fileio.unique_names`). A manifest path
    that leaves the manifest's folder is refused unless ``allow_outside``.
    """
    corpus = Path(corpus)
    if corpus.is_dir() and (corpus / "manifest.parquet").is_file():
        corpus = corpus / "manifest.parquet"  # a usfmae output folder: its frames, not its masks or sheets
    if corpus.is_dir():
        rels = image_relpaths(corpus)  # strings, not Paths: the listing is held for the whole run
        stems = [PurePosixPath(rel).with_suffix("").as_posix() for rel in rels]
        shared = Counter(stems)
        ids = [printable_name(stem + ("_" + PurePosixPath(rel).suffix.lower().lstrip(".") if shared[stem] > 1 else ""))
               for stem, rel in zip(stems, rels, strict=True)]
        del stems, shared
        # img.png, img.tif and img_png.jpg still share one (as may a \xNN name): a hash of the path
        ids = unique_names(ids, rels)
        root = str(corpus)
        return [CorpusItem(item_id, os.path.join(root, rel), printable_name(rel.split("/", 1)[0] if "/" in rel else ""))
                for item_id, rel in zip(ids, rels, strict=True)]
    if corpus.is_file() and corpus.suffix == ".parquet":
        try:
            names = pq.read_schema(corpus).names
            # only the columns packing uses: a clean manifest's other columns would cost memory per row
            table = pq.read_table(corpus, columns=[c for c in ("id", "path", "status", "source", "label")
                                                   if c in names])
        except Exception as exc:  # pyarrow raises several types for a broken file
            raise DataError(f"{corpus}: not a readable Parquet manifest ({exc.__class__.__name__})") from exc
        missing = {"id", "path"} - set(table.column_names)
        if missing:
            raise DataError(f"{corpus}: manifest lacks column(s) {', '.join(sorted(missing))}")
        items: list[CorpusItem] = []
        under = PathsUnder(corpus.parent, allow_outside)
        names_seen: dict[str, str] = {}  # one string per source / label value, not one per row
        # a batch of rows at a time as Python objects: all columns at once would cost ~0.5 KB a row
        for batch in table.to_batches(max_chunksize=65_536):
            cols = batch.to_pydict()
            n = batch.num_rows
            for item_id, rel, status, source, label in zip(
                    cols["id"], cols["path"], cols.get("status", ["ok"] * n), cols.get("source", [""] * n),
                    cols.get("label", [None] * n), strict=True):
                if status != "ok":
                    continue
                source = names_seen.setdefault(str(source or ""), str(source or ""))
                label = None if label is None else names_seen.setdefault(str(label), str(label))
                items.append(CorpusItem(str(item_id), under(str(rel)),
                                        source, label))
        return items
    raise DataError(f"{corpus}: expected an image folder or a .parquet manifest")


def load_frame(path: str | os.PathLike, size: int, channels: int, fit: str = "pad",
               max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image and fit it into (size, size, channels) uint8: :func:`usfmae.imaging.read_image`
    then :func:`usfmae.imaging.fit` (area interpolation; ``"pad"`` keeps the aspect ratio).

    Raises:
        DataError: the file is missing, empty, truncated, too large or not an image.
    """
    return imaging.fit(imaging.read_image(path, max_pixels=max_pixels), size, channels, fit)


def _reason(exc: Exception, path: str | os.PathLike) -> str:
    """The reason of a decoding error without the file name (the reject log records the file)."""
    text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def _decoded(items: list[CorpusItem], cfg: PackConfig) -> Iterator[tuple[CorpusItem, np.ndarray | str]]:
    """(item, frame) or (item, reason) in input order; decoding runs ``cfg.workers`` threads ahead."""
    def work(item: CorpusItem) -> np.ndarray | str:
        try:
            return load_frame(item.path, cfg.size, cfg.channels, cfg.fit)
        except (DataError, ValueError, cv2.error) as exc:
            return _reason(exc, item.path)

    if cfg.workers == 1:
        for item in items:
            yield item, work(item)
        return
    chunk = 256  # bounded look-ahead keeps memory flat in the corpus size
    with ThreadPoolExecutor(cfg.workers) as pool:
        for start in range(0, len(items), chunk):
            part = items[start:start + chunk]
            yield from zip(part, pool.map(work, part), strict=True)


def pack_corpus(corpus: str | os.PathLike, out: str | os.PathLike, cfg: PackConfig,
                progress: bool = True) -> dict:
    """Pack ``corpus`` (or, with ``cfg.shard``, part I of N of its frames) into shards under ``out``
    (resumable); returns counts for the summary line.

    Raises:
        DataError: the corpus holds no frames at all, or an id appears twice.
    """
    configure_threads(None, cfg.workers)
    out = Path(out)
    items = list_corpus(corpus, cfg.allow_outside)
    if not items:
        raise DataError(f"{corpus}: no images to pack")
    counts = Counter(item.id for item in items)
    if len(counts) != len(items):
        dup = next(i for i, n in counts.items() if n > 1)
        raise DataError(f"{corpus}: id {dup!r} appears more than once")
    del counts
    shard = parse_shard(cfg.shard)
    if shard is not None:  # the partition every stage shares, keyed by the frame's id
        items = [item for item in items if in_shard(item.id, shard)]
    rejects = RejectLog(out / "rejects.jsonl", log)
    rejected = {r.get("id") for r in rejects.read()}
    check_layout(out, (cfg.size, cfg.size, cfg.channels), cfg.shard_size, cfg.fit)
    record_run(out, "pack", cfg.shard, corpus, to_dict(cfg), finished=False)
    packed = packed_ids(out)
    if items and all(i.id in packed or i.id in rejected for i in items):
        record_run(out, "pack", cfg.shard, corpus, to_dict(cfg), finished=True)
        return {"frames": len(packed), "added": 0, "rejected": 0, "skipped": len(items)}
    del packed
    # OpenCV's own warnings about a broken file would add lines to our one-line reject message
    cv_level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        added, frames = _pack_items(items, rejected, rejects, out, cfg, progress)
    finally:
        cv2.utils.logging.setLogLevel(cv_level)
    record_run(out, "pack", cfg.shard, corpus, to_dict(cfg), finished=True)
    return {"frames": frames, "added": added, "rejected": rejects.count, "skipped": len(items) - added - rejects.count}


def _pack_items(items: list[CorpusItem], rejected: set, rejects: RejectLog, out: Path, cfg: PackConfig,
                progress: bool) -> tuple[int, int]:
    """Decode and append the frames not yet done; returns ``(frames added, frames in the folder)``."""
    added = 0
    with ShardWriter(out, (cfg.size, cfg.size, cfg.channels), cfg.shard_size, cfg.fit) as writer:
        done = writer.done_ids
        todo = [i for i in items if i.id not in done and i.id not in rejected]
        for item, result in progress_bar(_decoded(todo, cfg), total=len(todo), desc="pack", unit="img",
                                 enabled=progress):
            if isinstance(result, str):
                rejects.reject(item.path, result, id=item.id)
                continue
            writer.add(result, item.id, item.source, item.label)
            added += 1
    return added, len(writer)
