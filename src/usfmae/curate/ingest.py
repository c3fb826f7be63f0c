"""Ingest: a folder of sources (images, videos, DICOM, volumes) -> PNG frames + a Parquet manifest.

Layout: ``ROOT/<source>/...`` (the first sub-folder names the source). For every file the readers
(:mod:`usfmae.curate.readers`) yield frames; each frame gets a pixel hash and a perceptual hash
(:mod:`usfmae.curate.hashing`) and one manifest row. Output::

    CORPUS/frames/<source>/<relative path>_<ext>_<index>.png   frames kept (status "ok")
    CORPUS/manifest.parquet                                    one row per frame (or rejected file)
    CORPUS/rejects.jsonl                                       files that could not be read, and why
    CORPUS/ingest_config.yaml, CORPUS/.ingest/progress.jsonl    resolved settings, per-file records

Columns: ``id`` (``<source>/<relative path>_<ext>_<index>``; unique per corpus: files whose names
would give one id get a hash of their path, :func:`frame_stems`), ``source``, ``path`` (the frame PNG,
relative to CORPUS; empty when not written), ``source_path`` (the original file, relative to ROOT),
``kind``, ``frame_index`` (frame, slice or page; -1 for a rejected file), ``timestamp`` (s), ``width``,
``height``, ``channels``, ``bit_depth`` (of the stored data), ``pixel_hash`` (SHA-1), ``phash`` (int64
view of the 64-bit pHash) and ``phash_hex``, ``group_id``, ``status``, ``reason``, ``duplicate_of``,
``phash_distance``. Consumers take the rows with ``status == "ok"``.

Statuses: ``ok``; ``duplicate`` (same pixels as an earlier frame, ``duplicate_of``);
``near_duplicate`` (pHash within ``phash_threshold`` bits of an earlier kept frame of the same
group, or of the corpus with ``near_dup_scope=corpus``); ``excluded`` (listed by ``--exclude``, an
audit pairs file); ``rejected`` (one row per unreadable file, ``reason`` says why). With
``near_dup=flag`` near duplicates stay ``ok`` and only get ``duplicate_of``/``reason``. "Earlier"
is path order then frame order, so the result does not depend on the number of workers.

Resumable: each finished file appends one record to ``progress.jsonl``; a re-run skips files whose
size, mtime and sampling settings are unchanged and rebuilds the same manifest. Memory stays flat in
the number of frames: the records are read back from that file one at a time, the manifest written
in row groups (:mod:`usfmae.curate.manifest`).
"""

from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import json
import logging
import multiprocessing
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from usfmae.config import check, opt, save_config
from usfmae.curate.hashing import hamming, phash, phash_to_hex, phash_to_int64, pixel_hash
from usfmae.curate.manifest import (
    MANIFEST_SCHEMA,
    ProgressEntry,
    finalize,
    index_progress,
    read_records,
    write_manifest,
)
from usfmae.curate.png import write_png
from usfmae.curate.readers import SCALES, detect_kind, read_frames
from usfmae.curate.shard import in_shard, parse_shard
from usfmae.errors import DataError
from usfmae.fileio import (
    NOT_UTF8_REASON,
    RejectLog,
    append_jsonl,
    end_with_parent,
    ensure_output_dir,
    fit_name,
    is_utf8,
    printable_name,
    unique_names,
)
from usfmae.imaging import DEFAULT_MAX_PIXELS
from usfmae.runtime import available_cores, configure_threads, progress_bar

log = logging.getLogger(__name__)

_FORMAT = 1  # bump when the meaning of a progress record changes


