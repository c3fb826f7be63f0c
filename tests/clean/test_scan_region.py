"""Scan-region detection on synthetic screens: banners, bars, side-by-side views, dark and tiny frames."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from usfmae.clean.ocr import readable_words
from usfmae.clean.run import remove_annotations
from usfmae.clean.scan_region import _widths_in_frame, detect_scan
from usfmae.cli import main


def speckle(shape: tuple[int, int], seed: int = 0, level: float = 45.0, offset: float = 40.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tissue = cv2.GaussianBlur(rng.rayleigh(level, shape).astype(np.float32), (3, 3), 0)
    return np.clip(tissue + offset, 0, 255).astype(np.uint8)


def sector_mask(h: int, w: int, apex: tuple[int, int], radius: int, half_angle: float = 35) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, apex, (radius, radius), 90, -half_angle, half_angle, 1, -1)
    return mask > 0


def philips_like_screen() -> tuple[np.ndarray, np.ndarray]:
    """600x800 RGB: a blue header banner with white text, a sector, a grey ramp bar, side text."""
    h, w = 600, 800
    fan = sector_mask(h, w, (400, 70), 420)
    image = np.zeros((h, w, 3), np.uint8)
    image[fan] = np.repeat(speckle((h, w))[..., None], 3, axis=2)[fan]
    image[:60] = (30, 60, 95)  # banner
    cv2.putText(image, "DOE JANE 5/25/2011 2:56:22 PM", (90, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2)
    ramp = np.linspace(255, 0, 120).astype(np.uint8)
    image[90:210, 770:786] = ramp[:, None, None]  # grey scale bar: a ramp along one axis
    for row, text in enumerate(["Gen OB", "C5-1", "28Hz"]):
        cv2.putText(image, text, (6, 90 + 22 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
    return image, fan


def test_banner_bar_and_side_text_are_screen_not_scan():
    image, fan = philips_like_screen()
    region = detect_scan(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    assert region.status == "found"
    assert region.mask[fan].mean() > 0.99
    assert not region.mask[:60].any() and not region.mask[90:210, 770:786].any() and not region.mask[70:140, :100].any()


def test_banner_is_blanked_and_scan_kept():
    image, fan = philips_like_screen()
    result = remove_annotations(image, "usfmae", ocr=False)
    assert result.image[:60].max() <= 10  # the header with name, date and time is gone
    assert np.mean(result.image[fan] == image[fan]) > 0.99
    assert readable_words(cv2.cvtColor(result.image, cv2.COLOR_RGB2GRAY)) == []


def test_side_by_side_views_both_kept():
    h, w = 480, 640
    image = np.zeros((h, w), np.uint8)
    views = np.zeros((h, w), bool)
    views[40:420, 30:315] = views[40:420, 325:610] = True
    image[views] = speckle((h, w), seed=1)[views]
    region = detect_scan(image)
    assert region.status == "found" and region.mask[views].mean() > 0.99
    assert not region.mask[:30].any()


@pytest.mark.parametrize("level, offset", [(4.0, 0.0), (45.0, 40.0)], ids=["dark", "normal"])
def test_dark_scan_is_found(level, offset):
    h, w = 300, 400
    rect = np.zeros((h, w), bool)
    rect[40:270, 60:340] = True
    image = np.where(rect, speckle((h, w), level=level, offset=offset), 0).astype(np.uint8)
    region = detect_scan(image)
    assert region.status == "found" and region.mask[rect].mean() > 0.99


@pytest.mark.parametrize("shape", [(24, 24), (20, 300)])
def test_tiny_frame_is_unsure_and_kept(shape):
    image = speckle(shape)
    region = detect_scan(image)
    assert region.status == "unsure" and "too small" in region.reason and region.mask.all()
    result = remove_annotations(image, "usfmae", ocr=False)
    assert result.scan_status == "unsure"
    np.testing.assert_array_equal(result.image[..., 0], image)


def test_no_texture_is_unsure_nothing_blanked():
    image = np.zeros((200, 300), np.uint8)
    cv2.circle(image, (150, 100), 60, 120, -1)  # a flat disc: a drawing, not a scan
    result = remove_annotations(image, "usfmae", ocr=False)
    assert result.scan_status == "unsure" and result.scan_reason == "no scan-sized textured region"
    assert np.mean(result.image[..., 0] == image) > 0.98


def test_cropped_scan_is_whole_frame():
    region = detect_scan(speckle((200, 260)))
    assert region.status == "whole" and region.mask.all()


def test_readable_words_light_text_on_banner_and_none_on_speckle():
    image = np.zeros((80, 500, 3), np.uint8)
    image[:] = (30, 60, 95)
    cv2.putText(image, "PATIENT 2011", (10, 50), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (235, 235, 235), 2)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    assert [w.text for w in readable_words(gray)] == ["PATIENT", "2011"]
    assert readable_words(speckle((300, 400))) == []


def _screens(folder, n=2):
    folder.mkdir()
    image, _ = philips_like_screen()
    for index in range(n):
        cv2.imwrite(str(folder / f"s{index}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def test_cli_records_scan_status_and_residual_words(tmp_path, capsys):
    _screens(tmp_path / "in")
    assert main(["clean", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--sheet", "0",
                 "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["cleaned"], summary["residual_words"], summary["frames_with_text"], summary["scan_unsure"]) == \
        (2, 0, 0, 0)
    table = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pandas()
    assert list(table["scan_status"]) == ["found", "found"] and list(table["residual_words"]) == [0, 0]


def test_cli_strict_rejects_frames_with_words_left(tmp_path, capsys, monkeypatch):
    from usfmae.clean import run as clean_run
    from usfmae.clean.ocr import WordBox

    _screens(tmp_path / "in")
    monkeypatch.setattr(clean_run, "residual_words", lambda image: [WordBox("DOE", 1, 1, 9, 9, 90.0)])
    out = tmp_path / "out"
    assert main(["clean", str(tmp_path / "in"), "--out", str(out), "--sheet", "0", "--no-progress", "--strict"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["cleaned"], summary["rejected"]) == (0, 2)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rejects] == ["s0", "s1"]
    assert rejects[0]["reason"] == "1 readable word(s) left after cleaning (--strict): DOE"
    assert not list(out.glob("images/*.png"))


def test_side_cut_by_the_frame_edge_is_continued_to_it():
    """A hull whose corner at the frame's bottom edge was rounded off gets the side's own line back."""
    from usfmae.clean.scan_region import _to_frame_edge

    points = np.array([(5, 0), (15, 0), (15, 19), (8, 19), (5, 16)], np.int32)
    hull = np.zeros((20, 20), np.uint8)
    cv2.fillConvexPoly(hull, points, 1)
    expected = np.zeros_like(hull)
    cv2.fillConvexPoly(expected, np.array([(5, 0), (15, 0), (15, 19), (5, 19)], np.int32), 1)
    np.testing.assert_array_equal(_to_frame_edge(hull, points, (0, 0, 19, 19), 8), expected)
    # A side ending further than ``reach`` from the edge is a rounded scan, not a cut one.
    np.testing.assert_array_equal(_to_frame_edge(hull, points, (0, 0, 19, 19), 2), hull)


def test_text_line_just_above_a_small_scan_is_blanked():
    """At 224 px the header sits 3 px above the scan: the region's margin takes it in, the glyphs,
    cut off from the scan's textured body by black screen, are still screen."""
    h = w = 224
    rect = np.zeros((h, w), bool)
    rect[24:210, 30:200] = True
    image = np.where(rect, speckle((h, w), seed=3), 0).astype(np.uint8)
    cv2.putText(image, "ST MARY 2023/09/09", (30, 20), cv2.FONT_HERSHEY_PLAIN, 0.8, 235, 1, cv2.LINE_8)
    assert image[10:21].max() == 235
    result = remove_annotations(image, "usfmae", ocr=False)
    assert result.scan_status == "found"
    assert result.image[:21].max() <= 6
    assert np.mean(result.image[..., 0][rect] == image[rect]) > 0.99


def test_component_widths_are_measured_inside_the_frame():
    """A strip along the frame's edge joined by its mirror image in the padding is as wide as the
    part inside the frame, not twice that."""
    pad, h, w = 4, 30, 40
    labels = np.zeros((h + 2 * pad, w + 2 * pad), np.int32)
    labels[pad + 5:pad + 16, pad + 5:pad + 30] = 1   # 11 rows inside the frame
    labels[pad + h - 6:pad + h + 6, pad:pad + w] = 2   # 6 rows inside, 6 mirrored below the frame
    widths = _widths_in_frame(labels, 3, pad, h, w)
    # twice the largest distance to a pixel outside: 6 from the middle row of 11, 3 in the strip
    assert widths.tolist() == [0.0, 12.0, 6.0]
