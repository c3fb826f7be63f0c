"""Segmentation datasets as downloaded: official partitions, exact masks, bad masks reported not fatal."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures_datasets import (
    MMOTU_TRAIN,
    MMOTU_VAL,
    lesion_disc,
    make_busbra,
    make_mmotu,
    make_seg_csv,
    make_seg_folder,
    write_mask,
)

from usfmae.data.seg_datasets import (
    load_pairs,
    load_seg_dataset,
    official_or_kfold,
    read_mask,
)
from usfmae.errors import DataError
from usfmae.fileio import RejectLog


def test_busbra_masks_and_official_five_folds(tmp_path: Path) -> None:
    fx = make_busbra(tmp_path)
    ds = load_seg_dataset(f"busbra:{tmp_path}")
    assert ds.classes == ["background", "lesion"] and ds.mask_format == "binary"
    by_stem = {r.image.stem: r for r in ds.records}
    assert {s: r.fold for s, r in by_stem.items()} == fx.folds
    assert {s: r.group for s, r in by_stem.items()} == fx.groups
    assert by_stem["bus_0004-r"].mask == fx.root / "Masks" / "mask_0004-r.png"
    folds = official_or_kfold(ds, "auto", 5)
    assert [f.index for f in folds] == [0, 1, 2, 3, 4]
    for fold in folds:
        assert {ds.records[i].image.stem for i in fold.val} == {s for s, k in fx.folds.items() if k == fold.index}
    mask = read_mask(by_stem["bus_0001-l"], ds, (32, 32))
    stored = cv2.imread(str(by_stem["bus_0001-l"].mask), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(stored)) == {0, 255} and np.array_equal(mask, (stored == 255).astype(np.uint8))


@pytest.mark.parametrize("kind", ["mmotu", "mmotu8"])
def test_mmotu_official_segmentation_split(tmp_path: Path, kind: str) -> None:
    make_mmotu(tmp_path)
    ds = load_seg_dataset(f"{kind}:{tmp_path}")
    assert len(ds.classes) == (9 if kind == "mmotu8" else 2)
    (fold,) = official_or_kfold(ds, "auto", 5)
    assert [ds.records[i].image.stem for i in fold.train] == [s for s, _ in MMOTU_TRAIN]
    assert [ds.records[i].image.stem for i in fold.val] == [s for s, _ in MMOTU_VAL]
    for record, (stem, label) in zip(ds.records, MMOTU_TRAIN + MMOTU_VAL, strict=True):
        mask = read_mask(record, ds, (32, 32))
        disc = lesion_disc(32, int(stem))
        expected = 1 + label if kind == "mmotu8" else 1  # the colour code decodes to its tumour class
        assert np.array_equal(mask, disc.astype(np.uint8) * expected)
        assert record.label_index == label


def test_user_folder_and_csv(tmp_path: Path) -> None:
    fx = make_seg_folder(tmp_path)
    ds = load_seg_dataset(f"folder:{fx.root}")
    assert ds.classes == ["background", "class1", "class2"] and len(ds) == 6
    assert len(official_or_kfold(ds, "auto", 3)) == 3  # no official split: grouped k-fold
    csv_fx = make_seg_csv(tmp_path)
    cds = load_seg_dataset(f"csv:{csv_fx.root}")
    assert {r.image.stem: r.group for r in cds.records} == csv_fx.groups
    for fold in official_or_kfold(cds, "kfold", 3):
        train_groups = {cds.records[i].group for i in fold.train}
        assert not train_groups & {cds.records[i].group for i in fold.val}  # patients never straddle


def test_phantom_lesion_masks(phantom_dataset: Path) -> None:
    ds = load_seg_dataset(f"phantom:{phantom_dataset}")
    assert len(ds) == 32 and ds.classes == ["background", "lesion"]
    images, masks, kept = load_pairs(ds, range(4), 64, 1)
    assert images.shape == (4, 1, 64, 64) and masks.shape == (4, 64, 64) and kept.tolist() == [0, 1, 2, 3]
    assert set(np.unique(masks)) == {0, 1}


def test_masks_fit_with_nearest_neighbour_and_the_image_policy(tmp_path: Path) -> None:
    """A 40x20 image and mask padded to 16: the mask lands where its image content lands."""
    root = tmp_path / "wide"
    image = np.zeros((20, 40), np.uint8)
    image[5:15, 24:36] = 255
    write_mask(root / "images" / "a.png", image)
    write_mask(root / "masks" / "a.png", (image > 0).astype(np.uint8) * 2)
    ds = load_seg_dataset(f"folder:{root}")
    for policy in ("pad", "stretch"):
        images, masks, _ = load_pairs(ds, [0], 16, 1, policy=policy)
        assert set(np.unique(masks)) <= {0, 2}                         # no interpolated labels
        bright = images[0, 0] > 127
        assert (masks[0] > 0).sum() > 0 and np.mean(bright == (masks[0] > 0)) > 0.95
    _, padded, _ = load_pairs(ds, [0], 16, 1, policy="pad")
    assert not padded[0, :4].any() and not padded[0, 12:].any()        # black bands above/below


def test_bad_masks_are_reported_and_skipped(tmp_path: Path) -> None:
    fx = make_seg_folder(tmp_path)
    masks = fx.root / "masks"
    (masks / "img00.png").unlink()                                          # missing
    write_mask(masks / "img01.png", np.zeros((16, 16), np.uint8))           # another size
    bad_values = np.zeros((32, 32), np.uint8)
    bad_values[3, 3] = 7
    (fx.root / "classes.txt").write_text("background\nclass1\nclass2\n")
    write_mask(masks / "img02.png", bad_values)                             # outside the class set
    ds = load_seg_dataset(f"folder:{fx.root}")
    rejects = RejectLog(tmp_path / "rejects.jsonl")
    _, got, kept = load_pairs(ds, range(len(ds)), 32, 1, rejects=rejects)
    assert kept.tolist() == [3, 4, 5] and len(got) == 3
    reasons = {Path(r["file"]).name: r["reason"] for r in rejects.read()}
    assert set(reasons) == {"img00.png", "img01.png", "img02.png"}
    assert "missing" in reasons["img00.png"] and "16x16" in reasons["img01.png"] and "[7]" in reasons["img02.png"]
    assert all(len(r.splitlines()) == 1 for r in reasons.values())


def test_mmotu_unknown_colour_and_missing_split_file(tmp_path: Path) -> None:
    fx = make_mmotu(tmp_path)
    ds = load_seg_dataset(f"mmotu8:{fx.root}")
    odd = np.zeros((32, 32, 3), np.uint8)
    odd[0, 0] = (10, 20, 30)
    write_mask(ds.records[0].mask, odd)
    with pytest.raises(DataError, match=r"1.PNG: colour\(s\) \[\(10, 20, 30\)\]"):
        read_mask(ds.records[0], ds)
    (fx.root / "val.txt").unlink()
    with pytest.raises(DataError, match="val.txt: file not found"):
        load_seg_dataset(f"mmotu:{fx.root}")
    with pytest.raises(DataError, match="expected KIND:PATH"):
        load_seg_dataset("nope:/x")