@dataclasses.dataclass
class IngestConfig:
    """Settings of ``usfmae ingest``."""

    root: str = opt("", "folder with one sub-folder per source")
    out: str = opt("", "output corpus folder")
    fps: float = opt(3.0, "frames per second sampled from videos and DICOM cine (0 = every frame)")
    axis: int = opt(2, "volume slicing axis in NIfTI (x, y, z) order", choices=[0, 1, 2])
    scale: str = opt("bits", "16-bit to 8-bit mapping: by bit depth (as every stage decodes files), or "
                     "per-frame min-max", choices=SCALES)
    near_dup: str = opt("drop", "near duplicates: drop, flag (keep as ok) or keep (no check)",
                        choices=["drop", "flag", "keep"])
    phash_threshold: int = opt(6, "largest pHash Hamming distance (of 64 bits) that is a near duplicate")
    near_dup_scope: str = opt("group", "compare within a group (clip/study) or corpus-wide",
                              choices=["group", "corpus"])
    workers: int = opt(0, "worker processes (0 = CPU cores - 1)")
    exclude: str | None = opt(None, "audit pairs file (CSV/Parquet with pretrain_id); those frames are excluded")
    png_compression: int = opt(1, "PNG zlib level 0-9 (0 = stored: fastest, largest files)")
    min_levels: int = opt(3, "frames with fewer distinct gray levels per channel are rejected "
                             "(1 = constant; 2 = binary, i.e. segmentation masks shipped beside images)")
    modality: str = opt("US", "DICOM modalities to take, comma-separated (US; US,OT; any = all); "
                              "other DICOMs (CT, MR, dose grids) are rejected with the reason")
    max_pixels: int = opt(DEFAULT_MAX_PIXELS, "refuse frames with more pixels, checked from the file header "
                                              "before decoding (volumes: 16x this in voxels)")
    shard: str | None = opt(None, "ingest only part I of N of the files (I/N, 0-based; e.g. a SLURM array "
                                  "task), then combine all N output folders with `usfmae merge`")

    def __post_init__(self) -> None:
        check(self.fps >= 0, "fps must be >= 0 (0 keeps every frame)")
        check(0 <= self.phash_threshold <= 31, "phash-threshold must be between 0 and 31")
        check(self.workers >= 0, "workers must be >= 0")
        check(0 <= self.png_compression <= 9, "png-compression must be 0..9")
        check(1 <= self.min_levels <= 256, "min-levels must be 1..256")
        parse_shard(self.shard)
        check(self.max_pixels >= 1, "max-pixels must be >= 1")
        check(all(m.isalnum() for m in self.modalities()) or self.modality.strip().lower() == "any",
              f"modality must be DICOM modality codes separated by commas (or any), got {self.modality!r}")

    def modalities(self) -> tuple[str, ...]:
        """The accepted DICOM modalities, upper case; empty = any."""
        if self.modality.strip().lower() == "any":
            return ()
        return tuple(m.strip().upper() for m in self.modality.split(",") if m.strip())

    def recipe(self) -> str:
        """Settings that change what a worker produces for a file (a change re-processes it)."""
        keys = ("fps", "axis", "scale", "near_dup", "phash_threshold", "min_levels", "modality", "max_pixels")
        return json.dumps([_FORMAT] + [getattr(self, k) for k in keys])


def frame_stem(rel_path: str) -> str:
    """The plain frame-id stem of a file: ``"Src/a/b.dcm"`` -> ``"Src/a/b_dcm"`` (ids add ``_<index>``).

    Dots become ``_`` so the id is a readable, valid path; a long name is shortened by
    :func:`usfmae.fileio.fit_name`, a name that is not UTF-8 shown as ``\\xNN``. Two files can share a
    plain stem (``a.b.png`` and ``a_b.png``; ``a.png`` and ``a_png``): see :func:`frame_stems`.
    """
    rel = Path(rel_path if is_utf8(rel_path) else printable_name(rel_path))
    return rel.with_name(fit_name(rel.name.replace(".", "_"))).as_posix()


