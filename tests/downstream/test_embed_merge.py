"""``usfmae embed --shard I/N`` + merge: the merged features equal one run's; streamed .npy and .parquet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from usfmae.cli import main
from usfmae.curate.shard import shard_of
from usfmae.downstream.embed import embed, merge_embeddings
from usfmae.downstream.features import FeatureWriter, read_metadata
from usfmae.errors import ConfigError, DataError
from usfmae.models import checkpoint, registry


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return checkpoint.save_model(registry.create_model("mae_vit_micro_patch8_64"),
                                 tmp_path_factory.mktemp("w") / "micro.pt")


@pytest.fixture(scope="module")
def inputs(phantom_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A folder of 10 phantom PNGs in two subfolders plus a broken one, and the same frames packed."""
    from usfmae.data.images import load_image
    from usfmae.shards.store import ShardWriter

    root = tmp_path_factory.mktemp("embed_merge")
    pngs = sorted((phantom_dataset / "images").glob("*.png"))[:10]
    for i, png in enumerate(pngs):
        (root / "folder" / ("a" if i < 5 else "b")).mkdir(parents=True, exist_ok=True)
        (root / "folder" / ("a" if i < 5 else "b") / png.name).write_bytes(png.read_bytes())
    (root / "folder" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with ShardWriter(root / "shards", (64, 64, 1), shard_size=4) as writer:
        for png in pngs:
            writer.add(load_image(png, 64, 1), png.stem)
    return {"folder": root / "folder", "shards": root / "shards"}


def _table(path: Path) -> tuple[list[str], np.ndarray]:
    table = pq.read_table(path)
    return table.column("path").to_pylist(), np.stack(table.column("feature").to_numpy(zero_copy_only=False))


@pytest.mark.parametrize("kind, count", [("folder", 2), ("folder", 3), ("shards", 2)])
def test_merged_shards_equal_a_single_run(inputs: dict[str, Path], weights: Path, tmp_path: Path, kind: str,
                                          count: int, capsys) -> None:
    source = inputs[kind]
    single = embed(source, tmp_path / "single.parquet", weights=weights, batch_size=3)
    embed(source, tmp_path / "single.npy", weights=weights, batch_size=3)
    parts = [tmp_path / f"part{i}.parquet" for i in range(count)]
    for i, part in enumerate(parts):
        embed(source, part, weights=weights, batch_size=3, shard=f"{i}/{count}", num_workers=i % 2)
        run = read_metadata(part)["shard_run"]
        assert (run["stage"], run["shard"], run["finished"]) == ("embed", f"{i}/{count}", True)
    if count == 2:
        merged = merge_embeddings(parts[::-1], tmp_path / "merged.parquet", progress=False)
        assert (merged["n"], merged["dim"], merged["shards"]) == (single["n"], 128, count) == (10, 128, count)
    else:  # the CLI: `usfmae merge` picks the embed merge for a .parquet file
        capsys.readouterr()
        assert main(["merge", *map(str, parts[::-1]), "--out", str(tmp_path / "merged.parquet"), "--no-progress"]) == 0
        assert capsys.readouterr().out == f"3 shards: 10 x 128 features, 1 rejected -> {tmp_path / 'merged.parquet'}\n"
    paths, feats = _table(tmp_path / "merged.parquet")
    one_paths, one_feats = _table(tmp_path / "single.parquet")
    assert paths == one_paths and len(paths) == 10
    np.testing.assert_allclose(feats, one_feats, rtol=0, atol=1e-5)  # other batch neighbours: float rounding only
    assert read_metadata(tmp_path / "merged.parquet") == read_metadata(tmp_path / "single.parquet")
    merge_embeddings(parts, tmp_path / "merged.npy", progress=False)
    np.testing.assert_allclose(np.load(tmp_path / "merged.npy"), np.load(tmp_path / "single.npy"), rtol=0, atol=1e-5)
    assert (tmp_path / "merged.paths.txt").read_text() == (tmp_path / "single.paths.txt").read_text()
    if kind == "folder":
        rejects = (tmp_path / "merged.parquet.rejects.jsonl").read_text().splitlines()
        assert [Path(json.loads(line)["file"]).name for line in rejects] == ["broken.png"]
        key = "b/broken.png"
        owner = parts[shard_of(key, count)]
        assert (owner.with_name(owner.name + ".rejects.jsonl")).is_file()


def test_incomplete_or_mismatched_splits_are_refused(inputs: dict[str, Path], weights: Path, tmp_path: Path) -> None:
    source = inputs["shards"]
    with pytest.raises(ConfigError, match="--shard needs a .parquet output"):
        embed(source, tmp_path / "x.npy", weights=weights, shard="0/2")
    parts = [tmp_path / "p0.parquet", tmp_path / "p1.parquet", tmp_path / "mean1.parquet"]
    for part, shard, pool in zip(parts, ["0/2", "1/2", "1/2"], ["cls", "cls", "mean"], strict=True):
        embed(source, part, weights=weights, shard=shard, pool=pool)
    with pytest.raises(DataError, match=r"shard\(s\) 1/2 missing"):
        merge_embeddings(parts[:1], tmp_path / "m.parquet", progress=False)
    with pytest.raises(DataError, match="setting pool differs"):
        merge_embeddings([parts[0], parts[2]], tmp_path / "m.parquet", progress=False)
    embed(source, tmp_path / "plain.parquet", weights=weights)
    with pytest.raises(DataError, match="not the output of a `usfmae embed --shard"):
        merge_embeddings([parts[0], tmp_path / "plain.parquet"], tmp_path / "m.parquet", progress=False)
    assert not (tmp_path / "m.parquet").exists()


@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_feature_writer_streams_chunks_into_one_file(tmp_path: Path, suffix: str) -> None:
    feats = np.random.default_rng(0).standard_normal((20_000, 3)).astype(np.float32)
    names = [f"f{i}" for i in range(len(feats))]
    with FeatureWriter(tmp_path / f"f{suffix}", {"pool": "cls"}) as writer:
        for start in range(0, len(feats), 7_000):
            writer.add(feats[start:start + 7_000], names[start:start + 7_000])
    if suffix == ".npy":
        np.testing.assert_array_equal(np.load(tmp_path / "f.npy"), feats)
        assert (tmp_path / "f.paths.txt").read_text() == "\n".join(names) + "\n"
    else:
        paths, read = _table(tmp_path / "f.parquet")
        assert paths == names and pq.ParquetFile(tmp_path / "f.parquet").metadata.num_row_groups == 2  # 14,000 then 6,000 rows
        np.testing.assert_array_equal(read, feats)
