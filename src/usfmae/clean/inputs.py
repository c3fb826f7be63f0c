"""What ``usfmae clean`` reads: an image folder or an ingest manifest, checked before any work.

Every input becomes an ``(id, file)`` pair; the id names the outputs (``images/<id>.png``), so it
must be a safe relative name (:func:`usfmae.fileio.unsafe_id`), and a manifest's paths must stay
under the manifest's folder unless ``allow_outside``. Inputs that fail are returned as rejects with
a reason (the run records them and goes on), never read and never written.

Folder ids are the relative path without suffix, parts joined by ``__`` (``a/b.png`` -> ``a__b``);
two files that differ only by suffix (``img.png``, ``img.tif``) keep theirs (``img_png``,
``img_tif``) so neither overwrites the other; files that still share an id (``x/y.png`` and
``x__y.png``) each get ``~`` and 8 hex of the SHA-1 of their relative path
(:func:`usfmae.fileio.unique_names`; ids nobody shares stay as they are). A folder with no images but DICOM, video or volume
files is a user error: those are read by ``usfmae ingest``.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path, PurePosixPath

from usfmae.curate.frames import DICOM_SUFFIXES, VIDEO_SUFFIXES, VOLUME_SUFFIXES
from usfmae.errors import DataError
from usfmae.fileio import (
    NOT_UTF8_REASON,
    PathsUnder,
    fit_name,
    is_utf8,
    printable_name,
    unique_names,
    unsafe_id,
)
from usfmae.imaging import image_relpaths

Item = tuple[str, str]  # (id, file path)
Reject = dict[str, str]


def _folder_inputs(source: Path) -> tuple[list[Item], list[Reject]]:
    rels = image_relpaths(source)  # strings, not Paths: held for the whole run
    if not rels:
        others = [p for p in source.rglob("*") if p.is_file()
                  and (p.suffix.lower() in DICOM_SUFFIXES + VIDEO_SUFFIXES + VOLUME_SUFFIXES
                       or p.name.lower().endswith(".nii.gz"))]
        if others:
            raise DataError(f"{source}: no images, but {len(others)} DICOM/video/volume file(s); "
                            f"run `usfmae ingest {source} --out CORPUS` first, then clean CORPUS/manifest.parquet")
    stems = ["__".join(PurePosixPath(rel).with_suffix("").parts) for rel in rels]
    shared = Counter(stems)
    ids = []
    for stem, rel in zip(stems, rels, strict=True):
        if shared[stem] > 1:  # img.png and img.tif: the suffix tells them apart
            stem += "_" + PurePosixPath(rel).suffix.lower().lstrip(".")
        ids.append(fit_name(stem))  # it names output files: keep under the file system's 255 bytes
    del stems, shared
    # x/y.png and x__y.png (or img.png, img.tif and img_png.jpg) still share one: a hash of the path
    ids = unique_names(ids, rels)
    items: list[Item] = []
    rejects: list[Reject] = []
    root = str(source)
    for item_id, rel in zip(ids, rels, strict=True):
        path = os.path.join(root, rel)
        if not is_utf8(rel):
            rejects.append({"id": printable_name(item_id), "file": printable_name(path),
                            "reason": NOT_UTF8_REASON})
            continue
        items.append((item_id, path))
    return items, rejects


def _manifest_inputs(source: Path, allow_outside: bool) -> tuple[list[Item], list[Reject]]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(source).names
        # only the columns used, as Arrow: the other columns of an ingest manifest, as Python
        # objects, would cost a kilobyte per row
        table = pq.read_table(source, columns=[c for c in ("id", "path", "status") if c in names])
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"{source}: not a readable Parquet manifest ({exc.__class__.__name__})") from exc
    missing = {"id", "path"} - set(table.column_names)
    if missing:
        raise DataError(f"{source}: manifest lacks column(s) {', '.join(sorted(missing))}")
    if "status" in table.column_names:
        table = table.filter(pc.equal(table["status"], "ok"))
    ids = [str(v) for v in table["id"].to_pylist()]
    rels = [str(v) for v in table["path"].to_pylist()]
    del table
    items: list[Item] = []
    rejects: list[Reject] = []
    seen: set[str] = set()
    under = PathsUnder(source.parent, allow_outside)
    for item_id, rel in zip(ids, rels, strict=True):
        why = unsafe_id(item_id) or ("id repeated in the manifest" if item_id in seen else None)
        if why is None:
            try:
                path = under(rel)
            except DataError as exc:
                why = str(exc).split(": ", 1)[-1]
        if why is not None:
            rejects.append({"id": printable_name(item_id), "file": printable_name(rel), "reason": why})
            continue
        seen.add(item_id)
        items.append((item_id, path))
    return items, rejects


def list_inputs(source: str | Path, allow_outside: bool = False) -> tuple[list[Item], list[Reject]]:
    """``(id, file)`` pairs from an image folder (recursive) or an ingest Parquet manifest.

    Args:
        source: a folder of images, or a ``.parquet`` manifest with ``id`` and ``path`` columns
            (paths relative to its folder; rows with a ``status`` other than "ok" are skipped).
        allow_outside: accept manifest paths that leave the manifest's folder.

    Returns:
        ``(items, rejects)``; each reject is ``{"id", "file", "reason"}``.

    Raises:
        DataError: the source is neither, the manifest is unreadable, or the folder holds only
            files for ``usfmae ingest``.
    """
    source = Path(source)
    if source.is_dir():
        return _folder_inputs(source)
    if source.is_file() and source.suffix == ".parquet":
        return _manifest_inputs(source, allow_outside)
    raise DataError(f"{source}: not an image folder or a .parquet manifest")