def frame_stems(files: list[str]) -> dict[str, str]:
    """The stems of the files of a full listing whose plain stem is shared: ``{file: stem}``.

    Rule (:func:`usfmae.fileio.unique_names`): every file whose plain :func:`frame_stem` is claimed
    by more than one listed file gets that stem + ``~`` + the first 8 hex of SHA-1 of its relative
    path (``Src/a_b_png~1f3e...``); the other files keep their plain stem, so a corpus without
    collisions keeps every id it had. A stem depends only on the listing, never on the order or the
    shard in which files are processed, so ``--shard`` runs and ``usfmae merge`` agree with one run.
    """
    plain = [frame_stem(rel) for rel in files]
    return {rel: stem for rel, name, stem in zip(files, plain, unique_names(plain, files), strict=True)
            if stem != name}


def _frame_id(stem: str, index: int) -> str:
    return f"{stem}_{index:05d}"


def distinct_levels(pixels: np.ndarray) -> int:
    """Number of distinct values of the most varied channel of a uint8 (H,W) or (H,W,3) frame."""
    # cv2.calcHist: 4x faster than np.bincount on a 640x480 frame (this runs on every frame)
    channels = range(1 if pixels.ndim == 2 else pixels.shape[2])
    return max(int(np.count_nonzero(cv2.calcHist([pixels], [c], None, [256], [0, 256]))) for c in channels)


def source_of(rel: Path, root: Path) -> str:
    """The source of a file: its first sub-folder under ROOT, or ROOT's own name for files in ROOT."""
    return rel.parts[0] if len(rel.parts) > 1 else root.resolve().name


def _row(rel: Path, root: Path, kind: str | None, **values: Any) -> dict[str, Any]:
    row = {name: None for name in MANIFEST_SCHEMA.names}
    row.update(source=source_of(rel, root), source_path=rel.as_posix(), kind=kind,
               status="ok", reason="", phash_distance=-1, modality="")
    row.update(values)
    return row


