"""Ingest: planted duplicates, bad files, resume, near-duplicate modes, exclusion, CLI."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from test_readers import write_cine_dicom, write_video, write_volume

from usfmae.cli import main
from usfmae.curate.hashing import pixel_hash
from usfmae.curate.ingest import MANIFEST_SCHEMA, IngestConfig, frame_stems, run_ingest
from usfmae.errors import ConfigError, DataError


def texture(seed: int, size: int = 48) -> np.ndarray:
    """A smooth random gray image (smooth, so small noise keeps its pHash)."""
    noise = np.random.default_rng(seed).uniform(0, 255, (size // 8, size // 8)).astype(np.float32)
    return cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


def make_root(root: Path) -> Path:
    """Three sources with planted duplicates and four bad files."""
    (root / "SrcA" / "sub").mkdir(parents=True)
    (root / "SrcB").mkdir()
    (root / "SrcC").mkdir()
    img = texture(0)
    cv2.imwrite(str(root / "SrcA" / "img1.png"), img)
    cv2.imwrite(str(root / "SrcA" / "sub" / "copy_of_img1.bmp"), img)  # exact duplicate, other format
    noisy = np.clip(img.astype(int) + np.random.default_rng(3).integers(-2, 3, img.shape), 0, 255)
    cv2.imwrite(str(root / "SrcA" / "z_noisy_img1.png"), noisy.astype(np.uint8))  # near duplicate
    cv2.imwrite(str(root / "SrcA" / "other.png"), texture(1))
    write_video(root / "SrcB" / "clip.mp4", textured=True)  # 9 sampled frames, all alike
    write_cine_dicom(root / "SrcC" / "cine.dcm")
    write_volume(root / "SrcC" / "vol.nii.gz")
    (root / "SrcC" / "empty.png").write_bytes(b"")
    (root / "SrcC" / "bad.dcm").write_bytes(b"\x00" * 300)
    (root / "SrcC" / "notes.txt").write_text("not an image")
    jpg = cv2.imencode(".jpg", texture(2))[1].tobytes()
    (root / "SrcC" / "trunc.jpg").write_bytes(jpg[: len(jpg) // 2])
    return root


@pytest.fixture()
def root(tmp_path) -> Path:
    return make_root(tmp_path / "root")


def ingest(root: Path, out: Path, **kwargs) -> tuple[dict, pd.DataFrame]:
    result = run_ingest(IngestConfig(root=str(root), out=str(out), workers=kwargs.pop("workers", 1), **kwargs),
                        progress=False)
    return result, pd.read_parquet(out / "manifest.parquet")


def status_of(manifest: pd.DataFrame, path: str) -> list[str]:
    return manifest.loc[manifest["source_path"] == path, "status"].tolist()


def test_end_to_end_statuses_and_frames(root, tmp_path):
    out = tmp_path / "corpus"
    result, m = ingest(root, out)
    assert list(m.columns) == MANIFEST_SCHEMA.names
    assert result["files"] == 11 and result["processed"] == 11
    assert status_of(m, "SrcA/img1.png") == ["ok"]
    dup = m[m["source_path"] == "SrcA/sub/copy_of_img1.bmp"].iloc[0]
    assert (dup["status"], dup["duplicate_of"]) == ("duplicate", "SrcA/img1_png_00000")
    assert status_of(m, "SrcA/z_noisy_img1.png") == ["ok"]  # different file = different group
    video = m[m["source_path"] == "SrcB/clip.mp4"]
    assert video["frame_index"].tolist() == list(range(0, 90, 10))
    assert video["status"].tolist() == ["ok"] + ["near_duplicate"] * 8
    assert set(video["duplicate_of"].iloc[1:]) == {"SrcB/clip_mp4_00000"}
    cine = m[m["source_path"] == "SrcC/cine.dcm"]
    assert cine["frame_index"].tolist() == [0, 10, 20] and cine["group_id"].str.startswith("study:").all()
    assert m.loc[m["source_path"] == "SrcC/vol.nii.gz", "frame_index"].tolist() == [0, 2, 4]
    rejected = m[m["status"] == "rejected"].set_index("source_path")["reason"].to_dict()
    assert sorted(rejected) == ["SrcC/bad.dcm", "SrcC/empty.png", "SrcC/notes.txt", "SrcC/trunc.jpg"]
    assert "unsupported file type .txt" in rejected["SrcC/notes.txt"]
    assert result["rejected"] == 4 and len((out / "rejects.jsonl").read_text().splitlines()) == 4
    ok = m[m["status"] == "ok"]
    assert ok["path"].notna().all() and m.loc[m["status"] == "rejected", "path"].isna().all()
    assert set(ok["source"]) == {"SrcA", "SrcB", "SrcC"}
    for row in ok.itertuples():  # every written PNG holds exactly the hashed pixels
        pixels = cv2.imread(str(out / row.path), cv2.IMREAD_UNCHANGED)
        pixels = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
        assert pixel_hash(pixels) == row.pixel_hash and pixels.shape[:2] == (row.height, row.width)
    assert len(m["id"].unique()) == len(m)


def test_rerun_is_a_noop_and_resumes_new_files(root, tmp_path):
    out = tmp_path / "corpus"
    _, first = ingest(root, out)
    stamp = (out / "manifest.parquet").stat().st_mtime_ns
    result, again = ingest(root, out)
    assert result["processed"] == 0
    assert (out / "manifest.parquet").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(first, again)
    assert len((out / "rejects.jsonl").read_text().splitlines()) == 4  # not logged twice
    cv2.imwrite(str(root / "SrcA" / "new.png"), texture(9))
    result, third = ingest(root, out)
    assert result["processed"] == 1 and status_of(third, "SrcA/new.png") == ["ok"]
    changed, _ = ingest(root, out, fps=6.0)  # a new sampling rate re-processes every file
    assert changed["processed"] == 12


def test_resume_after_a_torn_progress_line(root, tmp_path):
    out = tmp_path / "corpus"
    _, full = ingest(root, out)
    progress = out / ".ingest" / "progress.jsonl"
    lines = progress.read_bytes().splitlines(keepends=True)
    progress.write_bytes(b"".join(lines[:5]) + lines[5][:40])  # killed while writing record 6
    result, resumed = ingest(root, out)
    assert result["processed"] == 6
    pd.testing.assert_frame_equal(full, resumed)
    assert ingest(root, out)[0]["processed"] == 0  # the torn line no longer hides later records


def test_parallel_workers_give_the_same_manifest(root, tmp_path):
    _, serial = ingest(root, tmp_path / "a")
    _, parallel = ingest(root, tmp_path / "b", workers=2)
    pd.testing.assert_frame_equal(serial, parallel)


@pytest.mark.parametrize("mode, statuses, flagged", [
    ("drop", ["ok"] + ["near_duplicate"] * 8, 8),
    ("flag", ["ok"] * 9, 8),
    ("keep", ["ok"] * 9, 0),
])
def test_near_duplicate_modes_on_video(tmp_path, mode, statuses, flagged):
    (tmp_path / "root" / "S").mkdir(parents=True)
    write_video(tmp_path / "root" / "S" / "clip.mp4", textured=True)
    _, m = ingest(tmp_path / "root", tmp_path / "out", near_dup=mode)
    assert m["status"].tolist() == statuses
    assert int(m["duplicate_of"].notna().sum()) == flagged
    assert (m["phash_distance"] > 0).sum() <= flagged


def test_corpus_wide_near_duplicates(root, tmp_path):
    _, m = ingest(root, tmp_path / "out", near_dup_scope="corpus")
    row = m[m["source_path"] == "SrcA/z_noisy_img1.png"].iloc[0]
    assert row["status"] == "near_duplicate" and row["duplicate_of"] == "SrcA/img1_png_00000"
    assert 0 <= row["phash_distance"] <= 6


def test_exclude_marks_listed_frames(root, tmp_path):
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame({"eval_id": ["e1"], "pretrain_id": ["SrcA/other_png_00000"]}).to_csv(pairs, index=False)
    _, m = ingest(root, tmp_path / "out", exclude=str(pairs))
    assert status_of(m, "SrcA/other.png") == ["excluded"]
    with pytest.raises(DataError, match="pretrain_id"):
        pd.DataFrame({"x": [1]}).to_csv(pairs, index=False)
        ingest(root, tmp_path / "out2", exclude=str(pairs))


def test_masks_rejected_and_root_level_files(tmp_path):
    root = tmp_path / "myroot"
    (root / "S").mkdir(parents=True)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 8:20] = 255
    cv2.imwrite(str(root / "S" / "mask.png"), mask)
    cv2.imwrite(str(root / "top.png"), texture(5))
    _, m = ingest(root, tmp_path / "out")
    rows = m.set_index("source_path")
    assert rows.loc["S/mask.png", "status"] == "rejected"
    assert rows.loc["S/mask.png", "reason"] == "only 2 distinct levels (a segmentation mask?)"
    assert (rows.loc["top.png", "source"], rows.loc["top.png", "status"]) == ("myroot", "ok")
    _, kept = ingest(root, tmp_path / "out2", min_levels=1)
    assert kept.set_index("source_path").loc["S/mask.png", "status"] == "ok"


def test_bad_settings_and_folders(tmp_path):
    with pytest.raises(ConfigError, match="phash-threshold"):
        IngestConfig(phash_threshold=40)
    with pytest.raises(DataError, match="input folder not found"):
        ingest(tmp_path / "missing", tmp_path / "out")


def test_cli(root, tmp_path, capsys):
    out = tmp_path / "cli_out"
    assert main(["ingest", str(root), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    assert "rejected" in capsys.readouterr().out and (out / "manifest.parquet").exists()
    assert main(["ingest", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "input folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["ingest", str(root), "--out", str(out), "--near-dup", "maybe"])
    assert exc.value.code == 2
    shutil.rmtree(out)


def scanner_root(root: Path) -> Path:
    """Ultrasound DICOMs as scanners send them, a CT among them, a bomb and a non-UTF-8 name."""
    from pydicom.data import get_testdata_file
    from test_readers import deflated_copy, png_header_only

    src = root / "scanner"
    src.mkdir(parents=True)
    shutil.copy(get_testdata_file("OBXXXX1A_expb.dcm"), src / "a_big_endian_palette.dcm")
    deflated_copy("gdcm-US-ALOKA-16.dcm", src / "b_deflated.dcm")
    shutil.copy(get_testdata_file("CT_small.dcm"), src / "c_ct.dcm")
    png_header_only(src / "d_bomb.png", 30000, 30000)
    cv2.imwrite(str(src / "e_ok.png"), texture(5))
    (Path(os.fsdecode(os.fsencode(str(src)) + b"/f_\xff\xfe.png"))).write_bytes((src / "e_ok.png").read_bytes())
    cv2.imwrite(str(src / "g_constant.png"), np.full((32, 32), 7, np.uint8))
    return root


def test_scanner_dicoms_modality_bomb_and_bad_names(tmp_path):
    root = scanner_root(tmp_path / "root")
    out = tmp_path / "out"
    result, manifest = ingest(root, out)
    by_file = manifest.set_index("source_path")
    assert by_file.loc["scanner/a_big_endian_palette.dcm", ["status", "modality", "width"]].tolist() == ["ok", "US", 800]
    assert by_file.loc["scanner/b_deflated.dcm", ["status", "modality", "width"]].tolist() == ["ok", "US", 640]
    assert by_file.loc["scanner/c_ct.dcm", ["status", "modality", "reason"]].tolist() == [
        "rejected", "CT", "modality CT, not US (see --modality)"]
    assert "more than the limit of" in by_file.loc["scanner/d_bomb.png", "reason"]
    assert by_file.loc["scanner/f_\\xff\\xfe.png", "reason"] == "file name is not valid UTF-8 (rename the file)"
    assert by_file.loc["scanner/e_ok.png", "status"] == "ok" and by_file.loc["scanner/e_ok.png", "modality"] == ""
    # Every reject, file-level or frame-level, is in rejects.jsonl.
    rejects = pd.read_json(out / "rejects.jsonl", lines=True)
    assert sorted(Path(f).name for f in rejects["file"]) == ["c_ct.dcm", "d_bomb.png", "f_\\xff\\xfe.png", "g_constant.png"]
    assert rejects.set_index(rejects["file"].map(lambda f: Path(f).name)).loc["g_constant.png", "frame"] == 0
    assert result["ok"] == 3 and result["rejected"] == 4
    # A rerun resumes past the bad name (no crash) and changes nothing.
    again, manifest2 = ingest(root, out)
    assert again["processed"] == 0 and manifest2.equals(manifest)


def test_modality_any_takes_ct(tmp_path):
    root = scanner_root(tmp_path / "root")
    _, manifest = ingest(root, tmp_path / "out", modality="any")
    assert manifest.set_index("source_path").loc["scanner/c_ct.dcm", ["status", "modality"]].tolist() == ["ok", "CT"]
    with pytest.raises(ConfigError, match="modality"):
        IngestConfig(modality="U S;")


def test_output_folder_cannot_be_the_input(root, capsys):
    assert main(["ingest", str(root), "--out", str(root), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be the input folder" in err


def make_colliding_root(root: Path) -> Path:
    """``a.b.png`` and ``a_b.png`` share the plain id ``a_b_png_00000``; ``c.png`` shares nothing."""
    root.mkdir(parents=True)
    for seed, name in enumerate(["a.b.png", "a_b.png", "c.png"]):
        cv2.imwrite(str(root / name), texture(10 + seed))
    return root


COLLIDING_IDS = {"a.b.png": "a_b_png~151c8788_00000", "a_b.png": "a_b_png~d3cddaad_00000", "c.png": "c_png_00000"}


def test_files_sharing_a_plain_id_keep_their_own_frames(tmp_path):
    root = make_colliding_root(tmp_path / "root")
    cfg = IngestConfig(root=str(root), out=str(tmp_path / "out"), workers=1)
    result = run_ingest(cfg, progress=False)
    rows = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert dict(zip(rows["source_path"], rows["id"], strict=True)) == COLLIDING_IDS
    assert list(rows["status"]) == ["ok"] * 3 and result["ok"] == 3
    for rel, path in zip(rows["source_path"], rows["path"], strict=True):  # no frame overwrote another
        frame = cv2.imread(str(tmp_path / "out" / path), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(frame, cv2.imread(str(root / rel), cv2.IMREAD_UNCHANGED))
    assert sorted(p.name for p in (tmp_path / "out" / "frames").rglob("*.png")) == sorted(
        i + ".png" for i in COLLIDING_IDS.values())
    again = run_ingest(cfg, progress=False)
    assert again["processed"] == 0 and pd.read_parquet(tmp_path / "out" / "manifest.parquet").equals(rows)


def test_a_file_is_redone_when_another_comes_to_share_its_id(tmp_path):
    root = make_colliding_root(tmp_path / "root")
    os.rename(root / "a_b.png", tmp_path / "later.png")
    cfg = IngestConfig(root=str(root), out=str(tmp_path / "out"), workers=1)
    run_ingest(cfg, progress=False)
    first = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert list(first["id"]) == ["a_b_png_00000", "c_png_00000"]  # alone: the plain id, as before
    os.rename(tmp_path / "later.png", root / "a_b.png")
    result = run_ingest(cfg, progress=False)
    assert result["processed"] == 2  # a.b.png again under its new id, and the new file
    rows = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert dict(zip(rows["source_path"], rows["id"], strict=True)) == COLLIDING_IDS


def test_frame_stems_name_only_the_files_that_share_one():
    # a.png and a suffix-less a_png: one plain stem; b.png shares nothing and keeps its plain stem
    assert frame_stems(["S/a.png", "S/a_png", "S/b.png"]) == {"S/a.png": "S/a_png~3b87c615",
                                                              "S/a_png": "S/a_png~df3a4f74"}
