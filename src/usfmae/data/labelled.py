"""Labelled downstream datasets read as users download them, with their official splits and folds.

Every loader returns a :class:`LabelledDataset`: class names, one :class:`LabelledRecord` per image
(path, class index, patient/case group, official split or fold) and the dataset's official
partitions as :class:`Fold` objects (index lists into ``records``). Layouts follow
``shared/reference/benchmarks.md``:

- BUS-BRA: ``BUSBRA/Images/*.png``, ``bus_data.csv`` (ID, Case, Pathology), ``5-fold-cv.csv``
  (ID, kFold 1..5): the official patient-level 5-fold partition.
- MMOTU OTU_2d: ``images/<stem>.JPG``, ``train_cls.txt`` / ``val_cls.txt`` (``1.JPG  0``): the
  official 1000/469 split, 8 classes.
- GIST514-DB: ``usd514-db/usd514_jpeg_roi/images`` + COCO ``annotations/all_anno_crop.json`` and
  the Query2 splits ``train/val_anno_crop_split_K.json``.
- The user's own data: a folder per class, or a CSV ``path,label[,group]``.
- The phantom task: ``manifest.parquet`` written by ``usfmae.phantom.generate``.

A missing or malformed file raises :class:`usfmae.errors.DataError` naming the file.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from usfmae.errors import DataError
from usfmae.imaging import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

BUSBRA_CLASSES = ["benign", "malignant"]
MMOTU_CLASSES = ["chocolate_cyst", "serous_cystadenoma", "teratoma", "theca_cell_tumour", "simple_cyst",
                 "normal_ovary", "mucinous_cystadenoma", "high_grade_serous_cystadenocarcinoma"]
GIST514_CLASSES = ["leiomyoma", "gist"]  # COCO category_id 1, 2


@dataclass(frozen=True)
class LabelledRecord:
    """One labelled image.

    Attributes:
        path: absolute image path.
        label_index: index into ``LabelledDataset.classes``.
        group: patient/case id; images sharing a group never straddle a train/test boundary.
        split: official split name ("train"/"val") where the dataset ships one, else None.
        fold: official 0-based test fold where the dataset ships a k-fold partition, else None.
    """

    path: Path
    label_index: int
    group: str
    split: str | None = None
    fold: int | None = None


@dataclass(frozen=True)
class Fold:
    """One train/test partition: sorted indices into ``LabelledDataset.records``."""

    index: int
    train: tuple[int, ...]
    val: tuple[int, ...]


@dataclass
class LabelledDataset:
    """A labelled image set plus the protocol facts a result must record."""

    name: str
    classes: list[str]
    records: list[LabelledRecord]
    protocol: str = ""
    official: list[Fold] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 class indices."""
        return np.array([r.label_index for r in self.records], dtype=np.int64)

    @property
    def groups(self) -> np.ndarray:
        """(N,) object array of group ids."""
        return np.array([r.group for r in self.records], dtype=object)

    def select(self, indices: Sequence[int]) -> list[LabelledRecord]:
        """The records at ``indices`` (e.g. ``ds.select(fold.train)``)."""
        return [self.records[i] for i in indices]

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(c) for name, c in zip(self.classes, counts, strict=False)}