def process_file(root: str, rel_path: str, out: str, cfg: IngestConfig, stem: str | None = None) -> dict[str, Any]:
    """Read one file, hash its frames, drop within-file duplicates, write kept frames as PNG.

    ``stem`` is the file's frame-id stem from :func:`frame_stems` of the whole listing (None: the
    plain :func:`frame_stem`). Returns the progress record ``{"path", "size", "mtime_ns", "recipe",
    "rows"}``, with ``"stem"`` when it is not the plain one. Never raises for bad input: an
    unreadable file yields a ``rejected`` row (after any frames read before the failure, which are kept).
    """
    rel, file = Path(rel_path), Path(root) / rel_path
    plain = frame_stem(rel_path)
    stem = stem or plain
    extra = {} if stem == plain else {"stem": stem}
    if not is_utf8(rel_path):
        # Manifests, ids and frame names are UTF-8 text; a name that is not cannot be one of them.
        shown = Path(printable_name(rel_path))
        try:
            stat = file.stat()
            size, mtime = stat.st_size, stat.st_mtime_ns  # so a rerun skips it like any finished file
        except OSError:
            size, mtime = -1, -1
        return {"path": rel_path, "size": size, "mtime_ns": mtime, "recipe": cfg.recipe(), **extra,
                "rows": [_row(shown, Path(root), None, id=stem + "_rejected", frame_index=-1,
                              status="rejected", reason=NOT_UTF8_REASON)]}
    try:
        stat = file.stat()
    except OSError as exc:  # vanished or unreadable since the folder was listed: retried next run
        return {"path": rel_path, "size": -1, "mtime_ns": -1, "recipe": cfg.recipe(), **extra,
                "rows": [_row(rel, Path(root), None, id=stem + "_rejected", frame_index=-1,
                              status="rejected", reason=f"cannot read file ({exc.strerror})")]}
    record = {"path": rel_path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "recipe": cfg.recipe(),
              **extra, "rows": []}
    kind = detect_kind(file)
    if kind == "companion":
        return record  # data file of an .mhd/.nhdr header, read through the header
    rows: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    kept: list[tuple[int, str]] = []
    error = None
    modality = ""
    try:
        for frame in read_frames(file, group_id=f"file:{rel.as_posix()}", fps=cfg.fps, axis=cfg.axis,
                                 scale=cfg.scale, modalities=cfg.modalities(), max_pixels=cfg.max_pixels):
            pixels = frame.pixels
            fid, h, p = _frame_id(stem, frame.index), pixel_hash(pixels), phash(pixels)
            row = _row(rel, Path(root), kind, id=fid, frame_index=frame.index, timestamp=frame.timestamp,
                       width=pixels.shape[1], height=pixels.shape[0],
                       channels=1 if pixels.ndim == 2 else pixels.shape[2], bit_depth=frame.bit_depth,
                       pixel_hash=h, phash=phash_to_int64(p), phash_hex=phash_to_hex(p),
                       group_id=frame.group_id, modality=frame.modality)
            near = None
            if cfg.near_dup != "keep" and h not in seen:
                near = min(((hamming(p, q), qid) for q, qid in kept), default=None)
                near = near if near is not None and near[0] <= cfg.phash_threshold else None
            levels = distinct_levels(pixels) if cfg.min_levels > 1 else 1
            if levels < cfg.min_levels:
                row.update(status="rejected", reason="constant frame (no image content)" if levels == 1 else
                           f"only {levels} distinct levels (a segmentation mask?)")
            elif h in seen:
                row.update(status="duplicate", duplicate_of=seen[h], reason="same pixels as an earlier frame")
            elif near is not None:
                row.update(duplicate_of=near[1], phash_distance=near[0],
                           status="near_duplicate" if cfg.near_dup == "drop" else "ok",
                           reason=f"pHash distance {near[0]} to an earlier frame of the same file")
            seen.setdefault(h, fid)
            if row["status"] == "ok":
                if near is None:
                    kept.append((p, fid))
                row["path"] = f"frames/{fid}.png"
                _write_png(Path(out) / row["path"], pixels, cfg.png_compression)
            rows.append(row)
    except FrameWriteError:
        raise  # our disk, not the input: stop the run instead of rejecting every file
    except DataError as exc:
        error = str(exc)
        modality = getattr(exc, "modality", "")
    except Exception as exc:  # a reader bug or exotic file must not stop a corpus-sized run
        error = f"{type(exc).__name__}: {exc}"
    if error is not None or not rows:
        reason = error or "no frames (every frame or slice empty)"
        if rows:
            reason = f"stopped after {len(rows)} frame(s): {reason}"
        rows.append(_row(rel, Path(root), kind, id=stem + "_rejected", frame_index=-1,
                         status="rejected", reason=reason, modality=modality))
    record["rows"] = rows
    return record


class FrameWriteError(DataError):
    """A frame PNG could not be written (disk full, permissions): fatal for the run."""


def _write_png(path: Path, pixels, level: int) -> None:
    # PNG writing dominates ingest: "up" filter + ISA-L deflate, half libpng's time (curate.png)
    try:
        write_png(path, pixels, level)
    except OSError as exc:
        raise FrameWriteError(f"{path}: cannot write frame ({exc})") from exc


def _init_worker() -> None:
    end_with_parent()  # a killed parent must not leave workers writing into its folder
    cv2.setNumThreads(1)  # one process per core already; OpenCV threads would oversubscribe


def list_files(root: Path, skip: Path | None = None) -> list[str]:
    """Relative POSIX paths of all non-hidden files under ``root`` (sorted), except under ``skip``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (skip is None or (here / d).resolve() != skip))
        found += [(here / f).relative_to(root).as_posix() for f in filenames if not f.startswith(".")]
    return sorted(found)


def read_exclude_ids(path: str | Path) -> set[str]:
    """The ``pretrain_id`` column of an audit pairs file (CSV or Parquet)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: exclude file not found")
    import pandas as pd

    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
    if "pretrain_id" not in table.columns:
        raise DataError(f"{path}: expected a 'pretrain_id' column (an audit pairs file)")
    return set(table["pretrain_id"].dropna().astype(str))


