"""``usfmae merge``: combine the output folders of ``usfmae ingest --shard I/N`` runs into one corpus.

Each shard ingested the files :func:`usfmae.curate.shard.shard_of` gave it, with within-file
decisions only made for sure; the cross-file ones (exact duplicates of frames in other files,
near duplicates corpus- or group-wide, exclusions) need every file's hashes. The merge therefore:

1. checks completeness: one finished folder for each shard 0..N-1, the same settings in all, every
   file of ROOT (listed again now) done by its own shard with its current size and date;
2. copies every file's record, in path order, into OUT's ``.ingest/progress.jsonl`` (a later
   ``usfmae ingest ROOT --out OUT`` resumes from it with nothing to do) and hard-links the file's
   frames (copies across file systems), one record at a time;
3. builds ``manifest.parquet`` from that progress file with ingest's own streaming
   :func:`usfmae.curate.ingest.build_manifest`, exactly as a single run does (so duplicates across
   shards are found here), and writes ``ingest_config.yaml`` and ``rejects.jsonl``.

OUT is locked like every stage's output folder (a second merge or an ingest into it stops in one line),
and memory stays flat in the number of frames (only each file's place in its shard's progress is held).

The result equals a single ``usfmae ingest ROOT --out OUT`` run: the same manifest rows and frame files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from usfmae.config import build_config, save_config, to_dict
from usfmae.curate.ingest import IngestConfig, build_manifest, frame_stems, list_files, read_exclude_ids
from usfmae.curate.manifest import ProgressEntry, index_progress
from usfmae.curate.shard import parse_shard, shard_of
from usfmae.curate.shard_runs import link_or_copy
from usfmae.errors import ConfigError, DataError
from usfmae.fileio import atomic_open, ensure_output_dir
from usfmae.runtime import progress_bar

# settings that may differ between shards (where they ran, how fast), not what they produce
_PER_SHARD = ("out", "shard", "workers")


def _shard_config(folder: Path) -> IngestConfig:
    path = folder / "ingest_config.yaml"
    if not path.is_file():
        raise DataError(f"{folder}: not an ingest output folder (no ingest_config.yaml)")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not values.get("shard"):
        raise DataError(f"{folder}: was not ingested with --shard I/N")
    return build_config(IngestConfig, None, values)


def _check_shards(folders: Sequence[Path]) -> tuple[IngestConfig, dict[int, Path]]:
    """The common settings and {shard index: folder}, or a one-line error saying what is missing."""
    if not folders:
        raise ConfigError("give the output folders of every ingest --shard run")
    configs = [(_shard_config(f), f) for f in folders]
    base, first = configs[0]
    count = parse_shard(base.shard)[1]
    common = {k: v for k, v in to_dict(base).items() if k not in _PER_SHARD}
    by_index: dict[int, Path] = {}
    for cfg, folder in configs:
        index, n = parse_shard(cfg.shard)
        if n != count:
            raise DataError(f"{folder}: shard {cfg.shard} of a split into {n}, {first} is one of {count}")
        differing = [k for k, v in to_dict(cfg).items() if k not in _PER_SHARD and common.get(k) != v]
        if differing:
            raise DataError(f"{folder}: setting {differing[0]} differs from {first}'s; shards must share settings")
        if index in by_index:
            raise DataError(f"shard {index}/{count} given twice: {by_index[index]} and {folder}")
        if not (folder / "manifest.parquet").is_file():
            raise DataError(f"{folder}: shard {index}/{count} has not finished (no manifest.parquet); rerun it")
        by_index[index] = folder
    missing = sorted(set(range(count)) - set(by_index))
    if missing:
        raise DataError(f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} missing: "
                        f"give every shard's output folder")
    return base, by_index


def merge_ingest(shard_folders: Sequence[str | os.PathLike], out: str | os.PathLike,
                 progress: bool = True) -> dict[str, Any]:
    """Merge the folders of ``usfmae ingest --shard I/N`` runs (all N) into ``out``.

    Returns:
        Counts by status plus ``manifest``, ``files``, ``shards``, ``frames_linked``.

    Raises:
        DataError: a shard missing, unfinished, given twice, run with other settings, or a file of
            the input folder that no shard has done (each message names the shard or file).
    """
    folders = [Path(f) for f in shard_folders]
    base, by_index = _check_shards(folders)
    count = len(by_index)
    root, out = Path(base.root), Path(out)
    if not root.is_dir():
        raise DataError(f"{root}: the shards' input folder is not here; merge where the input can be listed")
    ensure_output_dir(out)  # locked: a second merge into OUT stops in one line naming this one
    ensure_output_dir(out / ".ingest")  # the lock ingest takes: no `usfmae ingest --out OUT` meanwhile
    skip = {p.resolve() for p in [out, *folders]}
    files = [f for f in list_files(root) if not any(s in (root / f).resolve().parents for s in skip)]
    stems = frame_stems(files)  # what each shard gave (from its own full listing) and a single run gives
    recipe = base.recipe()
    shard_progress = {i: folder / ".ingest" / "progress.jsonl" for i, folder in sorted(by_index.items())}
    found: dict[str, tuple[ProgressEntry, int]] = {}  # file -> (its last record, the shard that has it)
    for i, path in shard_progress.items():
        for rel, entry in index_progress(path, repair=False).items():
            found[rel] = (entry, i)
    stale = []
    for rel in files:
        entry = found.get(rel, (None, 0))[0]
        stat = (root / rel).stat()
        if entry is None or (entry.size, entry.mtime_ns, entry.recipe, entry.stem) != (
                stat.st_size, stat.st_mtime_ns, recipe, stems.get(rel, "")):
            stale.append(rel)
    if stale:
        rel = stale[0]
        raise DataError(f"{len(stale)} file(s) of {root} not done by their shard, e.g. {rel} "
                        f"(shard {shard_of(rel, count)}/{count}): rerun that shard, then merge")
    exclude = read_exclude_ids(base.exclude) if base.exclude else set()
    progress_path = out / ".ingest" / "progress.jsonl"
    entries, linked = _copy_records(files, found, shard_progress, by_index, out, progress_path, progress)
    merged = dataclasses.replace(base, out=str(out), shard=None)
    save_config(merged, out / "ingest_config.yaml")
    with atomic_open(out / "rejects.jsonl", "wb") as handle:
        for _, folder in sorted(by_index.items()):
            if (folder / "rejects.jsonl").is_file():
                with open(folder / "rejects.jsonl", "rb") as part:
                    shutil.copyfileobj(part, handle)
    manifest = out / "manifest.parquet"
    counts = build_manifest(progress_path, entries, merged, exclude, manifest)
    return {"manifest": str(manifest), "files": len(files), "shards": count, "frames_linked": linked, **counts}


def _copy_records(files: list[str], found: dict[str, tuple[ProgressEntry, int]], shard_progress: dict[int, Path],
                  by_index: dict[int, Path], out: Path, progress_path: Path,
                  progress: bool) -> tuple[list[ProgressEntry], int]:
    """Write each file's record, in ``files`` order, into OUT's progress file and link its frames.

    Returns each file's entry in the new progress file and the number of frames linked.
    """
    handles = {i: open(path, "rb") for i, path in shard_progress.items()}  # noqa: SIM115 (closed below)
    entries: list[ProgressEntry] = []
    linked = offset = 0
    try:
        with atomic_open(progress_path, "wb") as merged:
            for rel in progress_bar(files, desc="merge", unit="file", enabled=progress):
                entry, shard = found[rel]
                handle = handles[shard]
                handle.seek(entry.offset)
                line = handle.readline()
                if not line.strip():  # a record appended after a torn line starts one byte later
                    line = handle.readline()
                record = json.loads(line)
                for row in record["rows"]:
                    if row["path"]:
                        link_or_copy(by_index[shard] / row["path"], out / row["path"])
                        linked += 1
                line = line if line.endswith(b"\n") else line + b"\n"
                merged.write(line)
                entries.append(entry._replace(offset=offset))
                offset += len(line)
    finally:
        for handle in handles.values():
            handle.close()
    return entries, linked
