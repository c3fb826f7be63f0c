"""``usfmae pack --shard I/N`` + merge: the merged folder is the single run's, file for file."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from usfmae.cli import main
from usfmae.curate.shard import shard_of
from usfmae.errors import DataError
from usfmae.shards.merge import merge_packs
from usfmae.shards.pack import PackConfig, list_corpus, pack_corpus
from usfmae.shards.store import ShardReader


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """13 random gray images of different sizes in two folders, plus one broken PNG."""
    root = tmp_path_factory.mktemp("pack_merge") / "corpus"
    rng = np.random.default_rng(5)
    for i in range(13):
        sub = root / ("a" if i < 6 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sub / f"img{i:02d}.png"), rng.integers(0, 256, (10 + i, 14, 1), dtype=np.uint8))
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


def _pack(corpus: Path, out: Path, *extra: str) -> int:
    return main(["pack", str(corpus), "--out", str(out), "--size", "12", "--shard-size", "3", "--no-progress", *extra])


@pytest.fixture(scope="module")
def single(corpus: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "shards"
    assert _pack(corpus, out) == 0
    return out


@pytest.mark.parametrize("count", [2, 3])
def test_merged_packs_equal_a_single_run(corpus: Path, single: Path, tmp_path: Path, count: int, capsys) -> None:
    parts = [tmp_path / f"part{i}" for i in range(count)]
    for i, part in enumerate(parts):
        assert _pack(corpus, part, "--shard", f"{i}/{count}", "--workers", str(1 + i % 2)) == 0
        record = json.loads((part / "shard.json").read_text())
        assert (record["stage"], record["shard"], record["finished"]) == ("pack", f"{i}/{count}", True)
        assert all(shard_of(frame_id, count) == i for frame_id in ShardReader(part).ids)
    if count == 2:
        summary = merge_packs(parts[::-1], tmp_path / "merged", progress=False)
        assert summary == {"shards": count, "frames": 13, "rejected": 1, "out": str(tmp_path / "merged")}
    else:  # the CLI: `usfmae merge` picks the pack merge by the first folder's kind
        capsys.readouterr()
        assert main(["merge", *map(str, parts[::-1]), "--out", str(tmp_path / "merged"), "--no-progress"]) == 0
        assert capsys.readouterr().out == f"3 shards: 13 frames repacked, 1 rejected -> {tmp_path / 'merged'}\n"
    merged, one = ShardReader(tmp_path / "merged"), ShardReader(single)
    assert merged.ids == one.ids == [f"{'a' if i < 6 else 'b'}/img{i:02d}" for i in range(13)]
    assert (merged.sources, merged.labels, merged.num_shards) == (one.sources, one.labels, 5)
    np.testing.assert_array_equal(merged.read_batch(np.arange(13)), one.read_batch(np.arange(13)))
    assert pq.read_table(tmp_path / "merged" / "index.parquet").equals(pq.read_table(single / "index.parquet"))
    for name in ["shards.json"] + [f"shard_{k:05d}.npy" for k in range(5)]:
        assert (tmp_path / "merged" / name).read_bytes() == (single / name).read_bytes(), name
    assert [json.loads(line)["id"] for line in (tmp_path / "merged" / "rejects.jsonl").read_text().splitlines()] \
        == ["b/broken"]
    again = pack_corpus(corpus, tmp_path / "merged", PackConfig(size=12, shard_size=3), progress=False)
    assert again == {"frames": 13, "added": 0, "rejected": 0, "skipped": 14}  # resumes as a single run's folder


def test_incomplete_splits_and_changed_corpora_are_refused(corpus: Path, tmp_path: Path) -> None:
    grown = tmp_path / "grown"
    for path in corpus.rglob("*.png"):
        (grown / path.relative_to(corpus)).parent.mkdir(parents=True, exist_ok=True)
        (grown / path.relative_to(corpus)).write_bytes(path.read_bytes())
    parts = [tmp_path / "p0", tmp_path / "p1"]
    for i, part in enumerate(parts):
        assert _pack(grown, part, "--shard", f"{i}/2") == 0
    with pytest.raises(DataError, match=r"shard\(s\) 0/2 missing"):
        merge_packs(parts[1:], tmp_path / "m1", progress=False)
    other = tmp_path / "other"
    assert _pack(grown, other, "--shard", "1/2", "--fit", "stretch") == 0
    with pytest.raises(DataError, match="setting fit differs"):
        merge_packs([parts[0], other], tmp_path / "m2", progress=False)
    with pytest.raises(DataError, match="already holds shards"):
        merge_packs(parts, parts[0], progress=False)
    (grown / "a" / "late.png").write_bytes((corpus / "a" / "img00.png").read_bytes())
    with pytest.raises(DataError, match=rf"a/late: not done by its shard {shard_of('a/late', 2)}/2"):
        merge_packs(parts, tmp_path / "m3", progress=False)


def test_folder_ids_that_still_collide_get_a_path_hash(tmp_path: Path) -> None:
    # a.png and a.tif get a_png and a_tif by their suffix, which a_png.bmp's plain id a_png meets
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = np.random.default_rng(7)
    images = {name: rng.integers(0, 256, (12, 12), dtype=np.uint8) for name in ["a.png", "a.tif", "a_png.bmp"]}
    for name, pixels in images.items():
        cv2.imwrite(str(corpus / name), pixels)
    ids = {"a.png": "a_png~69aba0d0", "a.tif": "a_tif", "a_png.bmp": "a_png~2a694042"}
    assert {Path(item.path).name: item.id for item in list_corpus(corpus)} == ids
    assert {shard_of(i, 2) for i in ids.values()} == {0, 1}
    assert _pack(corpus, tmp_path / "single") == 0
    for i in range(2):
        assert _pack(corpus, tmp_path / f"part{i}", "--shard", f"{i}/2") == 0
    assert main(["merge", str(tmp_path / "part0"), str(tmp_path / "part1"), "--out", str(tmp_path / "merged"),
                 "--no-progress"]) == 0
    merged, one = ShardReader(tmp_path / "merged"), ShardReader(tmp_path / "single")
    assert merged.ids == one.ids == list(ids.values())
    np.testing.assert_array_equal(merged.read_batch(np.arange(3)), one.read_batch(np.arange(3)))
    np.testing.assert_array_equal(one.read_batch(np.arange(3))[..., 0], np.stack(list(images.values())))
