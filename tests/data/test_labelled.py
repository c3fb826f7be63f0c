"""Labelled dataset loaders, official partitions, grouped folds and label-fraction subsets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from fixtures_datasets import (
    make_busbra,
    make_csv_dataset,
    make_folder_dataset,
    make_gist514,
    make_mmotu,
    make_phantom_manifest,
)

from usfmae.data.labelled import (
    LabelledRecord,
    gist_group,
    holdout_split,
    label_fraction_subset,
    load_busbra,
    load_dataset,
    load_gist514,
    load_mmotu,
    official_folds,
    split_folds,
)
from usfmae.errors import DataError


def _stem(record) -> str:
    return record.path.stem


def _by_stem(ds) -> dict[str, LabelledRecord]:
    return {_stem(r): r for r in ds.records}


@pytest.mark.parametrize("inner", [False, True])
def test_busbra_labels_groups_and_official_folds(tmp_path: Path, inner: bool) -> None:
    fx = make_busbra(tmp_path)
    ds = load_busbra(fx.root if inner else tmp_path)  # inner folder or archive root
    assert ds.name == "busbra" and ds.classes == ["benign", "malignant"]
    got = _by_stem(ds)
    assert {s: r.label_index for s, r in got.items()} == fx.labels
    assert {s: r.group for s, r in got.items()} == fx.groups
    assert {s: r.fold for s, r in got.items()} == fx.folds
    folds = official_folds(ds)
    assert [f.index for f in folds] == [0, 1, 2, 3, 4]
    for fold in folds:
        val_stems = {_stem(ds.records[i]) for i in fold.val}
        assert val_stems == {s for s, k in fx.folds.items() if k == fold.index}
        assert sorted(fold.train + fold.val) == list(range(len(ds)))


def test_mmotu_official_split_and_classes(tmp_path: Path) -> None:
    fx = make_mmotu(tmp_path)
    ds = load_dataset(f"mmotu:{tmp_path}")
    assert len(ds.classes) == 8 and ds.classes[0] == "chocolate_cyst" and ds.classes[7].startswith("high_grade")
    assert {s: r.label_index for s, r in _by_stem(ds).items()} == fx.labels
    (fold,) = official_folds(ds)
    assert [_stem(ds.records[i]) for i in fold.train] == [str(i) for i in range(1, 11)]
    assert [_stem(ds.records[i]) for i in fold.val] == [str(i) for i in range(11, 17)]
    assert {ds.records[i].split for i in fold.val} == {"val"}


def test_gist514_classes_groups_and_split_files(tmp_path: Path) -> None:
    fx = make_gist514(tmp_path)
    ds = load_gist514(tmp_path / "usd514-db")
    assert ds.classes == ["leiomyoma", "gist"]
    got = _by_stem(ds)
    assert {s: r.label_index for s, r in got.items()} == fx.labels
    assert {s: r.group for s, r in got.items()} == fx.groups
    folds = official_folds(ds)
    assert len(folds) == 3
    for fold in folds:
        assert {_stem(ds.records[i]) for i in fold.val} == {s for s, k in fx.folds.items() if k == fold.index}


def test_folder_csv_and_phantom_loaders(tmp_path: Path) -> None:
    folder = load_dataset(f"folder:{make_folder_dataset(tmp_path).root}")
    assert folder.classes == ["cyst", "solid"] and folder.class_counts() == {"cyst": 4, "solid": 4}
    fx = make_csv_dataset(tmp_path)
    table = load_dataset(f"csv:{fx.root}")
    assert table.classes == ["benign", "malignant"]
    assert {_stem(r): (r.label_index, r.group) for r in table.records} == \
        {s: (fx.labels[s], fx.groups[s]) for s in fx.labels}
    ph = make_phantom_manifest(tmp_path)
    phantom = load_dataset(f"phantom:{ph.root}")
    assert phantom.classes == ["benign", "malignant"]
    assert {_stem(r): r.label_index for r in phantom.records} == ph.labels
    with pytest.raises(DataError, match="no official split"):
        official_folds(phantom)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_folds_keep_patients_together_and_stratify(tmp_path: Path, seed: int) -> None:
    ds = load_dataset(f"csv:{make_csv_dataset(tmp_path).root}")
    folds = split_folds(ds, 2, seed)
    assert len(folds) == 2
    assert sorted(i for f in folds for i in f.val) == list(range(len(ds)))  # each image tested once
    for fold in folds:
        train_groups = {ds.records[i].group for i in fold.train}
        val_groups = {ds.records[i].group for i in fold.val}
        assert not train_groups & val_groups
        assert sorted({ds.records[i].label_index for i in fold.val}) == [0, 1]  # stratified
    assert split_folds(ds, 2, seed) == folds  # deterministic per seed


def test_split_folds_busbra_groups(tmp_path: Path) -> None:
    make_busbra(tmp_path)
    ds = load_busbra(tmp_path)
    for fold in split_folds(ds, 5, seed=0):
        assert not {ds.records[i].group for i in fold.train} & {ds.records[i].group for i in fold.val}
    with pytest.raises(DataError, match="cannot make 11 folds"):
        split_folds(ds, 11)


def test_label_fraction_subset_stratified_nested() -> None:
    records = [LabelledRecord(Path(f"{i}.png"), int(i % 10 < 3), str(i)) for i in range(100)]  # 70/30
    small = label_fraction_subset(records, 0.1, seed=3)
    large = label_fraction_subset(records, 0.5, seed=3)
    assert Counter(r.label_index for r in small) == {0: 7, 1: 3}
    assert Counter(r.label_index for r in large) == {0: 35, 1: 15}
    assert set(small) <= set(large)
    assert Counter(r.label_index for r in label_fraction_subset(records, 0.001)) == {0: 1, 1: 1}
    assert label_fraction_subset(records, 1.0) == records
    with pytest.raises(DataError):
        label_fraction_subset(records, 0.0)


def _break_busbra_csv(root: Path) -> Path:
    path = root / "bus_data.csv"
    path.write_text("ID,Case\nbus_0001-l,1\n", encoding="utf-8")
    return path


def _drop_busbra_folds(root: Path) -> Path:
    path = root / "5-fold-cv.csv"
    path.unlink()
    return path


def _drop_busbra_image(root: Path) -> Path:
    path = root / "Images" / "bus_0003-l.png"
    path.unlink()
    return path


@pytest.mark.parametrize("breaker", [_break_busbra_csv, _drop_busbra_folds, _drop_busbra_image])
def test_busbra_bad_files_name_the_file(tmp_path: Path, breaker) -> None:
    fx = make_busbra(tmp_path)
    broken = breaker(fx.root)
    with pytest.raises(DataError) as err:
        load_busbra(fx.root)
    assert str(broken.name) in str(err.value) and "\n" not in str(err.value)


def test_mmotu_and_gist_malformed_files(tmp_path: Path) -> None:
    fx = make_mmotu(tmp_path)
    (fx.root / "val_cls.txt").write_text("11.JPG  0\n12.JPG\n")
    with pytest.raises(DataError, match=r"val_cls.txt: line 2"):
        load_mmotu(fx.root)
    gx = make_gist514(tmp_path)
    (gx.root / "annotations" / "all_anno_crop.json").write_text("{not json")
    with pytest.raises(DataError, match="all_anno_crop.json: not valid JSON"):
        load_gist514(gx.root)


def test_csv_missing_image_and_bad_spec(tmp_path: Path) -> None:
    fx = make_csv_dataset(tmp_path)
    (fx.root.parent / "images" / "p1_v0.png").unlink()
    with pytest.raises(DataError, match=r"p1_v0.png: image listed in labels.csv line 4 not found"):
        load_dataset(f"csv:{fx.root}")
    with pytest.raises(DataError, match="expected KIND:PATH"):
        load_dataset("imagenet:/x")
    with pytest.raises(DataError, match="not found"):
        load_dataset(f"busbra:{tmp_path / 'nowhere'}")


def test_holdout_split_grouped_inside_a_fold(tmp_path: Path) -> None:
    make_busbra(tmp_path)
    ds = load_busbra(tmp_path)
    fold = official_folds(ds)[0]
    train, val = holdout_split(ds, fold.train, fraction=0.25, seed=0)
    assert sorted(train + val) == list(fold.train)
    assert not {ds.records[i].group for i in train} & {ds.records[i].group for i in val}
    assert 1 <= len(val) < len(train)
    assert holdout_split(ds, fold.train, fraction=0.25, seed=0) == (train, val)


@pytest.mark.parametrize(("image", "group"), [
    ({"file_name": "012_3.jpg"}, "012"),
    ({"file_name": "GIST_012_1.jpg"}, "GIST_012"),
    ({"file_name": "GIST_012.jpg"}, "GIST_012"),  # prefix without digits: not a case id
    ({"file_name": "0007.jpg"}, "0007"),
    ({"file_name": "a_1.jpg", "case_id": 9}, "case9"),
])
def test_gist_group_from_names(image: dict, group: str) -> None:
    assert gist_group(image) == group


def test_phantom_loader_reads_the_real_manifest(phantom_dataset: Path) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(phantom_dataset / "manifest.parquet").to_pydict()
    ds = load_dataset(f"phantom:{phantom_dataset / 'manifest.parquet'}")
    assert len(ds) == len(table["id"]) == 32
    assert [ds.classes[r.label_index] for r in ds.records] == table["label"]
    assert [r.group for r in ds.records] == [str(i) for i in table["id"]]
    assert all(r.path.is_file() for r in ds.records)
    folds = split_folds(ds, 4, seed=0)
    assert sorted(i for f in folds for i in f.val) == list(range(32))
