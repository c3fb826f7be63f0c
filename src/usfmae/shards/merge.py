"""Combine the shard folders of ``usfmae pack --shard I/N`` runs into what one ``usfmae pack`` writes.

"The same shards" means the same files: :func:`merge_packs` *repacks* the frames in single-run
order into fresh fixed-size ``shard_*.npy`` files with one ``index.parquet``, so the merged folder
is byte for byte what ``usfmae pack`` writes in one run (same ids and pixels at the same global
indices, same shard boundaries). Merging the N indexes instead, with frames left where they are,
is not possible in this store format: a folder's shards are numbered files of exactly
``shard_size`` frames (the last one excepted) whose order *is* the frame order, and the N runs'
shards are each partly filled and interleaved in single-run order. A repack costs one sequential
copy of the pixels (memory-mapped, no decoding), far less than the decoding the shards did.

Completeness is checked as for every stage (:func:`usfmae.curate.shard_runs.check_runs`): all N
finished, the same corpus and settings (apart from ``workers``), and every frame of the corpus
(listed again) packed or rejected by its own shard.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from usfmae.config import build_config
from usfmae.curate.shard_runs import check_runs, in_input_order, read_run
from usfmae.errors import DataError
from usfmae.fileio import RejectLog, atomic_open, ensure_output_dir
from usfmae.runtime import progress_bar
from usfmae.shards.pack import PackConfig, list_corpus
from usfmae.shards.store import ShardReader, ShardWriter, is_shard_dir


def merge_packs(shard_folders: Sequence[str | os.PathLike], out: str | os.PathLike,
                progress: bool = True) -> dict[str, Any]:
    """Merge the folders of ``usfmae pack --shard I/N`` runs (all N) into the shard folder ``out``.

    Returns:
        ``shards`` (runs merged), ``frames``, ``rejected``, ``out``.

    Raises:
        DataError: a run missing, unfinished, given twice, on another corpus or with other
            settings, a frame of the corpus that no run packed or rejected, or ``out`` not new.
    """
    folders = [Path(f) for f in shard_folders]
    base, names = check_runs([(str(f), read_run(f, "pack")) for f in folders], "pack")
    ordered = [Path(name) for name in names]
    out = Path(out)
    if any(out.resolve() == f.resolve() for f in folders) or is_shard_dir(out):
        raise DataError(f"{out}: already holds shards; merge into a new folder")
    cfg = build_config(PackConfig, None, {**base["settings"], "shard": None})
    items = list_corpus(base["input"], cfg.allow_outside)
    readers = [ShardReader(folder) for folder in ordered]
    out = ensure_output_dir(out)
    rejects = [RejectLog(folder / "rejects.jsonl").read() for folder in ordered]
    rejected = [{r.get("id") for r in shard} for shard in rejects]

    def frames_of(reader: ShardReader) -> Iterator[tuple[ShardReader, int]]:
        return ((reader, i) for i in range(len(reader)))

    merged = in_input_order(((item.id, item.id) for item in items), [frames_of(r) for r in readers],
                            lambda pair: pair[0].ids[pair[1]], rejected, names)
    with ShardWriter(out, (cfg.size, cfg.size, cfg.channels), cfg.shard_size, cfg.fit) as writer:
        for reader, i in progress_bar(merged, total=sum(len(r) for r in readers), desc="merge pack", unit="frame",
                              enabled=progress):
            writer.add(reader[i], reader.ids[i], reader.sources[i], reader.labels[i])
    if any(rejects):  # as a single run: the file exists only when something was rejected
        with atomic_open(out / "rejects.jsonl", "w", encoding="utf-8") as handle:
            for folder in ordered:
                if (folder / "rejects.jsonl").is_file():
                    handle.write((folder / "rejects.jsonl").read_text(encoding="utf-8"))
    return {"shards": len(ordered), "frames": len(writer), "rejected": sum(len(r) for r in rejects), "out": str(out)}