def run_ingest(cfg: IngestConfig, progress: bool = True) -> dict[str, Any]:
    """Ingest ``cfg.root`` into ``cfg.out`` (resuming), write the manifest; return counts by status."""
    root, out = Path(cfg.root), Path(cfg.out)
    if not root.is_dir():
        raise DataError(f"{root}: input folder not found")
    if out.resolve() == root.resolve():
        raise DataError(f"{out}: the output folder cannot be the input folder (choose another --out)")
    ensure_output_dir(out / ".ingest")
    exclude = read_exclude_ids(cfg.exclude) if cfg.exclude else set()
    save_config(cfg, out / "ingest_config.yaml")
    progress_path = out / ".ingest" / "progress.jsonl"
    done = index_progress(progress_path)  # where each file's record is, not the records
    shard = parse_shard(cfg.shard)
    listing = list_files(root, skip=out.resolve())
    stems = frame_stems(listing)  # from the whole listing: every shard gives a file the same ids
    files = [rel for rel in listing if in_shard(rel, shard)]
    del listing
    recipe = cfg.recipe()

    def finished(rel: str) -> bool:
        entry = done.get(rel)
        try:
            stat = (root / rel).stat()
        except OSError:
            return False  # process_file records why it cannot be read
        # a file whose stem changed (a file sharing its plain stem came or went) is redone under its new ids
        return entry is not None and (entry.size, entry.mtime_ns, entry.recipe, entry.stem) == (
            stat.st_size, stat.st_mtime_ns, recipe, stems.get(rel, ""))

    todo = [rel for rel in files if not finished(rel)]
    rejects = RejectLog(out / "rejects.jsonl", log)
    workers = cfg.workers or max(1, available_cores() - 1)
    configure_threads(None, workers)
    bar = progress_bar(total=len(todo), unit="file", desc="ingest", enabled=progress and bool(todo))

    def collect(record: dict[str, Any]) -> None:
        # index_progress closed any torn line, so this record starts at the current end of the file
        offset = progress_path.stat().st_size if progress_path.exists() else 0
        append_jsonl(progress_path, record)
        done[record["path"]] = ProgressEntry(record["size"], record["mtime_ns"], recipe, offset,
                                             record.get("stem", ""))
        for row in record["rows"]:
            if row["status"] == "rejected":
                extra = {} if row["frame_index"] == -1 else {"frame": row["frame_index"]}
                rejects.reject(root / record["path"], row["reason"], **extra)
        bar.update(1)

    if workers == 1 or len(todo) <= 1:
        for rel in todo:
            collect(process_file(str(root), rel, str(out), cfg, stems.get(rel)))
    else:
        # forkserver, not fork: a forked child inherits locks held by the parent's OpenCV/torch
        # threads and can hang forever (seen when ingest runs in a process that used them before).
        context = multiprocessing.get_context("forkserver")
        with futures.ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, mp_context=context) as pool:
            jobs = [pool.submit(process_file, str(root), rel, str(out), cfg, stems.get(rel)) for rel in todo]
            for job in futures.as_completed(jobs):
                collect(job.result())
    bar.close()
    manifest = out / "manifest.parquet"
    counts = build_manifest(progress_path, [done[rel] for rel in files], cfg, exclude, manifest)
    return {"manifest": str(manifest), "files": len(files), "processed": len(todo), **counts}


def build_manifest(progress_path: Path, entries: list[ProgressEntry], cfg: IngestConfig, exclude: set[str],
                   manifest: Path) -> dict[str, int]:
    """Finalize the records at ``entries`` (path order) of a progress file into ``manifest``.

    Streams: the records are read twice from disk, the rows written in row groups as they come
    (:mod:`usfmae.curate.manifest`). Returns the number of rows of each status.
    """
    rows = finalize(lambda: read_records(progress_path, entries), cfg, exclude)
    return write_manifest(rows, manifest)
