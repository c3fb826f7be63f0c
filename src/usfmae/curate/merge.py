"""``usfmae merge``: combine the output folders of ``usfmae ingest --shard I/N`` runs into one corpus.

Each shard ingested the files :func:`usfmae.curate.shard.shard_of` gave it, with within-file
decisions only made for sure; the cross-file ones (exact duplicates of frames in other files,
near duplicates corpus- or group-wide, exclusions) need every file's hashes. The merge therefore:

1. checks completeness: one finished folder for each shard 0..N-1, the same settings in all, every
   file of ROOT (listed again now) done by its own shard with its current size and date;
2. runs ingest's own :func:`usfmae.curate.ingest.finalize` over all shards' per-file records in path
   order, exactly as a single run does (so duplicates across shards are found here);
3. writes ``manifest.parquet``, ``.ingest/progress.jsonl`` (a later ``usfmae ingest ROOT --out OUT``
   resumes from it with nothing to do), ``ingest_config.yaml`` and ``rejects.jsonl`` into OUT, and
   hard-links every frame file (copies across file systems).

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

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from tqdm import tqdm

from usfmae.config import build_config, save_config, to_dict
from usfmae.curate.ingest import (
    MANIFEST_SCHEMA,
    STATUSES,
    IngestConfig,
    _load_progress,
    finalize,
    list_files,
    read_exclude_ids,
)
from usfmae.curate.shard import parse_shard, shard_of
from usfmae.errors import ConfigError, DataError
from usfmae.fileio import atomic_open, atomic_path, ensure_output_dir

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


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        if dst.stat().st_ino == src.stat().st_ino:
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: copy instead
        with atomic_path(dst) as tmp:
            shutil.copy2(src, tmp)


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
    ensure_output_dir(out / ".ingest")
    skip = {p.resolve() for p in [out, *folders]}
    files = [f for f in list_files(root) if not any(s in (root / f).resolve().parents for s in skip)]
    recipe = base.recipe()
    records: dict[str, tuple[dict[str, Any], Path]] = {}
    for _, folder in sorted(by_index.items()):
        for rel, record in _load_progress(folder / ".ingest" / "progress.jsonl").items():
            records[rel] = (record, folder)
    stale = []
    for rel in files:
        record = records.get(rel)
        stat = (root / rel).stat()
        if record is None or (record[0]["size"], record[0]["mtime_ns"], record[0]["recipe"]) != (
                stat.st_size, stat.st_mtime_ns, recipe):
            stale.append(rel)
    if stale:
        rel = stale[0]
        raise DataError(f"{len(stale)} file(s) of {root} not done by their shard, e.g. {rel} "
                        f"(shard {shard_of(rel, count)}/{count}): rerun that shard, then merge")
    exclude = read_exclude_ids(base.exclude) if base.exclude else set()
    rows = finalize([records[rel][0] for rel in files], base, exclude)
    folder_of = {row["id"]: records[rel][1] for rel in files for row in records[rel][0]["rows"]}
    linked = 0
    for row in tqdm(rows, desc="merge", unit="frame", disable=not progress):
        if row["path"]:
            _link(folder_of[row["id"]] / row["path"], out / row["path"])
            linked += 1
    merged = dataclasses.replace(base, out=str(out), shard=None)
    save_config(merged, out / "ingest_config.yaml")
    with atomic_open(out / ".ingest" / "progress.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(records[rel][0]) + "\n" for rel in files)
    with atomic_open(out / "rejects.jsonl", "w", encoding="utf-8") as handle:
        for _, folder in sorted(by_index.items()):
            if (folder / "rejects.jsonl").is_file():
                handle.write((folder / "rejects.jsonl").read_text(encoding="utf-8"))
    manifest = out / "manifest.parquet"
    with atomic_path(manifest) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), tmp)
    counts = {status: 0 for status in STATUSES}
    for row in rows:
        counts[row["status"]] += 1
    return {"manifest": str(manifest), "files": len(files), "shards": count, "frames_linked": linked, **counts}
