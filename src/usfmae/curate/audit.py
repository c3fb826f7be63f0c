"""Leakage audit: which evaluation frames also sit in the pretraining corpus, exactly or nearly.

The paper states that its three evaluation sets were not used for pretraining, yet lists them in
OpenUS-46; a pretraining corpus assembled from public sources easily contains copies of evaluation
images (re-exported, resized, re-encoded). The audit compares every evaluation frame with every
pretraining frame:

* exact: identical decoded pixels (same ``pixel_hash``);
* near: 64-bit pHash within ``threshold`` bits (catches resizing, re-compression, small shifts).

Inputs are ingest manifests (``manifest.parquet``) or, for the evaluation side, a plain folder that
is hashed on the fly with the same readers. Outputs in ``DIR``: ``pairs.csv`` and
``pairs.parquet`` (one row per overlapping pair; ``ingest --exclude pairs.csv`` drops those
pretraining frames), ``summary.md`` and ``summary.json`` (counts per evaluation and pretraining source).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from usfmae.config import check, opt
from usfmae.curate.hashing import HammingIndex, phash, phash_from_int64, phash_to_int64, pixel_hash
from usfmae.curate.ingest import _frame_id, frame_stem, frame_stems, list_files, source_of
from usfmae.curate.readers import detect_kind, read_frames
from usfmae.errors import DataError
from usfmae.fileio import NOT_UTF8_REASON, RejectLog, atomic_path, is_utf8, write_json

HASH_COLUMNS = ["id", "source", "path", "pixel_hash", "phash"]
PAIR_COLUMNS = ["eval_id", "eval_source", "eval_path", "pretrain_id", "pretrain_source", "pretrain_path",
                "match", "distance"]


def hash_folder(folder: str | Path, fps: float = 3.0, axis: int = 2, rejects: RejectLog | None = None
                ) -> pd.DataFrame:
    """Hash every frame of every readable file under ``folder`` (columns :data:`HASH_COLUMNS`).

    The source is the first sub-folder (or the folder's own name for files directly inside it).
    Unreadable files are skipped and recorded in ``rejects``, with ingest's rules: a file that
    vanished or cannot be opened (a dangling link) and a name that is not UTF-8 (the pairs tables
    are UTF-8 text) are rejects too, never the end of the audit.
    """
    folder = Path(folder)
    rows = []
    listing = list_files(folder)
    stems = frame_stems(listing)  # the ids ingest would give these files

    def reject(file: Path, reason: str) -> None:
        if rejects is not None:
            rejects.reject(file, reason)

    for rel_path in listing:
        rel, file = Path(rel_path), folder / rel_path
        if not is_utf8(rel_path):
            reject(file, NOT_UTF8_REASON)
            continue
        try:
            if detect_kind(file) in (None, "companion"):
                continue
            for frame in read_frames(file, fps=fps, axis=axis):
                rows.append({"id": _frame_id(stems.get(rel_path) or frame_stem(rel_path), frame.index),
                             "source": source_of(rel, folder),
                             "path": rel_path, "pixel_hash": pixel_hash(frame.pixels),
                             "phash": phash_to_int64(phash(frame.pixels))})
        except DataError as exc:
            reject(file, str(exc))
        except OSError as exc:  # vanished, unreadable or a dangling link since the folder was listed
            reject(file, f"cannot read file ({exc.strerror or exc.__class__.__name__})")
    return pd.DataFrame(rows, columns=HASH_COLUMNS)


def load_hashes(path: str | Path, statuses: tuple[str, ...] = ("ok",), **folder_kwargs: Any) -> pd.DataFrame:
    """Frame hashes from an ingest manifest (rows with the given statuses) or a folder of files."""
    path = Path(path)
    if path.is_dir() and (path / "manifest.parquet").is_file():
        path = path / "manifest.parquet"
    if path.is_dir():
        return hash_folder(path, **folder_kwargs)
    if not path.is_file():
        raise DataError(f"{path}: no such manifest or folder")
    try:
        table = pd.read_parquet(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable Parquet manifest ({exc.__class__.__name__})") from exc
    missing = sorted(set(HASH_COLUMNS) - set(table.columns))
    if missing:
        raise DataError(f"{path}: manifest lacks column(s) {', '.join(missing)}; write it with usfmae ingest")
    if "status" in table.columns:
        table = table[table["status"].isin(statuses)]
    if "source_path" in table.columns:  # ingest manifests: report the original file, not the PNG
        table = table.assign(path=table["source_path"])
    return table[HASH_COLUMNS].reset_index(drop=True)


def find_overlap(pretrain: pd.DataFrame, evaluation: pd.DataFrame, threshold: int = 6) -> pd.DataFrame:
    """All (evaluation frame, pretraining frame) pairs that match exactly or within ``threshold`` bits.

    A pair that matches exactly is reported once, as "exact" (distance 0 by definition of pixels).

    Returns:
        DataFrame with :data:`PAIR_COLUMNS`, sorted by evaluation id then pretraining id.
    """
    pre = pretrain.rename(columns={c: f"pretrain_{c}" for c in HASH_COLUMNS})
    ev = evaluation.rename(columns={c: f"eval_{c}" for c in HASH_COLUMNS})
    exact = ev.merge(pre, left_on="eval_pixel_hash", right_on="pretrain_pixel_hash")
    exact = exact.assign(match="exact", distance=0)
    exact_keys = set(zip(exact["eval_id"], exact["pretrain_id"], strict=True))
    index = HammingIndex(threshold)
    for slot, value in enumerate(pretrain["phash"].to_numpy()):
        index.add(phash_from_int64(value), slot)
    near_rows = []
    for ev_row in ev.itertuples(index=False):
        for slot, distance in index.query(phash_from_int64(ev_row.eval_phash)):
            pre_row = pre.iloc[slot]
            if (ev_row.eval_id, pre_row["pretrain_id"]) in exact_keys:
                continue
            near_rows.append({**ev_row._asdict(), **pre_row.to_dict(), "match": "near", "distance": distance})
    pairs = pd.concat([exact, pd.DataFrame(near_rows, columns=exact.columns)], ignore_index=True)
    pairs["distance"] = pairs["distance"].astype(int)
    return pairs[PAIR_COLUMNS].sort_values(["eval_id", "pretrain_id"]).reset_index(drop=True)


def summarize(pairs: pd.DataFrame, evaluation: pd.DataFrame, threshold: int) -> dict[str, Any]:
    """Counts per evaluation source: frames, frames with an exact / near / any match, by pretraining source."""
    per_source = []
    for source, frames in evaluation.groupby("source", sort=True):
        hits = pairs[pairs["eval_source"] == source]
        exact_ids = set(hits.loc[hits["match"] == "exact", "eval_id"])
        any_ids = set(hits["eval_id"])
        per_source.append({
            "eval_source": source, "eval_frames": int(len(frames)), "exact": len(exact_ids),
            "near_only": len(any_ids - exact_ids), "any": len(any_ids),
            "fraction": round(len(any_ids) / max(1, len(frames)), 4),
            "by_pretrain_source": {k: int(v) for k, v in
                                   hits.groupby("pretrain_source")["eval_id"].nunique().sort_index().items()},
        })
    return {"threshold": threshold, "eval_frames": int(len(evaluation)), "pairs": int(len(pairs)),
            "eval_frames_overlapping": int(pairs["eval_id"].nunique()),
            "pretrain_frames_overlapping": int(pairs["pretrain_id"].nunique()), "per_source": per_source}


def render_markdown(summary: dict[str, Any]) -> str:
    """The summary as a short Markdown report."""
    lines = ["# Leakage audit", "",
             f"{summary['eval_frames_overlapping']} of {summary['eval_frames']} evaluation frames overlap "
             f"{summary['pretrain_frames_overlapping']} pretraining frames ({summary['pairs']} pairs; "
             f"near = pHash distance <= {summary['threshold']} of 64 bits).", "",
             "| evaluation source | frames | exact | near only | any | fraction | pretraining sources |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for s in summary["per_source"]:
        by = ", ".join(f"{k} ({v})" for k, v in s["by_pretrain_source"].items()) or "-"
        lines.append(f"| {s['eval_source']} | {s['eval_frames']} | {s['exact']} | {s['near_only']} | "
                     f"{s['any']} | {s['fraction']:.2%} | {by} |")
    lines += ["", "Remove the overlap from the corpus: `usfmae ingest ROOT --out CORPUS --exclude pairs.csv`.", ""]
    return "\n".join(lines)


def run_audit(pretrain: str | Path, evaluation: str | Path, out: str | Path, threshold: int = 6,
              fps: float = 3.0, axis: int = 2) -> dict[str, Any]:
    """Audit and write ``pairs.csv``, ``pairs.parquet``, ``summary.md``, ``summary.json`` to ``out``."""
    if not 0 <= threshold <= 31:
        raise DataError("threshold must be between 0 and 31")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rejects = RejectLog(out / "rejects.jsonl")
    pre = load_hashes(pretrain, fps=fps, axis=axis, rejects=rejects)
    ev = load_hashes(evaluation, statuses=("ok", "duplicate", "near_duplicate", "excluded"),
                     fps=fps, axis=axis, rejects=rejects)
    if ev.empty:
        raise DataError(f"{evaluation}: no evaluation frames found")
    pairs = find_overlap(pre, ev, threshold)
    with atomic_path(out / "pairs.csv") as tmp:
        pairs.to_csv(tmp, index=False)
    with atomic_path(out / "pairs.parquet") as tmp:
        pairs.to_parquet(tmp, index=False)
    summary = summarize(pairs, ev, threshold)
    write_json(out / "summary.json", summary)
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text(render_markdown(summary), encoding="utf-8")
    return summary


@dataclass
class AuditConfig:
    """Settings of ``usfmae audit``."""

    pretrain: str = opt("", "pretraining manifest.parquet (or corpus folder)")
    evaluation: str = opt("", "evaluation manifest or folder")
    out: str = opt("", "output folder for pairs and summary")
    threshold: int = opt(6, "largest pHash Hamming distance (of 64 bits) counted as near duplicate")
    fps: float = opt(3.0, "frame rate when hashing videos in a folder")
    axis: int = opt(2, "volume slicing axis", choices=[0, 1, 2])

    def __post_init__(self) -> None:
        check(0 <= self.threshold <= 31, f"threshold must be between 0 and 31, got {self.threshold}")
        check(self.fps >= 0, f"fps must be >= 0, got {self.fps}")
        check(self.axis in (0, 1, 2), f"axis must be 0, 1 or 2, got {self.axis}")


def audit(cfg: AuditConfig) -> dict[str, Any]:
    """:func:`run_audit` with the settings of ``usfmae audit``; returns its summary."""
    return run_audit(cfg.pretrain, cfg.evaluation, cfg.out, threshold=cfg.threshold, fps=cfg.fps, axis=cfg.axis)