# ----------------------------------------------------------------------------------------- helpers
def _resolve_root(root: str | Path, marker: str, inner: Sequence[str], what: str) -> Path:
    """Find the folder holding ``marker`` at ``root`` or at one of the ``inner`` sub-paths."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root}: {what} folder not found")
    for candidate in [root, *(root / sub for sub in inner)]:
        if (candidate / marker).exists():
            return candidate.resolve()
    raise DataError(f"{root / marker}: not found (not a {what} folder; also looked in {', '.join(inner)})")


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV (UTF-8 with or without BOM), checking that ``required`` columns exist."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc.__class__.__name__})") from exc
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(columns) or 'none'})")
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def _image_lookup(folder: Path) -> dict[str, Path]:
    """Lower-cased file name -> path, so ``1.JPG`` is found as ``1.jpg`` on case-sensitive disks."""
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    return {p.name.lower(): p for p in folder.iterdir() if p.is_file()}


def _find_image(lookup: dict[str, Path], folder: Path, name: str, source: Path) -> Path:
    found = lookup.get(name.lower())
    if found is None:
        raise DataError(f"{folder / name}: image listed in {source.name} not found")
    return found.resolve()


def _folds_from_assignment(assign: Sequence[int | None]) -> list[Fold]:
    """Each distinct fold id is one test fold; everything else trains."""
    ids = sorted({a for a in assign if a is not None})
    folds = []
    for k in ids:
        val = tuple(i for i, a in enumerate(assign) if a == k)
        train = tuple(i for i, a in enumerate(assign) if a != k)
        folds.append(Fold(k, train, val))
    return folds


# ----------------------------------------------------------------------------------------- loaders
def load_busbra(root: str | Path) -> LabelledDataset:
    """BUS-BRA with its official patient-level 5-fold partition (``5-fold-cv.csv``, kFold 1..5)."""
    base = _resolve_root(root, "bus_data.csv", ["BUSBRA", "BUS-BRA"], "BUS-BRA")
    data_csv, folds_csv = base / "bus_data.csv", base / "5-fold-cv.csv"
    rows = _read_csv(data_csv, ["ID", "Case", "Pathology"])
    fold_of: dict[str, int] = {}
    for n, row in enumerate(_read_csv(folds_csv, ["ID", "kFold"]), start=2):
        try:
            fold_of[row["ID"]] = int(row["kFold"]) - 1
        except ValueError as exc:
            raise DataError(f"{folds_csv}: line {n}: kFold {row['kFold']!r} is not an integer") from exc
    lookup = _image_lookup(base / "Images")
    records = []
    for n, row in enumerate(rows, start=2):
        pathology = row["Pathology"].lower()
        if pathology not in BUSBRA_CLASSES:
            raise DataError(f"{data_csv}: line {n}: Pathology {row['Pathology']!r} is not benign/malignant")
        if row["ID"] not in fold_of:
            raise DataError(f"{folds_csv}: no kFold for ID {row['ID']!r} (listed in bus_data.csv)")
        path = _find_image(lookup, base / "Images", f"{row['ID']}.png", data_csv)
        records.append(LabelledRecord(path, BUSBRA_CLASSES.index(pathology), f"case{row['Case']}",
                                      fold=fold_of[row["ID"]]))
    return LabelledDataset("busbra", list(BUSBRA_CLASSES), records,
                           "BUS-BRA: official patient-level 5-fold partition (5-fold-cv.csv); "
                           "positive class malignant.", _folds_from_assignment([r.fold for r in records]))


def _read_cls_list(path: Path) -> list[tuple[str, int]]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    entries = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()  # the files use two spaces; accept any whitespace
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) >= len(MMOTU_CLASSES):
            raise DataError(f"{path}: line {n}: expected '<image>.JPG  <class 0-7>', got {line.strip()!r}")
        entries.append((parts[0], int(parts[1])))
    if not entries:
        raise DataError(f"{path}: no entries")
    return entries


def load_mmotu(root: str | Path) -> LabelledDataset:
    """MMOTU OTU_2d classification with the official 1000/469 train/val split (one Fold)."""
    base = _resolve_root(root, "train_cls.txt", ["OTU_2d", "MMOTU/OTU_2d"], "MMOTU OTU_2d")
    lookup = _image_lookup(base / "images")
    records = []
    for split in ("train", "val"):
        source = base / f"{split}_cls.txt"
        for name, label in _read_cls_list(source):
            path = _find_image(lookup, base / "images", name, source)
            # No patient ids ship with MMOTU: each image is its own group.
            records.append(LabelledRecord(path, label, Path(name).stem, split=split))
    train = tuple(i for i, r in enumerate(records) if r.split == "train")
    val = tuple(i for i, r in enumerate(records) if r.split == "val")
    return LabelledDataset("mmotu", list(MMOTU_CLASSES), records,
                           "MMOTU OTU_2d: official train_cls/val_cls split (1000/469); no patient ids "
                           "shipped, so images are not grouped by patient.", [Fold(0, train, val)])


def _read_coco(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc.__class__.__name__})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise DataError(f"{path}: not a COCO file (needs 'images' and 'annotations' lists)")
    return data


def gist_group(image: dict) -> str:
    """Case id of a GIST514 COCO image entry (the naming is inferred, not documented).

    An explicit ``case_id``/``patient_id`` field wins; otherwise a trailing view number is
    stripped from the file stem (``"012_3"`` -> ``"012"``) only when what remains still holds a
    digit, so ``"GIST_012"`` stays its own case rather than merging every GIST image into one.
    """
    for key in ("case_id", "patient_id"):
        if image.get(key) not in (None, ""):
            return f"case{image[key]}"
    stem = Path(str(image["file_name"])).stem
    prefix = re.sub(r"[_\-]\d+$", "", stem)
    return prefix if prefix != stem and re.search(r"\d", prefix) else stem


def load_gist514(root: str | Path) -> LabelledDataset:
    """GIST514-DB (ROI crops): image class from its COCO lesion annotation, Query2 splits as folds."""
    base = _resolve_root(root, "annotations/all_anno_crop.json",
                         ["usd514_jpeg_roi", "usd514-db/usd514_jpeg_roi"], "GIST514-DB")
    ann_dir = base / "annotations"
    all_path = ann_dir / "all_anno_crop.json"
    coco = _read_coco(all_path)
    category: dict[int, int] = {}
    for ann in coco["annotations"]:
        cat = ann.get("category_id")
        if cat not in (1, 2):
            raise DataError(f"{all_path}: annotation {ann.get('id')} has category_id {cat!r} (expected 1 or 2)")
        if category.setdefault(ann["image_id"], cat) != cat:
            raise DataError(f"{all_path}: image {ann['image_id']} has both leiomyoma and GIST annotations")
    lookup = _image_lookup(base / "images")
    records, by_name, unlabelled = [], {}, 0
    for image in coco["images"]:
        if image.get("id") not in category:
            unlabelled += 1
            continue
        path = _find_image(lookup, base / "images", str(image["file_name"]), all_path)
        by_name[str(image["file_name"])] = len(records)
        records.append(LabelledRecord(path, category[image["id"]] - 1, gist_group(image)))
    if unlabelled:
        log.warning("%s: %d image(s) without a lesion annotation left out", all_path, unlabelled)
    folds = []
    for k in range(100):
        train_path, val_path = ann_dir / f"train_anno_crop_split_{k}.json", ann_dir / f"val_anno_crop_split_{k}.json"
        if not train_path.exists() and not val_path.exists():
            break
        parts = []
        for path in (train_path, val_path):
            names = [str(im["file_name"]) for im in _read_coco(path)["images"]]
            unknown = [n for n in names if n not in by_name]
            if unknown:
                raise DataError(f"{path}: image {unknown[0]!r} is not in all_anno_crop.json")
            parts.append(tuple(sorted(by_name[n] for n in names)))
        folds.append(Fold(k, parts[0], parts[1]))
    n_groups = len({r.group for r in records})
    return LabelledDataset("gist514", list(GIST514_CLASSES), records,
                           f"GIST514-DB ROI crops: {len(folds)} Query2 split file pair(s); positive class GIST; "
                           f"{n_groups} case groups inferred from file names.", folds)


def load_folder(root: str | Path) -> LabelledDataset:
    """A folder per class (``root/<class>/*.png``); classes sorted by name; each image its own group."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    records, classes = [], []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            continue
        classes.append(class_dir.name)
        records += [LabelledRecord(p.resolve(), len(classes) - 1, str(p.relative_to(root).with_suffix("")))
                    for p in files]
    if len(classes) < 2:
        raise DataError(f"{root}: expected at least two class sub-folders holding images, found {len(classes)}")
    return LabelledDataset(root.name, classes, records, "folder per class; no patient grouping.")


def _class_order(labels: Sequence[str]) -> list[str]:
    unique = set(labels)
    if all(re.fullmatch(r"-?\d+", s) for s in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def load_csv(path: str | Path) -> LabelledDataset:
    """A CSV with columns ``path,label[,group]``; relative paths are relative to the CSV's folder."""
    path = Path(path).expanduser()
    rows = _read_csv(path, ["path", "label"])
    labels = [row["label"] for row in rows]
    for n, label in enumerate(labels, start=2):
        if not label:
            raise DataError(f"{path}: line {n}: empty label")
    classes = _class_order(labels)
    records = []
    for n, row in enumerate(rows, start=2):
        image = Path(row["path"])
        image = image if image.is_absolute() else path.parent / image
        if not image.is_file():
            raise DataError(f"{image}: image listed in {path.name} line {n} not found")
        group = row.get("group") or str(Path(row["path"]).with_suffix(""))
        records.append(LabelledRecord(image.resolve(), classes.index(row["label"]), group))
    if len(classes) < 2:
        raise DataError(f"{path}: needs at least two distinct labels, found {len(classes)}")
    grouping = "groups from the 'group' column" if any(r.get("group") for r in rows) else "no patient grouping"
    return LabelledDataset(path.stem, classes, records, f"CSV {path.name}; {grouping}.")


def load_phantom(root: str | Path) -> LabelledDataset:
    """The phantom task from ``manifest.parquet`` (a dataset folder or the manifest itself).

    Classes are the labels present, ordered by the manifest's ``label_index``, and re-indexed
    0..K-1 so a two-class phantom set (no ``normal``) is a two-class task.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root).expanduser()
    manifest = root / "manifest.parquet" if root.is_dir() else root
    if not manifest.is_file():
        raise DataError(f"{manifest}: phantom manifest not found")
    try:
        table = pq.read_table(manifest, columns=["id", "path", "label", "label_index"]).to_pydict()
    except (pa.ArrowInvalid, KeyError, OSError) as exc:
        raise DataError(f"{manifest}: not a phantom manifest (needs id, path, label, label_index)") from exc
    pairs = sorted(set(zip(table["label_index"], table["label"], strict=False)))
    if len({name for _, name in pairs}) != len(pairs):
        raise DataError(f"{manifest}: label and label_index disagree")
    classes = [name for _, name in pairs]
    records = []
    for ident, rel, label in zip(table["id"], table["path"], table["label"], strict=False):
        image = manifest.parent / rel
        if not image.is_file():
            raise DataError(f"{image}: image listed in {manifest.name} not found")
        records.append(LabelledRecord(image.resolve(), classes.index(label), str(ident)))
    return LabelledDataset("phantom", classes, records, "phantom simulator; each image its own group.")


LOADERS = {"busbra": load_busbra, "mmotu": load_mmotu, "gist514": load_gist514,
           "folder": load_folder, "csv": load_csv, "phantom": load_phantom}


def load_dataset(spec: str) -> LabelledDataset:
    """Load ``"KIND:PATH"`` with KIND one of busbra, mmotu, gist514, folder, csv, phantom."""
    kind, sep, path = spec.partition(":")
    if not sep or kind not in LOADERS or not path:
        raise DataError(f"dataset spec {spec!r}: expected KIND:PATH with KIND in {', '.join(LOADERS)}")
    return LOADERS[kind](path)


# ------------------------------------------------------------------------------------------ folds
def split_folds(ds: LabelledDataset, k: int, seed: int = 0) -> list[Fold]:
    """``k`` folds, stratified by class and grouped by patient (sklearn ``StratifiedGroupKFold``)."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(set(ds.groups.tolist()))
    if not 2 <= k <= n_groups:
        raise DataError(f"{ds.name}: cannot make {k} folds from {n_groups} patient group(s)")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    x = np.zeros((len(ds), 1))
    return [Fold(i, tuple(sorted(tr.tolist())), tuple(sorted(va.tolist())))
            for i, (tr, va) in enumerate(splitter.split(x, ds.labels, ds.groups))]


def holdout_split(ds: LabelledDataset, indices: Sequence[int], fraction: float = 0.1,
                  seed: int = 0) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Split ``indices`` (e.g. ``fold.train``) into (train, val) for early stopping.

    Grouped and stratified like :func:`split_folds`: the validation part is one of
    ``round(1 / fraction)`` StratifiedGroupKFold folds, so it holds about ``fraction`` of the images.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0.0 < fraction <= 0.5:
        raise DataError(f"validation fraction {fraction} must be in (0, 0.5]")
    idx = np.asarray(indices, dtype=np.int64)
    groups = ds.groups[idx]
    n_groups = len(set(groups.tolist()))
    if n_groups < 2:
        raise DataError(f"{ds.name}: cannot hold out a validation set from {n_groups} patient group(s)")
    splitter = StratifiedGroupKFold(n_splits=min(n_groups, max(2, round(1 / fraction))), shuffle=True,
                                    random_state=seed)
    train, val = next(splitter.split(np.zeros((len(idx), 1)), ds.labels[idx], groups))
    return tuple(sorted(idx[train].tolist())), tuple(sorted(idx[val].tolist()))


def official_folds(ds: LabelledDataset) -> list[Fold]:
    """The partitions the dataset ships (BUS-BRA 5 folds, MMOTU one split, GIST514 split files)."""
    if not ds.official:
        raise DataError(f"{ds.name}: no official split ships with this dataset; use split_folds(ds, k, seed)")
    return list(ds.official)


def label_fraction_subset(records: Sequence[LabelledRecord], fraction: float,
                          seed: int = 0) -> list[LabelledRecord]:
    """A stratified ``fraction`` of ``records`` (at least one per class present), original order kept.

    Subsets are nested: for one seed, the 10% subset lies inside the 25% subset, so a
    label-efficiency curve only ever adds labels.
    """
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"label fraction {fraction} must be in (0, 1]")
    rng = np.random.default_rng(seed)
    labels = np.array([r.label_index for r in records])
    keep: list[int] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        order = members[rng.permutation(len(members))]
        keep += order[: max(1, int(round(fraction * len(members))))].tolist()
    return [records[i] for i in sorted(keep)]
