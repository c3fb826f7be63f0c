"""Embedding: deterministic (N, D) features of a folder / manifest; bad files skipped and logged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from usfmae.models import checkpoint, registry


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return checkpoint.save_model(registry.create_model("mae_vit_micro_patch8_64"),
                                 tmp_path_factory.mktemp("w") / "micro.pt")


def test_embed_folder_is_deterministic_with_shape_n_by_d(phantom_dataset: Path, weights: Path, tmp_path: Path) -> None:
    from usfmae.downstream.embed import embed

    first = embed(phantom_dataset / "images", tmp_path / "a.npy", weights=weights, batch_size=7)
    second = embed(phantom_dataset / "images", tmp_path / "b.npy", weights=weights, batch_size=7)
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert a.shape == (32, 128) and a.dtype == np.float32 and first == {**second, "out": first["out"]}
    np.testing.assert_array_equal(a, b)
    paths = (tmp_path / "a.paths.txt").read_text().split()
    assert paths == sorted(str(p) for p in (phantom_dataset / "images").glob("*.png"))


def test_embed_manifest_to_parquet_matches_numpy(phantom_dataset: Path, weights: Path, tmp_path: Path) -> None:
    from usfmae.downstream.embed import embed

    embed(phantom_dataset / "images", tmp_path / "f.npy", weights=weights, pool="mean")
    summary = embed(phantom_dataset / "manifest.parquet", tmp_path / "f.parquet", weights=weights, pool="mean")
    table = pq.read_table(tmp_path / "f.parquet")
    assert summary["n"] == 32 and table.column_names == ["path", "feature"]
    meta = json.loads(table.schema.metadata[b"usfmae"])
    assert meta["pool"] == "mean" and meta["img_size"] == 64 and meta["in_chans"] == 1
    by_path = dict(zip(table.column("path").to_pylist(), np.stack(table.column("feature").to_numpy(zero_copy_only=False)),
                       strict=True))
    npy = np.load(tmp_path / "f.npy")
    for i, path in enumerate((tmp_path / "f.paths.txt").read_text().split()):
        np.testing.assert_allclose(by_path[path], npy[i], rtol=0, atol=1e-6)


def test_bad_files_are_skipped_and_logged(phantom_dataset: Path, weights: Path, tmp_path: Path) -> None:
    from usfmae.downstream.embed import embed

    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in sorted((phantom_dataset / "images").glob("*.png"))[:3]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (folder / "empty.jpg").write_bytes(b"")
    summary = embed(folder, tmp_path / "f.npy", weights=weights)
    assert (summary["n"], summary["rejected"]) == (3, 2)
    rejects = [json.loads(line) for line in (tmp_path / "f.npy.rejects.jsonl").read_text().splitlines()]
    assert sorted(Path(r["file"]).name for r in rejects) == ["broken.png", "empty.jpg"]
    assert np.load(tmp_path / "f.npy").shape == (3, 128)
    assert embed(folder, tmp_path / "f.npy", weights=weights)["rejected"] == 2  # a rerun rewrites, not appends
    assert len((tmp_path / "f.npy.rejects.jsonl").read_text().splitlines()) == 2


def test_a_file_name_that_is_not_utf8_is_rejected_not_a_crash(phantom_dataset: Path, weights: Path,
                                                              tmp_path: Path) -> None:
    import os

    import pyarrow.parquet as pq

    from usfmae.downstream.embed import embed

    folder = tmp_path / "imgs"
    folder.mkdir()
    image = sorted((phantom_dataset / "images").glob("*.png"))[0].read_bytes()
    (folder / "fine.png").write_bytes(image)
    with open(os.path.join(os.fsencode(folder), b"\xff\xfe_latin1.png"), "wb") as handle:
        handle.write(image)
    summary = embed(folder, tmp_path / "f.parquet", weights=weights)
    assert (summary["n"], summary["rejected"]) == (1, 1)
    assert pq.read_table(tmp_path / "f.parquet").column("path").to_pylist() == [str(folder / "fine.png")]
    reject = json.loads((tmp_path / "f.parquet.rejects.jsonl").read_text())
    assert reject["file"].endswith("\\xff\\xfe_latin1.png") and "not valid UTF-8" in reject["reason"]


def test_embed_cli(phantom_dataset: Path, weights: Path, tmp_path: Path, capsys) -> None:
    from usfmae.cli import main

    assert main(["embed", "--weights", str(weights), str(phantom_dataset / "images"),
                 "--out", str(tmp_path / "f.parquet")]) == 0
    assert "32 x 128" in capsys.readouterr().out
    assert main(["embed", "--weights", str(weights), str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.npy")]) == 2
    assert main(["embed", "--weights", str(weights), str(phantom_dataset / "images"), "--out", str(tmp_path / "x.csv")]) == 2


def test_embed_shards_equals_embed_of_the_same_frames(phantom_dataset: Path, weights: Path, tmp_path: Path) -> None:
    """The shard fast path (no decode) gives the features of the PNG path for the same pixels."""
    from usfmae.data.images import load_image
    from usfmae.downstream.embed import embed
    from usfmae.shards.store import ShardWriter

    pngs = sorted((phantom_dataset / "images").glob("*.png"))
    with ShardWriter(tmp_path / "shards", (64, 64, 1), shard_size=10) as writer:
        for p in pngs:
            writer.add(load_image(p, 64, 1), p.stem)
    embed(phantom_dataset / "images", tmp_path / "png.npy", weights=weights, batch_size=16)
    summary = embed(tmp_path / "shards", tmp_path / "shards.parquet", weights=weights, batch_size=16)
    table = pq.read_table(tmp_path / "shards.parquet")
    assert summary["n"] == 32 and table.column("path").to_pylist() == [p.stem for p in pngs]
    np.testing.assert_allclose(np.stack(table.column("feature").to_numpy(zero_copy_only=False)),
                               np.load(tmp_path / "png.npy"), rtol=0, atol=1e-5)
