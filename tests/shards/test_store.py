"""Packed shards: exact round trip, multi-shard reads, resume of an interrupted pack, bad inputs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usfmae.cli import main
from usfmae.errors import DataError
from usfmae.shards.pack import PackConfig, list_corpus, load_frame, pack_corpus
from usfmae.shards.store import ShardReader, ShardWriter, shard_name


def _frames(n: int, shape=(8, 6, 1), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _write(root: Path, frames: np.ndarray, shard_size: int) -> None:
    with ShardWriter(root, frames.shape[1:], shard_size) as writer:
        for i, frame in enumerate(frames):
            writer.add(frame, f"f{i:03d}", source="src" if i % 2 else "", label=None if i % 3 else "benign")


def test_round_trip_over_several_shards_with_partial_last(tmp_path):
    frames = _frames(11)
    _write(tmp_path, frames, shard_size=4)
    assert sorted(p.name for p in tmp_path.glob("*.npy")) == [shard_name(0), shard_name(1), shard_name(2)]
    assert np.load(tmp_path / shard_name(2)).shape == (3, 8, 6, 1)  # last shard trimmed to its length
    reader = ShardReader(tmp_path)
    assert len(reader) == 11 and reader.num_shards == 3 and reader.frame_shape == (8, 6, 1)
    assert reader.ids == [f"f{i:03d}" for i in range(11)]
    assert reader.labels[:4] == ["benign", None, None, "benign"] and reader.sources[:2] == ["", "src"]
    for i in range(11):
        np.testing.assert_array_equal(reader[i], frames[i])
    np.testing.assert_array_equal(reader[-1], frames[10])
    idx = np.array([0, 3, 4, 5, 9, 10])  # spans all three shards
    np.testing.assert_array_equal(reader.read_batch(idx), frames[idx])
    shuffled = np.array([10, 0, 7, 3, 3])
    np.testing.assert_array_equal(reader.read_batch(shuffled), frames[shuffled])
    out = np.empty((len(idx), 8, 6, 1), np.uint8)
    assert reader.read_batch(idx, out=out) is out
    index = pq.read_table(tmp_path / "index.parquet").to_pydict()
    assert index["shard"] == [0] * 4 + [1] * 4 + [2] * 3 and index["offset"] == [0, 1, 2, 3] * 2 + [0, 1, 2]
    with pytest.raises(IndexError):
        reader[11]
    with pytest.raises(IndexError):
        reader.read_batch([2, 11])


def test_reader_pickles_by_path(tmp_path):
    import pickle

    frames = _frames(5)
    _write(tmp_path, frames, shard_size=2)
    clone = pickle.loads(pickle.dumps(ShardReader(tmp_path)))
    assert len(pickle.dumps(ShardReader(tmp_path))) < 1000  # the pixels are not copied
    np.testing.assert_array_equal(clone.read_batch([1, 4]), frames[[1, 4]])


def test_interrupted_writer_resumes_keeping_complete_shards(tmp_path):
    frames = _frames(10)
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, frames.shape[1:], 4) as writer:
            for i in range(6):  # one complete shard + 2 frames of the second
                writer.add(frames[i], f"f{i:03d}")
            raise RuntimeError("killed")
    assert ShardReader(tmp_path).ids == [f"f{i:03d}" for i in range(4)]
    assert not list(tmp_path.glob(".shard_*"))
    first_shard = (tmp_path / shard_name(0)).stat().st_mtime_ns
    with ShardWriter(tmp_path, frames.shape[1:], 4) as writer:
        assert writer.done_ids == {f"f{i:03d}" for i in range(4)}
        for i in range(4, 10):
            writer.add(frames[i], f"f{i:03d}")
    assert (tmp_path / shard_name(0)).stat().st_mtime_ns == first_shard  # complete shard untouched
    reader = ShardReader(tmp_path)
    np.testing.assert_array_equal(reader.read_batch(np.arange(10)), frames)


def test_resume_rewrites_partial_last_shard_and_checks_shape(tmp_path):
    frames = _frames(7)
    _write(tmp_path, frames[:5], shard_size=4)  # shard 1 holds one frame
    with ShardWriter(tmp_path, frames.shape[1:], 4) as writer:
        assert writer.done_ids == {f"f{i:03d}" for i in range(4)}
        assert len(ShardReader(tmp_path)) == 4  # the index never lists the dropped partial shard
        for i in range(4, 7):
            writer.add(frames[i], f"f{i:03d}")
    np.testing.assert_array_equal(ShardReader(tmp_path).read_batch(np.arange(7)), frames)
    with pytest.raises(DataError, match="already packed with frames"):
        ShardWriter(tmp_path, (8, 6, 3), 4)
    with pytest.raises(DataError, match="shard size"):
        ShardWriter(tmp_path, frames.shape[1:], 8)


def test_writer_rejects_wrong_frames_and_reader_wrong_folder(tmp_path):
    with ShardWriter(tmp_path / "s", (4, 4, 1), 2) as writer:
        with pytest.raises(DataError, match="expected uint8"):
            writer.add(np.zeros((4, 4, 3), np.uint8), "x")
        writer.add(np.zeros((4, 4), np.uint8), "gray2d")  # (H, W) is accepted for one channel
    assert len(ShardReader(tmp_path / "s")) == 1
    with pytest.raises(DataError, match="not a shard folder"):
        ShardReader(tmp_path)


@pytest.mark.parametrize("channels", [1, 3])
def test_load_frame_keeps_aspect_with_padding(tmp_path, channels):
    img = np.full((20, 40, 3), (10, 20, 200), np.uint8)  # BGR, wide
    cv2.imwrite(str(tmp_path / "wide.png"), img)
    frame = load_frame(tmp_path / "wide.png", 16, channels)
    assert frame.shape == (16, 16, channels) and frame.dtype == np.uint8
    assert not frame[:4].any() and not frame[12:].any()  # 8 rows of content, centred
    expected = [int(round(0.299 * 200 + 0.587 * 20 + 0.114 * 10))] if channels == 1 else [200, 20, 10]
    np.testing.assert_allclose(frame[8, 8], expected, atol=1)  # RGB order for 3 channels
    deep = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 256)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    # 16-bit by bit depth (usfmae.imaging): 8-bit data stored as v << 8 comes back exactly (was 254)
    assert load_frame(tmp_path / "deep.png", 16, 1)[15, 15, 0] == 255


def _corpus(root: Path, n: int) -> np.ndarray:
    frames = _frames(n, (12, 12, 1), seed=3)
    for i in range(n):
        sub = root / ("a" if i < n // 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sub / f"img{i:02d}.png"), frames[i])
    return frames


def test_pack_folder_skips_corrupt_file_and_resumes(tmp_path):
    frames = _corpus(tmp_path / "corpus", 6)
    (tmp_path / "corpus" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    cfg = PackConfig(size=12, channels=1, shard_size=4, workers=2)
    stats = pack_corpus(tmp_path / "corpus", tmp_path / "shards", cfg, progress=False)
    assert stats == {"frames": 6, "added": 6, "rejected": 1, "skipped": 0}
    reader = ShardReader(tmp_path / "shards")
    assert reader.ids == ["a/broken", "a/img00", "a/img01", "a/img02", "b/img03", "b/img04", "b/img05"][1:]
    assert reader.sources == ["a"] * 3 + ["b"] * 3
    np.testing.assert_array_equal(reader.read_batch(np.arange(6)), frames)  # same size: no resampling
    rejects = (tmp_path / "shards" / "rejects.jsonl").read_text().splitlines()
    assert len(rejects) == 1 and "broken.png" in rejects[0]
    # a re-run is a no-op (the rejected file is not retried); a grown corpus only adds the new frame
    assert pack_corpus(tmp_path / "corpus", tmp_path / "shards", cfg, progress=False)["added"] == 0
    cv2.imwrite(str(tmp_path / "corpus" / "b" / "img99.png"), frames[0])
    stats = pack_corpus(tmp_path / "corpus", tmp_path / "shards", cfg, progress=False)
    assert stats == {"frames": 7, "added": 3, "rejected": 0, "skipped": 5}  # re-packs the partial shard
    assert ShardReader(tmp_path / "shards").ids[-1] == "b/img99"
    with pytest.raises(DataError, match="already packed with frames"):  # even when nothing is left to do
        pack_corpus(tmp_path / "corpus", tmp_path / "shards", PackConfig(size=16, shard_size=4), progress=False)


def test_pack_manifest_keeps_ok_rows_and_labels(tmp_path):
    frames = _corpus(tmp_path, 4)
    pq.write_table(pa.table({
        "id": ["x0", "x1", "x2", "x3"], "path": ["a/img00.png", "a/img01.png", "b/img02.png", "b/img03.png"],
        "status": ["ok", "duplicate", "ok", "ok"], "label": ["benign", "benign", "malignant", None],
    }), tmp_path / "manifest.parquet")
    assert [i.id for i in list_corpus(tmp_path / "manifest.parquet")] == ["x0", "x2", "x3"]
    assert main(["pack", str(tmp_path / "manifest.parquet"), "--out", str(tmp_path / "s"), "--size", "12",
                 "--shard-size", "2", "--no-progress"]) == 0
    reader = ShardReader(tmp_path / "s")
    assert reader.ids == ["x0", "x2", "x3"] and reader.labels == ["benign", "malignant", None]
    np.testing.assert_array_equal(reader.read_batch([0, 1, 2]), frames[[0, 2, 3]])


@pytest.mark.parametrize("argv, message", [
    (["pack", "missing_dir", "--out", "o"], "expected an image folder or a .parquet manifest"),
    (["pack", ".", "--out", "o", "--shard-size", "0"], "--shard-size must be positive"),
    (["pack", ".", "--out", "o", "--channels", "2"], "invalid choice"),
])
def test_pack_cli_errors_are_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse rejects bad option values itself
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def _resident_kb(path: Path) -> int:
    """Resident kB of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        first = line.split(maxsplit=1)[0]
        if not first.endswith(":"):  # a mapping's header line: "start-end perms offset dev inode path"
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_drop_pages_before_gives_back_the_pages_of_shards_already_read(tmp_path):
    frames = _frames(192, (64, 64, 1))
    _write(tmp_path / "s", frames, shard_size=64)
    reader = ShardReader(tmp_path / "s")
    np.testing.assert_array_equal(reader.read_batch(np.arange(192)), frames)
    files = [(tmp_path / "s" / shard_name(k)).resolve() for k in range(3)]
    assert all(_resident_kb(f) >= 256 for f in files)  # 64 frames of 4 kB each, all read
    reader.drop_pages_before(128)  # frame 128 opens shard 2: shards 0 and 1 are behind
    assert [_resident_kb(f) == 0 for f in files] == [True, True, False]
    np.testing.assert_array_equal(reader.read_batch(np.arange(192)), frames)  # the data come back on demand
