"""Tiny fixture folders laid out exactly like the downloaded benchmark datasets.

Import these from any test (``from fixtures_datasets import make_busbra``). Each helper writes a
handful of small images whose brightness depends on the class (so a tiny model can learn the
task) and returns the folder a user would pass to the loader, plus what the loader must find.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# BUS-BRA fixture: 10 patients, 14 images; kFold 1..5 with two patients per fold.
BUSBRA_CASES = [  # (case, views, pathology, kFold)
    (1, "lr", "benign", 1), (2, "l", "malignant", 1),
    (3, "l", "benign", 2), (4, "lr", "malignant", 2),
    (5, "r", "benign", 3), (6, "l", "malignant", 3),
    (7, "lr", "benign", 4), (8, "r", "malignant", 4),
    (9, "l", "benign", 5), (10, "lr", "malignant", 5),
]
# MMOTU fixture: 16 images, classes 0..7 twice; stems 1..10 train, 11..16 val.
MMOTU_TRAIN = [(str(i), (i - 1) % 8) for i in range(1, 11)]
MMOTU_VAL = [(str(i), (i - 1) % 8) for i in range(11, 17)]
# MMOTU's colour code (RGB) of tumour classes 0..7 in annotations/<stem>.PNG.
MMOTU_PALETTE = [(64, 0, 0), (0, 64, 0), (0, 0, 64), (64, 0, 64), (64, 64, 0), (64, 64, 64), (0, 128, 0), (0, 0, 128)]
# GIST514 fixture: 6 cases x 2 views; cases 1-3 leiomyoma (category 1), 4-6 GIST (category 2).
GIST_CASES = [(case, 1 if case <= 3 else 2) for case in range(1, 7)]
GIST_SPLITS = [[1, 4], [2, 5], [3, 6]]  # cases in val_anno_crop_split_K.json


@dataclass
class Fixture:
    """A written fixture: ``root`` to pass to the loader, expected labels/groups/folds by file stem.

    ``folds`` holds the official 0-based test fold of each image (MMOTU: 0 = val, -1 = train).
    """

    root: Path
    labels: dict[str, int]
    groups: dict[str, str]
    folds: dict[str, int]


def write_image(path: Path, label: int, size: int = 32, seed: int = 0, color: bool = False) -> None:
    """A small speckle-like image whose mean brightness encodes ``label``."""
    rng = np.random.default_rng(seed)
    base = 40 + 25 * label
    img = np.clip(rng.rayleigh(base / 1.25, (size, size)), 0, 255).astype(np.uint8)
    if color:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")


def lesion_disc(size: int, seed: int) -> np.ndarray:
    """(size, size) bool disc at a seed-dependent place: the lesion of a segmentation fixture."""
    rng = np.random.default_rng(seed)
    cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 6) ** 2


def write_mask(path: Path, mask: np.ndarray) -> None:
    """Write a mask exactly: (H, W) values, or (H, W, 3) RGB colours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), mask[..., ::-1] if mask.ndim == 3 else mask):
        raise OSError(f"could not write {path}")


def make_busbra(parent: Path, size: int = 32) -> Fixture:
    """``parent/BUSBRA`` with Images/, Masks/, bus_data.csv and 5-fold-cv.csv (UTF-8 BOM)."""
    root = parent / "BUSBRA"
    labels, groups, folds, data_rows, fold_rows = {}, {}, {}, [], []
    for n, (case, views, pathology, k) in enumerate(BUSBRA_CASES):
        for view in views:
            stem = f"bus_{case:04d}-{view}"
            label = 0 if pathology == "benign" else 1
            write_image(root / "Images" / f"{stem}.png", label, size, seed=n * 2 + len(labels))
            # Masks as BUS-BRA ships them: 0 background, 255 lesion.
            write_mask(root / "Masks" / f"mask_{case:04d}-{view}.png",
                       lesion_disc(size, n * 2 + len(labels)).astype(np.uint8) * 255)
            labels[stem], groups[stem], folds[stem] = label, f"case{case}", k - 1
            data_rows.append([stem, case, 3 if label == 0 else 5, "ANONYMIZED", pathology, "bmode", "1",
                              view == "l" and "left" or "right", "10", "10", "5,5,10,10"])
            fold_rows.append([stem, k])
    with open(root / "bus_data.csv", "w", newline="", encoding="utf-8-sig") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "Case", "BIRADS", "Histology", "Pathology", "Tissue", "Device", "Side",
                         "Height", "Width", "BBOX"])
        writer.writerows(data_rows)
    with open(root / "5-fold-cv.csv", "w", newline="", encoding="utf-8-sig") as handle:
        csv.writer(handle).writerows([["ID", "kFold"], *fold_rows])
    return Fixture(root, labels, groups, folds)


