"""What clean reads: safe ids, paths kept under the manifest, same stems, bad names, bombs, DICOM folders."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usfmae.clean.inputs import list_inputs
from usfmae.cli import main

sys.path.insert(0, str(Path(__file__).parent.parent / "curate"))
from test_readers import png_header_only  # noqa: E402


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (48, 64), dtype=np.uint8)


def run(args: list[str], capsys) -> tuple[int, dict | None, str]:
    code = main(["clean", *args, "--sheet", "0", "--no-progress", "--no-ocr"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else None, captured.err


def test_same_stem_gets_distinct_ids(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "img.png"), image(0))
    cv2.imwrite(str(src / "img.tif"), image(1))
    cv2.imwrite(str(src / "other.png"), image(2))
    items, rejects = list_inputs(src)
    assert [i for i, _ in items] == ["img_png", "img_tif", "other"] and rejects == []
    code, summary, _ = run([str(src), "--out", str(tmp_path / "out"), "--size", "32"], capsys)
    assert code == 0 and summary["cleaned"] == 3
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["img_png.png", "img_tif.png", "other.png"]


def test_manifest_ids_and_paths_cannot_leave_their_folders(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    (corpus / "frames").mkdir(parents=True)
    cv2.imwrite(str(corpus / "frames" / "a.png"), image(0))
    cv2.imwrite(str(tmp_path / "secret.png"), image(1))
    ids = ["a", "../../escape", "/abs", "b", "c", "a"]
    paths = ["frames/a.png", "frames/a.png", "frames/a.png", "../secret.png", str(tmp_path / "secret.png"),
             "frames/a.png"]
    pq.write_table(pa.table({"id": ids, "path": paths}), corpus / "manifest.parquet")
    items, rejects = list_inputs(corpus / "manifest.parquet")
    assert items == [("a", str(corpus / "frames" / "a.png"))]
    assert [(r["id"], r["reason"].split(" (")[0]) for r in rejects] == [
        ("../../escape", "id is not a plain relative name"), ("/abs", "id is not a plain relative name"),
        ("b", "path leaves the manifest's folder"), ("c", "path leaves the manifest's folder"),
        ("a", "id repeated in the manifest")]
    out = tmp_path / "deep" / "out"
    code, summary, _ = run([str(corpus / "manifest.parquet"), "--out", str(out), "--size", "32"], capsys)
    assert code == 0 and (summary["cleaned"], summary["rejected"]) == (1, 5)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.png"))
    assert written == ["corpus/frames/a.png", "deep/out/images/a.png", "deep/out/masks/a.png", "secret.png"]
    # --allow-outside takes the paths outside (ids must stay safe whatever the flag).
    items, rejects = list_inputs(corpus / "manifest.parquet", allow_outside=True)
    assert [i for i, _ in items] == ["a", "b", "c"] and len(rejects) == 3


def test_non_utf8_name_and_bomb_are_rejected_not_crashed(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "good.png"), image(0))
    Path(os.fsdecode(os.fsencode(str(src)) + b"/bad_\xff.png")).write_bytes((src / "good.png").read_bytes())
    png_header_only(src / "bomb.png", 30000, 30000)
    code, summary, _ = run([str(src), "--out", str(tmp_path / "out"), "--size", "32"], capsys)
    assert code == 0 and (summary["cleaned"], summary["rejected"]) == (1, 2)
    rejects = {r["id"]: r["reason"] for r in map(json.loads, (tmp_path / "out" / "rejects.jsonl").read_text().splitlines())}
    assert rejects["bad_\\xff"] == "file name is not valid UTF-8 (rename the file)"
    assert "too large" in rejects["bomb"]
    code, summary, _ = run([str(src), "--out", str(tmp_path / "out"), "--size", "32"], capsys)  # resumes
    assert code == 0 and (summary["cleaned"], summary["rejected"]) == (0, 2)


def test_a_folder_of_dicoms_says_run_ingest(tmp_path, capsys):
    from pydicom.data import get_testdata_file

    src = tmp_path / "dicoms"
    src.mkdir()
    shutil.copy(get_testdata_file("OBXXXX1A.dcm"), src / "ob.dcm")
    code, _, err = run([str(src), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "no images, but 1 DICOM/video/volume file(s); run `usfmae ingest" in err


@pytest.mark.parametrize("value", ["0", "-5"])
def test_bad_max_pixels_is_a_config_error(tmp_path, capsys, value):
    code, _, err = run([str(tmp_path), "--out", str(tmp_path / "out"), "--max-pixels", value], capsys)
    assert code == 2 and "max-pixels must be >= 1" in err


def test_folder_ids_that_still_collide_get_a_path_hash(tmp_path, capsys):
    # x/y.png and x__y.png both give x__y (and so x__y_png): each would overwrite the other's outputs
    src = tmp_path / "in"
    (src / "x").mkdir(parents=True)
    for seed, name in enumerate(["x/y.png", "x__y.png", "c.png"]):
        cv2.imwrite(str(src / name), image(seed))
    items, rejects = list_inputs(src)
    ids = ["c", "x__y_png~bc111d35", "x__y_png~8b08476d"]
    assert [(i, Path(p).relative_to(src).as_posix()) for i, p in items] == list(
        zip(ids, ["c.png", "x/y.png", "x__y.png"], strict=True)) and rejects == []
    outs = {}
    for name, extra in [("single", []), ("p0", ["--shard", "0/2"]), ("p1", ["--shard", "1/2"])]:
        code, _, _ = run([str(src), "--out", str(tmp_path / name), "--size", "32", *extra], capsys)
        assert code == 0
    assert main(["merge", str(tmp_path / "p0"), str(tmp_path / "p1"), "--out", str(tmp_path / "merged"),
                 "--no-progress"]) == 0
    for name in ("single", "merged"):
        rows = pq.read_table(tmp_path / name / "manifest.parquet").drop_columns(["seconds"])
        outs[name] = rows, {p.name: p.read_bytes() for p in sorted((tmp_path / name / "images").iterdir())}
    assert outs["merged"][0].equals(outs["single"][0]) and outs["merged"][1] == outs["single"][1]
    assert sorted(outs["single"][1]) == sorted(i + ".png" for i in ids)  # three images, none overwritten
    assert len(set(outs["single"][1].values())) == 3
