"""Annotation removal: each mask component on synthetic marks, the phantom metrics, resize, the CLI."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from usfmae.clean import paper as clean_paper
from usfmae.clean import scan_aware as clean_usfmae
from usfmae.clean.ocr import word_boxes
from usfmae.clean.run import (
    CleanConfig,
    clean_to_size,
    quality_metrics,
    read_image,
    remove_annotations,
    resize_output,
)
from usfmae.cli import main
from usfmae.phantom.generate import PhantomConfig, generate_sample


def speckle_fan(size: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A rectangular 'fan' of smoothed Rayleigh speckle on a black screen: ((H, W) uint8, fan bool)."""
    rng = np.random.default_rng(seed)
    fan = np.zeros((size, size), bool)
    fan[30:size - 20, 40:size - 40] = True
    tissue = cv2.GaussianBlur(rng.rayleigh(45.0, (size, size)).astype(np.float32), (3, 3), 0)
    gray = np.where(fan, np.clip(tissue + 40, 0, 200), 0).astype(np.uint8)
    return gray, fan


def rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2).copy()


def test_ocr_reads_put_text():
    image = np.full((60, 320), 255, np.uint8)
    cv2.putText(image, "GAIN 45 dB", (10, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 0, 2)
    words = word_boxes(image)
    assert [w.text for w in words] == ["GAIN", "45", "dB"]
    assert all(5 <= w.x <= 300 and 10 <= w.y <= 45 for w in words)


def test_paper_text_mask_covers_drawn_text():
    gray, _ = speckle_fan()
    cv2.putText(gray, "RT KIDNEY", (60, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255, 2)
    drawn = np.zeros_like(gray)
    cv2.putText(drawn, "RT KIDNEY", (60, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255, 2)
    mask = clean_paper.text_mask(gray) > 0
    assert mask[drawn > 0].mean() > 0.9


def _with_box() -> tuple[np.ndarray, np.ndarray]:
    gray, _ = speckle_fan()
    image = rgb(gray)
    cv2.rectangle(image, (100, 100), (200, 180), (40, 230, 40), 2)
    box = np.zeros(gray.shape, np.uint8)
    cv2.rectangle(box, (100, 100), (200, 180), 1, 2)
    return image, box > 0


def test_thin_colour_box_is_found_by_ours():
    image, box = _with_box()
    mask = remove_annotations(image, "usfmae", ocr=False).mask
    assert mask[box].mean() > 0.95


def test_paper_colour_mask_finds_box():
    image, box = _with_box()
    # The colour component finds it; the paper's final 5x5 opening then erases 2 px lines again.
    assert (clean_paper.colour_mask(cv2.cvtColor(image, cv2.COLOR_RGB2BGR)) > 0)[box].mean() > 0.95


def test_colour_doppler_blob_is_kept_by_ours():
    gray, fan = speckle_fan()
    image = rgb(gray)
    cv2.ellipse(image, (150, 150), (45, 25), 0, 0, 360, (230, 90, 20), -1)  # a flow map, not a mark
    blob = np.zeros(gray.shape, np.uint8)
    cv2.ellipse(blob, (150, 150), (45, 25), 0, 0, 360, 1, -1)
    result = remove_annotations(image, "usfmae", ocr=False)
    assert result.mask[blob > 0].mean() == 0.0
    np.testing.assert_array_equal(result.image[blob > 0], image[blob > 0])
    # ...while the paper's colour mask erases it
    assert clean_paper.colour_mask(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[blob > 0].mean() > 200


def _with_cross() -> tuple[np.ndarray, np.ndarray]:
    gray, _ = speckle_fan()
    cross = np.zeros_like(gray)
    for canvas in (gray, cross):
        cv2.line(canvas, (142, 150), (158, 150), 250, 1)
        cv2.line(canvas, (150, 142), (150, 158), 250, 1)
    return gray, cross > 0


def test_caliper_cross_is_found_by_ours():
    gray, cross = _with_cross()
    mask = remove_annotations(rgb(gray), "usfmae", ocr=False).mask
    assert mask[cross].mean() > 0.9
    assert mask.sum() < 3 * cross.sum()


def test_paper_contour_mask_finds_cross_on_smooth_tissue():
    # On speckle the Canny edges of the tissue join the cross into one huge contour (> 2000 px), so
    # the paper's rule only finds marks on smooth regions.
    _, cross = _with_cross()
    gray = np.full(cross.shape, 100, np.uint8)
    gray[cross] = 250
    assert (clean_paper.gray_mark_mask(gray) > 0)[cross].mean() > 0.9


def test_smooth_dark_lesion_survives_ours():
    gray, fan = speckle_fan()
    lesion = np.zeros_like(gray)
    cv2.ellipse(lesion, (150, 140), (14, 9), 0, 0, 360, 1, -1)  # small: within the paper's 30-2000 px rule
    gray[lesion > 0] = (gray[lesion > 0] * 0.15).astype(np.uint8)
    gray[lesion > 0] = cv2.GaussianBlur(gray, (5, 5), 0)[lesion > 0]
    result = remove_annotations(rgb(gray), "usfmae", ocr=False)
    assert not result.mask[cv2.dilate(lesion, np.ones((7, 7), np.uint8)) > 0].any()
    assert result.mask[fan].mean() == 0.0


def test_fan_detection_blanks_screen_text():
    gray, fan = speckle_fan()
    cv2.putText(gray, "12 cm", (200, 296), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 230, 1)
    result = remove_annotations(rgb(gray), "usfmae")
    assert result.scan_status == "found"
    # The region may overrun the scan's edge by a few pixels (density window), never more.
    margin = cv2.dilate(fan.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    assert result.fan[fan].mean() == 1.0 and not result.fan[~margin].any()
    assert result.image[~fan].max() <= clean_usfmae.BG_DELTA


@pytest.fixture(scope="module")
def phantom_scores():
    cfg = PhantomConfig(size=224)
    scores = {"paper": [], "usfmae": []}
    for index in range(4):
        sample = generate_sample(0, index, cfg)
        for method in scores:
            r = remove_annotations(sample.image, method)
            scores[method].append(quality_metrics(r.mask, sample.overlay_mask, sample.fan_mask, r.image, sample.clean))
    return {m: {k: float(np.mean([s[k] for s in v])) for k in v[0]} for m, v in scores.items()}


def test_phantom_metrics_usfmae_beats_paper(phantom_scores):
    paper, ours = phantom_scores["paper"], phantom_scores["usfmae"]
    assert ours["iou"] > paper["iou"] + 0.2
    assert ours["psnr"] > paper["psnr"] + 3.0
    assert ours["tissue_fp"] < 0.01
    assert ours["recall"] > 0.85


def test_quality_metrics_exact():
    overlay = np.zeros((4, 4), bool)
    overlay[0, :2] = True
    fan = np.ones((4, 4), bool)
    mask = np.zeros((4, 4), bool)
    mask[0, 1:3] = True
    clean = np.zeros((4, 4), np.uint8)
    m = quality_metrics(mask, overlay, fan, clean.copy(), clean)
    assert m == {"recall": 0.5, "tissue_fp": 1 / 14, "iou": 1 / 3, "psnr": 99.0}


def test_resize_pad_keeps_aspect():
    image = np.full((100, 200, 3), 200, np.uint8)
    out = resize_output(image, 224, "pad")
    assert out.shape == (224, 224, 3)
    rows = np.nonzero(out[:, :, 0].any(axis=1))[0]
    assert (rows[0], rows[-1]) == (56, 167) and out[:, :, 0].all(axis=0).sum() == 0
    assert resize_output(image, 224, "stretch")[..., 0].min() == 200


def test_clean_to_size_shapes():
    gray, _ = speckle_fan(200)
    image, mask, native = clean_to_size(rgb(gray)[:, :150], CleanConfig(size=64, ocr=False))
    assert image.shape == (64, 64, 3) and mask.shape == (64, 64) and native.mask.shape == (200, 150)


def test_cli_folder_with_corrupt_file(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for index in range(3):
        sample = generate_sample(1, index, PhantomConfig(size=96))
        cv2.imwrite(str(src / f"img{index}.png"), cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
    (src / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    assert main(["clean", str(src), "--out", str(out), "--size", "64", "--sheet", "2", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["cleaned"], summary["rejected"], summary["skipped"]) == (3, 1, 0)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rejects] == ["broken"]
    table = pq.read_table(out / "manifest.parquet").to_pandas()
    assert sorted(table["id"]) == ["img0", "img1", "img2"]
    assert read_image(out / "images" / "img0.png").shape == (64, 64, 3)
    assert cv2.imread(str(out / "contact_sheet.png")).shape[1] == 3 * 64 + 2 * 4
    assert main(["clean", str(src), "--out", str(out), "--size", "64", "--no-progress"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["cleaned"], again["skipped"]) == (0, 4)


def test_manifest_input_uses_ok_rows(tmp_path):
    import pyarrow as pa

    from usfmae.clean.inputs import list_inputs

    (tmp_path / "frames").mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "path": ["frames/a.png", "frames/b.png"], "status": ["ok", "corrupt"]}),
                   tmp_path / "manifest.parquet")
    assert list_inputs(tmp_path / "manifest.parquet") == ([("a", str(tmp_path / "frames" / "a.png"))], [])


def test_cli_missing_input_is_one_line_error(tmp_path, capsys):
    assert main(["clean", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def _three_images(src):
    src.mkdir()
    for index in range(3):
        sample = generate_sample(2, index, PhantomConfig(size=64))
        cv2.imwrite(str(src / f"img{index}.png"), cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))


def _clean(src, out):
    return main(["clean", str(src), "--out", str(out), "--size", "32", "--sheet", "0", "--no-progress", "--no-ocr"])


def test_torn_progress_line_redoes_only_the_torn_item(tmp_path, capsys):
    _three_images(tmp_path / "in")
    out = tmp_path / "out"
    assert _clean(tmp_path / "in", out) == 0
    lines = (out / "done.jsonl").read_bytes().splitlines(keepends=True)
    # killed while writing the second record; the third image was never cleaned
    (out / "done.jsonl").write_bytes(lines[0] + lines[1][:25])
    (out / "images" / "img2.png").unlink()
    capsys.readouterr()
    assert _clean(tmp_path / "in", out) == 0
    assert json.loads(capsys.readouterr().out)["cleaned"] == 2  # img1 (torn) and img2, not img0
    assert _clean(tmp_path / "in", out) == 0
    assert json.loads(capsys.readouterr().out)["cleaned"] == 0  # every record after the torn line kept


def test_disk_full_is_one_line_and_keeps_earlier_outputs(tmp_path, capsys, monkeypatch):
    import errno

    from usfmae.clean import run as clean_run

    _three_images(tmp_path / "in")
    out = tmp_path / "out"
    real_write = clean_run.write_png

    def fill_up(path, image):
        if "img1" in path.name:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, image)

    monkeypatch.setattr(clean_run, "write_png", fill_up)
    assert _clean(tmp_path / "in", out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "img1.png: disk full" in err and "Traceback" not in err
    assert read_image(out / "images" / "img0.png").shape == (32, 32, 3)  # finished before: intact
    assert not list((out / "images").glob(".*"))  # no temporary file left behind
    monkeypatch.setattr(clean_run, "write_png", real_write)
    assert _clean(tmp_path / "in", out) == 0
    assert json.loads(capsys.readouterr().out)["cleaned"] == 2