def make_mmotu(parent: Path, size: int = 32) -> Fixture:
    """``parent/OTU_2d`` with images/*.JPG, annotations/, train/val(.txt, _cls.txt)."""
    root = parent / "OTU_2d"
    labels, groups, folds = {}, {}, {}
    for split, entries in (("train", MMOTU_TRAIN), ("val", MMOTU_VAL)):
        for stem, label in entries:
            write_image(root / "images" / f"{stem}.JPG", label, size, seed=int(stem), color=True)
            disc = lesion_disc(size, int(stem))
            write_mask(root / "annotations" / f"{stem}_binary.PNG", disc.astype(np.uint8))  # 0/1
            colour = np.zeros((size, size, 3), np.uint8)
            colour[disc] = MMOTU_PALETTE[label]
            write_mask(root / "annotations" / f"{stem}.PNG", colour)
            labels[stem], groups[stem], folds[stem] = label, stem, 0 if split == "val" else -1
        (root / f"{split}_cls.txt").write_text("".join(f"{s}.JPG  {c}\n" for s, c in entries))
        (root / f"{split}.txt").write_text("".join(f"{s}\n" for s, _ in entries))
    return Fixture(root, labels, groups, folds)


def _coco(images: list[dict], annotations: list[dict]) -> dict:
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "leiomyoma"}, {"id": 2, "name": "GIST"}]}


def make_gist514(parent: Path, size: int = 32) -> Fixture:
    """``parent/usd514-db/usd514_jpeg_roi`` with images/ and COCO annotations + 3 split pairs."""
    root = parent / "usd514-db" / "usd514_jpeg_roi"
    images, anns, labels, groups, folds = [], [], {}, {}, {}
    for case, category in GIST_CASES:
        for view in (1, 2):
            name = f"{case:03d}_{view}.jpg"
            image_id = len(images) + 1
            write_image(root / "images" / name, category - 1, size, seed=image_id, color=True)
            images.append({"id": image_id, "file_name": name, "width": size, "height": size})
            anns.append({"id": image_id, "image_id": image_id, "category_id": category, "iscrowd": 0,
                         "bbox": [4, 4, 10, 10], "area": 100,
                         "segmentation": [[4, 4, 14, 4, 14, 14, 4, 14]]})
            stem = Path(name).stem
            labels[stem], groups[stem] = category - 1, f"{case:03d}"
            folds[stem] = next(k for k, cases in enumerate(GIST_SPLITS) if case in cases)
    ann_dir = root / "annotations"
    ann_dir.mkdir(parents=True)
    (ann_dir / "all_anno_crop.json").write_text(json.dumps(_coco(images, anns)))
    for k, val_cases in enumerate(GIST_SPLITS):
        for split, keep in (("train", False), ("val", True)):
            ids = {im["id"] for im in images if (int(im["file_name"][:3]) in val_cases) == keep}
            content = _coco([im for im in images if im["id"] in ids], [a for a in anns if a["image_id"] in ids])
            (ann_dir / f"{split}_anno_crop_split_{k}.json").write_text(json.dumps(content))
    return Fixture(root, labels, groups, folds)


