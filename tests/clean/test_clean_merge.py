"""``usfmae clean --shard I/N`` + merge: the merged shards equal one run; incomplete splits are refused."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pyarrow.parquet as pq
import pytest
import yaml

from usfmae.clean.merge import merge_clean
from usfmae.cli import main
from usfmae.curate.shard import shard_of
from usfmae.errors import DataError
from usfmae.phantom.generate import PhantomConfig, generate_sample

N_IMAGES = 7


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """7 phantom scans at 64 px in two folders, plus one file that is not an image."""
    root = tmp_path_factory.mktemp("clean_merge") / "in"
    for index in range(N_IMAGES):
        folder = root / ("a" if index < 4 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        sample = generate_sample(3, index, PhantomConfig(size=64))
        cv2.imwrite(str(folder / f"img{index}.png"), cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
    (root / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def _clean(src: Path, out: Path, *extra: str) -> int:
    return main(["clean", str(src), "--out", str(out), "--size", "32", "--sheet", "3", "--no-progress", "--no-ocr",
                 *extra])


def _rows(folder: Path) -> list[dict]:
    rows = pq.read_table(folder / "manifest.parquet").to_pylist()
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # seconds: timing, not content


@pytest.fixture(scope="module")
def single(source: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "out"
    assert _clean(source, out) == 0
    return out


@pytest.mark.parametrize("count", [2, 3])
def test_merged_shards_equal_a_single_run(source: Path, single: Path, tmp_path: Path, count: int, capsys) -> None:
    parts = [tmp_path / f"part{i}" for i in range(count)]
    for i, part in enumerate(parts):
        assert _clean(source, part, "--shard", f"{i}/{count}", "--workers", str(1 + i % 2)) == 0
        record = json.loads((part / "shard.json").read_text())
        assert (record["stage"], record["shard"], record["finished"]) == ("clean", f"{i}/{count}", True)
        assert f"shard: {i}/{count}" in (part / "clean_config.yaml").read_text()
        ids = [row["id"] for row in _rows(part)]
        assert ids and all(shard_of(item_id, count) == i for item_id in ids)
    merged = tmp_path / "merged"
    if count == 2:
        summary = merge_clean(reversed(parts), merged, progress=False)  # any order of folders
        assert (summary["shards"], summary["cleaned"], summary["rejected"], summary["total"]) == (count, 7, 1, 8)
    else:  # the CLI: `usfmae merge` picks the clean merge by the first folder's kind
        capsys.readouterr()
        assert main(["merge", *map(str, parts[::-1]), "--out", str(merged), "--no-progress"]) == 0
        assert capsys.readouterr().out == f"3 shards, 8 images: 7 cleaned, 1 rejected -> {merged / 'manifest.parquet'}\n"
    assert _rows(merged) == _rows(single) and len(_rows(single)) == N_IMAGES
    for row in _rows(single):
        for key in ("path", "mask_path"):
            assert (merged / row[key]).read_bytes() == (single / row[key]).read_bytes()
    assert (merged / "contact_sheet.png").read_bytes() == (single / "contact_sheet.png").read_bytes()
    merged_cfg, single_cfg = (yaml.safe_load((f / "clean_config.yaml").read_text()) for f in (merged, single))
    assert {**merged_cfg, "workers": 1} == single_cfg  # workers: the first folder's, as any per-shard setting
    assert [json.loads(line)["id"] for line in (merged / "rejects.jsonl").read_text().splitlines()] == ["b__broken"]
    assert not (merged / "shard.json").exists()
    capsys.readouterr()
    assert _clean(source, merged) == 0  # the merged folder resumes as a single run's would: nothing to do
    assert json.loads(capsys.readouterr().out)["cleaned"] == 0


@pytest.fixture(scope="module")
def halves(source: Path, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("halves")
    parts = [root / "p0", root / "p1"]
    for i, part in enumerate(parts):
        assert _clean(source, part, "--shard", f"{i}/2") == 0
    return parts


def test_incomplete_or_mismatched_splits_are_refused(source: Path, halves: list[Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"shard\(s\) 1/2 missing"):
        merge_clean(halves[:1], tmp_path / "m1", progress=False)
    with pytest.raises(DataError, match="given twice"):
        merge_clean([halves[0], halves[0], halves[1]], tmp_path / "m2", progress=False)
    other = tmp_path / "other"
    assert _clean(source, other, "--shard", "1/2", "--size", "48") == 0
    with pytest.raises(DataError, match="setting size differs"):
        merge_clean([halves[0], other], tmp_path / "m3", progress=False)
    record = json.loads((other / "shard.json").read_text())
    (other / "shard.json").write_text(json.dumps({**record, "finished": False, "settings": json.loads(
        (halves[1] / "shard.json").read_text())["settings"]}))
    with pytest.raises(DataError, match="1/2 has not finished"):
        merge_clean([halves[0], other], tmp_path / "m4", progress=False)
    with pytest.raises(DataError, match="not the output of a `usfmae clean --shard"):
        merge_clean([halves[0], source], tmp_path / "m5", progress=False)


def test_an_image_added_after_the_shards_ran_is_named(source: Path, tmp_path: Path) -> None:
    grown = tmp_path / "grown"
    parts = [tmp_path / "g0", tmp_path / "g1"]
    for rel in sorted(p.relative_to(source) for p in source.rglob("*.png")):
        (grown / rel).parent.mkdir(parents=True, exist_ok=True)
        (grown / rel).write_bytes((source / rel).read_bytes())
    for i, part in enumerate(parts):
        assert _clean(grown, part, "--shard", f"{i}/2") == 0
    (grown / "a" / "late.png").write_bytes((source / "a" / "img0.png").read_bytes())
    with pytest.raises(DataError, match=rf"a__late: not done by its shard {shard_of('a__late', 2)}/2"):
        merge_clean(parts, tmp_path / "m", progress=False)


def test_a_whole_run_into_a_shard_folder_is_no_longer_a_shard(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _clean(source, out, "--shard", "0/2") == 0 and (out / "shard.json").is_file()
    assert _clean(source, out) == 0  # resumes the shard's images, cleans the rest
    assert not (out / "shard.json").exists() and len(_rows(out)) == N_IMAGES
