"""ingest --shard I/N + usfmae merge: the merged shards equal a single run; incomplete merges refused."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import cv2
import pyarrow.parquet as pq
import pytest
from test_ingest import COLLIDING_IDS, make_colliding_root, make_root, texture

from usfmae.cli import main
from usfmae.curate.ingest import IngestConfig, run_ingest
from usfmae.curate.merge import merge_ingest
from usfmae.curate.shard import in_shard, parse_shard, shard_of
from usfmae.downstream import merge as merge_command
from usfmae.errors import ConfigError, DataError
from usfmae.fileio import LOCK_NAME

# an exact copy of SrcA/img1.png that lands in the other shard of two (checked below)
CROSS_COPY = "SrcB/img1_again.png"


@pytest.fixture()
def root(tmp_path) -> Path:
    root = make_root(tmp_path / "root")
    cv2.imwrite(str(root / CROSS_COPY), texture(0))
    return root


def _ingest(root: Path, out: Path, shard: str | None = None) -> None:
    run_ingest(IngestConfig(root=str(root), out=str(out), workers=1, shard=shard), progress=False)


def _frames(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted((folder / "frames").rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("count", [2, 3])
def test_merged_shards_equal_a_single_run(root, tmp_path, count):
    assert shard_of("SrcA/img1.png", 2) != shard_of(CROSS_COPY, 2)  # the duplicate spans shards
    assert shard_of("SrcA/img1.png", 2) != shard_of("SrcA/z_noisy_img1.png", 2)  # so does the near one
    _ingest(root, tmp_path / "single")
    parts = [tmp_path / f"part{i}" for i in range(count)]
    for i, part in enumerate(parts):
        _ingest(root, part, f"{i}/{count}")
    result = merge_ingest(parts[::-1], tmp_path / "merged", progress=False)  # any order
    single = pq.read_table(tmp_path / "single" / "manifest.parquet")
    merged = pq.read_table(tmp_path / "merged" / "manifest.parquet")
    assert merged.equals(single)
    rows = single.to_pylist()
    copy = next(r for r in rows if r["source_path"] == CROSS_COPY)
    assert copy["status"] == "duplicate" and copy["duplicate_of"] == "SrcA/img1_png_00000"
    assert _frames(tmp_path / "merged") == _frames(tmp_path / "single")
    assert result["shards"] == count and result["files"] == 12 and result["ok"] == sum(r["status"] == "ok" for r in rows)
    # the merged folder is a finished ingest output: running ingest on it has nothing to do
    again = run_ingest(IngestConfig(root=str(root), out=str(tmp_path / "merged"), workers=1), progress=False)
    assert again["processed"] == 0 and pq.read_table(tmp_path / "merged" / "manifest.parquet").equals(single)


def test_shards_partition_the_files(root):
    files = [p.relative_to(root).as_posix() for p in sorted(root.rglob("*")) if p.is_file()]
    owners = [[i for i in range(3) if in_shard(f, (i, 3))] for f in files]
    assert all(len(o) == 1 for o in owners) and {o[0] for o in owners} == {0, 1, 2}


def test_incomplete_or_mismatched_merges_are_refused(root, tmp_path):
    parts = [tmp_path / f"part{i}" for i in range(2)]
    for i, part in enumerate(parts):
        _ingest(root, part, f"{i}/2")
    with pytest.raises(DataError, match="shard\\(s\\) 1/2 missing"):
        merge_ingest(parts[:1], tmp_path / "m1")
    with pytest.raises(DataError, match="given twice"):
        merge_ingest([parts[0], parts[0], parts[1]], tmp_path / "m2")
    # a file added to the input after the shards ran belongs to a shard that has not done it
    cv2.imwrite(str(root / "SrcA" / "late.png"), texture(7))
    with pytest.raises(DataError, match=rf"1 file\(s\) of .* not done by their shard, e.g. SrcA/late.png "
                                        rf"\(shard {shard_of('SrcA/late.png', 2)}/2\)"):
        merge_ingest(parts, tmp_path / "m3")
    (root / "SrcA" / "late.png").unlink()
    shutil.copytree(parts[1], tmp_path / "other")
    config = tmp_path / "other" / "ingest_config.yaml"
    config.write_text(config.read_text().replace("fps: 3.0", "fps: 1.0"))
    with pytest.raises(DataError, match="setting fps differs"):
        merge_ingest([parts[0], tmp_path / "other"], tmp_path / "m4")
    (parts[1] / "manifest.parquet").unlink()  # killed before it finished
    with pytest.raises(DataError, match="has not finished"):
        merge_ingest(parts, tmp_path / "m5")
    with pytest.raises(DataError, match="was not ingested with --shard"):
        _ingest(root, tmp_path / "plain")
        merge_ingest([tmp_path / "plain"], tmp_path / "m6")


@pytest.mark.parametrize("text", ["1", "2/2", "-1/2", "a/b", "1/0"])
def test_bad_shard_is_a_config_error(text):
    with pytest.raises(ConfigError, match="shard"):
        parse_shard(text)


def test_cli_shards_and_merge(root, tmp_path, capsys):
    for i in range(2):
        assert main(["ingest", str(root), "--out", str(tmp_path / f"p{i}"), "--shard", f"{i}/2", "--workers", "1",
                     "--no-progress"]) == 0
    assert main(["merge", str(tmp_path / "p0"), str(tmp_path / "p1"), "--out", str(tmp_path / "m"),
                 "--no-progress"]) == 0
    assert "2 shards, 12 files" in capsys.readouterr().out
    assert main(["merge", str(tmp_path / "p0"), "--out", str(tmp_path / "m2")]) == 2
    assert "shard(s) 1/2 missing" in capsys.readouterr().err


def test_merge_into_a_held_folder_stops_in_one_line(root, tmp_path, capsys):
    parts = [tmp_path / f"p{i}" for i in range(2)]
    for i, part in enumerate(parts):
        _ingest(root, part, f"{i}/2")
    out = tmp_path / "m"
    out.mkdir()
    # another run's lock: flock on a description of our own, so lock_output_dir's open conflicts with it
    held = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    os.write(held, b"pid 4242 on node7: usfmae merge\n")
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        assert main(["merge", *map(str, parts), "--out", str(out), "--no-progress"]) == 2
    finally:
        os.close(held)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{out}: in use by another usfmae run (pid 4242 on node7: usfmae merge)" in err
    assert [p.name for p in out.iterdir()] == [LOCK_NAME]  # nothing written beside the holder's files
    assert main(["merge", *map(str, parts), "--out", str(out), "--no-progress"]) == 0  # released: it runs


def test_merge_dispatches_on_the_first_folders_kind(tmp_path, capsys, monkeypatch):
    assert main(["merge", str(tmp_path / "nothing"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err == (f"usfmae merge: error: {tmp_path / 'nothing'}: not the output of a --shard run "
                   f"(expected an ingest output (ingest_config.yaml) or a clean output (clean_config.yaml) "
                   f"or a pack output (shards.json) or an embed .parquet file)\n")
    calls = []
    monkeypatch.setattr(merge_command, "KINDS", (merge_command.Kind(
        "a clean output", lambda path: (path / "clean_config.yaml").is_file(),
        lambda folders, out, progress: calls.append((folders, out)) or {"n": 2}, lambda result: f"merged {result['n']}"),)
        + merge_command.KINDS)
    (tmp_path / "c0").mkdir()
    (tmp_path / "c0" / "clean_config.yaml").write_text("{}")
    assert main(["merge", str(tmp_path / "c0"), "c1", "--out", "o", "--no-progress"]) == 0
    assert calls == [([str(tmp_path / "c0"), "c1"], "o")] and capsys.readouterr().out == "merged 2\n"


def test_shards_give_colliding_files_the_ids_of_a_single_run(tmp_path):
    root = make_colliding_root(tmp_path / "root")
    assert len({shard_of(rel, 2) for rel in COLLIDING_IDS}) == 2  # the claimants are split between shards
    _ingest(root, tmp_path / "single")
    for i in range(2):
        _ingest(root, tmp_path / f"part{i}", f"{i}/2")
    assert main(["merge", str(tmp_path / "part0"), str(tmp_path / "part1"), "--out", str(tmp_path / "merged")]) == 0
    single = pq.read_table(tmp_path / "single" / "manifest.parquet")
    assert pq.read_table(tmp_path / "merged" / "manifest.parquet").equals(single)
    assert dict(zip(single["source_path"].to_pylist(), single["id"].to_pylist(), strict=True)) == COLLIDING_IDS
    assert _frames(tmp_path / "merged") == _frames(tmp_path / "single")
    assert run_ingest(IngestConfig(root=str(root), out=str(tmp_path / "merged"), workers=1),
                      progress=False)["processed"] == 0
