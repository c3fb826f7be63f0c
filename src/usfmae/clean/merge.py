"""Combine the output folders of ``usfmae clean --shard I/N`` runs into what one ``usfmae clean`` writes.

The merge (:func:`merge_clean`, behind ``usfmae merge``):

1. checks completeness (:func:`usfmae.curate.shard_runs.check_runs`): one finished folder for each
   shard 0..N-1, the same input and settings in all (apart from ``workers``);
2. lists the input again and walks it in single-run order, taking each image's manifest row from
   the shard that :func:`usfmae.curate.shard.shard_of` gives its id; an image its shard neither
   cleaned nor rejected is an error naming it and the shard to rerun;
3. writes ``manifest.parquet`` (same rows, same order), ``done.jsonl`` (so ``usfmae clean INPUT
   --out OUT`` resumes with nothing to do), ``clean_config.yaml``, ``rejects.jsonl`` (the shards'
   rejects, shard by shard) and the contact sheet, and hard-links every cleaned image and mask
   (copies across file systems). One streaming pass: memory stays flat in the number of images.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from usfmae.clean.inputs import list_inputs
from usfmae.clean.manifest import iter_manifest
from usfmae.clean.run import CleanConfig, write_outputs
from usfmae.config import build_config, save_config
from usfmae.curate.shard_runs import check_runs, in_input_order, link_or_copy, read_run
from usfmae.errors import DataError
from usfmae.fileio import RejectLog, atomic_open, ensure_output_dir
from usfmae.runtime import progress_bar


def is_clean_shard(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` looks like a ``usfmae clean`` output (for ``usfmae merge``'s dispatch)."""
    return (Path(folder) / "clean_config.yaml").is_file()


def merge_clean(shard_folders: Sequence[str | os.PathLike], out: str | os.PathLike,
                progress: bool = True) -> dict[str, Any]:
    """Merge the folders of ``usfmae clean --shard I/N`` runs (all N) into ``out``.

    Returns:
        ``shards``, ``total`` (inputs), ``cleaned``, ``rejected``, the residual-text totals of a
        single run's summary, ``manifest`` and ``contact_sheet``.

    Raises:
        DataError: a shard missing, unfinished, given twice, run on another input or with other
            settings, an input image that no shard has done, or ``out`` one of the shard folders.
    """
    folders = [Path(f) for f in shard_folders]
    base, names = check_runs([(str(f), read_run(f, "clean")) for f in folders], "clean")
    ordered = [Path(name) for name in names]
    out = Path(out)
    if any(out.resolve() == f.resolve() for f in folders):
        raise DataError(f"{out}: is one of the shard folders; merge into a new folder")
    cfg = build_config(CleanConfig, None, {**base["settings"], "shard": None})
    source = Path(base["input"])
    if not source.exists():
        raise DataError(f"{source}: the shards' input is not here; merge where the input can be listed")
    for folder in ordered:
        if not (folder / "manifest.parquet").is_file():
            raise DataError(f"{folder}: has no manifest.parquet; rerun that shard")
    items, bad_inputs = list_inputs(source, cfg.allow_outside)
    out = ensure_output_dir(out)
    rejects = [RejectLog(folder / "rejects.jsonl").read() for folder in ordered]
    rejected = [{r.get("id") for r in shard} for shard in rejects]
    count = sum(pq.ParquetFile(folder / "manifest.parquet").metadata.num_rows for folder in ordered)

    def rows_of(folder: Path) -> Iterator[tuple[dict, Path]]:
        for row in iter_manifest(folder / "manifest.parquet"):
            yield row, folder

    inputs = [(item_id, item_id) for item_id, _ in items] + [(bad["id"], bad["id"]) for bad in bad_inputs]
    merged = in_input_order(inputs, [rows_of(f) for f in ordered], lambda pair: pair[0]["id"], rejected, names)

    def linked() -> Iterator[dict]:
        for row, folder in progress_bar(merged, total=count, desc="merge clean", unit="img", enabled=progress):
            link_or_copy(folder / row["path"], out / row["path"])
            link_or_copy(folder / row["mask_path"], out / row["mask_path"])
            yield row

    totals, sheet = write_outputs(out, cfg, linked(), count, done_log=out / "done.jsonl")
    save_config(dataclasses.replace(cfg, shard=None), out / "clean_config.yaml")
    if any(rejects):  # as a single run: the file exists only when something was rejected
        with atomic_open(out / "rejects.jsonl", "w", encoding="utf-8") as handle:
            for folder in ordered:
                if (folder / "rejects.jsonl").is_file():
                    handle.write((folder / "rejects.jsonl").read_text(encoding="utf-8"))
    return {"shards": len(ordered), "total": len(items) + len(bad_inputs), "cleaned": count,
            "rejected": sum(len(r) for r in rejects), **totals, "manifest": str(out / "manifest.parquet"),
            "contact_sheet": str(sheet) if sheet else None}