def make_folder_dataset(parent: Path, classes: tuple[str, ...] = ("cyst", "solid"), per_class: int = 4,
                        size: int = 32) -> Fixture:
    """``parent/folder/<class>/<class>_<i>.png``."""
    root = parent / "folder"
    labels = {}
    for c, name in enumerate(classes):
        for i in range(per_class):
            stem = f"{name}_{i}"
            write_image(root / name / f"{stem}.png", c, size, seed=c * 100 + i)
            labels[stem] = c
    return Fixture(root, labels, {s: s for s in labels}, {})


def make_csv_dataset(parent: Path, size: int = 32) -> Fixture:
    """``parent/csvset/labels.csv`` (path,label,group) over images/ with 4 patients x 2 images."""
    root = parent / "csvset"
    rows, labels, groups = [], {}, {}
    for patient in range(4):
        label = "malignant" if patient % 2 else "benign"
        for view in range(2):
            stem = f"p{patient}_v{view}"
            write_image(root / "images" / f"{stem}.png", patient % 2, size, seed=patient * 10 + view)
            rows.append([f"images/{stem}.png", label, f"p{patient}"])
            labels[stem], groups[stem] = patient % 2, f"p{patient}"
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["path", "label", "group"], *rows])
    return Fixture(root / "labels.csv", labels, groups, {})


def make_phantom_manifest(parent: Path, n: int = 8, size: int = 32) -> Fixture:
    """``parent/phantom`` with images/ and a manifest.parquet holding the contract's label columns.

    Labels alternate benign (0) / malignant (1); ``normal`` (2) is absent, as with the default
    phantom config, so the loader must re-index to a two-class task.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = parent / "phantom"
    ids = [f"ph{i:05d}" for i in range(n)]
    label_index = [i % 2 for i in range(n)]
    for ident, c in zip(ids, label_index, strict=False):
        write_image(root / "images" / f"{ident}.png", c, size, seed=int(ident[2:]))
    table = pa.table({"id": ids, "path": [f"images/{i}.png" for i in ids],
                      "label": [("benign", "malignant")[c] for c in label_index], "label_index": label_index,
                      "geometry": ["linear"] * n, "seed": [0] * n, "index": list(range(n))})
    pq.write_table(table, root / "manifest.parquet")
    return Fixture(root, dict(zip(ids, label_index, strict=False)), {i: i for i in ids}, {})


def make_seg_folder(parent: Path, n: int = 6, size: int = 32) -> Fixture:
    """``parent/segset/images/*.png`` + ``masks/*.png`` (label indices 0..2), matching stems.

    Image ``i`` holds a bright disc exactly where its mask says class ``1 + i % 2``.
    """
    root = parent / "segset"
    labels = {}
    for i in range(n):
        stem = f"img{i:02d}"
        disc = lesion_disc(size, 100 + i)
        image = np.full((size, size), 30, np.uint8)
        image[disc] = 200
        write_mask(root / "images" / f"{stem}.png", image)
        write_mask(root / "masks" / f"{stem}.png", disc.astype(np.uint8) * (1 + i % 2))
        labels[stem] = 1 + i % 2
    return Fixture(root, labels, {s: s for s in labels}, {})


def make_seg_csv(parent: Path, size: int = 32) -> Fixture:
    """``parent/segcsv/pairs.csv`` (image,mask,group) over images/ and labels/, 3 patients x 2 images."""
    root = parent / "segcsv"
    rows, groups = [], {}
    for patient in range(3):
        for view in range(2):
            stem = f"p{patient}_v{view}"
            write_image(root / "images" / f"{stem}.png", 1, size, seed=patient * 10 + view)
            write_mask(root / "labels" / f"{stem}.png", lesion_disc(size, patient * 10 + view).astype(np.uint8))
            rows.append([f"images/{stem}.png", f"labels/{stem}.png", f"p{patient}"])
            groups[stem] = f"p{patient}"
    with open(root / "pairs.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["image", "mask", "group"], *rows])
    return Fixture(root / "pairs.csv", {s: 1 for s in groups}, groups, {})
