"""Cleaning the real ultrasound DICOMs of pydicom / pydicom-data, scored as bench/clean_real_dicom.py scores them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from usfmae.clean.ocr import readable_words, word_boxes
from usfmae.clean.real_scans import SCANS, read_dicom_rgb, scan_kept, scan_pixels, screen_left, screen_pixels
from usfmae.clean.run import remove_annotations


@pytest.fixture(scope="module")
def cleaned() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """file -> (original, usfmae-cleaned) frame 0, each cleaned once for the module."""
    out = {}
    for name in SCANS:
        image = read_dicom_rgb(name)
        out[name] = image, remove_annotations(image, "usfmae").image
    return out


@pytest.mark.parametrize("name", list(SCANS))
def test_default_method_keeps_the_scan(cleaned, name):
    image, result = cleaned[name]
    assert scan_kept(image, result, scan_pixels(name, image)) >= 0.95


# color-pl is a crop whose flat grey screen beside the sector stays in the region (its sides are
# continued to the frame's edge); every other screen goes entirely.
SCREEN_LEFT_AT_MOST = {name: 0.01 for name in SCANS} | {"color-pl.dcm": 0.3}


@pytest.mark.parametrize("name", list(SCANS))
def test_default_method_removes_the_screen_around_the_scan(cleaned, name):
    """Banners, side panels, scale bars and toolbars go: the SonoSite echo's button bar along the
    bottom (JPEG noise makes it textured, one density window tall) used to be taken for a scan."""
    image, result = cleaned[name]
    assert screen_left(image, result, screen_pixels(name, image)) <= SCREEN_LEFT_AT_MOST[name]


@pytest.mark.parametrize("name", ["OBXXXX1A.dcm", "US1_J2KI.dcm", "examples_rgb_color.dcm"])
def test_default_method_leaves_no_readable_words(cleaned, name):
    _, result = cleaned[name]
    assert readable_words(cv2.cvtColor(result, cv2.COLOR_RGB2GRAY)) == []


@pytest.mark.parametrize("name", ["US1_UNCR.dcm", "US1_J2KI.dcm", "examples_rgb_color.dcm"])
def test_corner_text_above_the_scan_is_gone(cleaned, name):
    """The GE screen's corner text ends 8 px above the scan (y 108 at 640x480); JPEG 2000 and the
    half-size JPEG smear it into the gap, where it used to be taken for scan."""
    image, result = cleaned[name]
    top = round(100 * image.shape[0] / 480)
    assert cv2.cvtColor(image[:top], cv2.COLOR_RGB2GRAY).max() >= 250  # white text there before
    # Nothing visible is left: at most single compression specks a few levels above the black.
    assert cv2.cvtColor(result[:top], cv2.COLOR_RGB2GRAY).max() <= 16


def test_scan_kept_exact():
    original = np.zeros((2, 3, 3), np.uint8)
    cleaned = original.copy()
    cleaned[0, 0] = 11
    cleaned[0, 1] = 10
    scan = np.array([[True, True, True], [True, False, False]])
    assert scan_kept(original, cleaned, scan) == 0.75


def test_screen_left_exact():
    original = np.zeros((2, 3, 3), np.uint8)
    original[0] = 100  # three drawn pixels on a black screen
    cleaned = original.copy()
    cleaned[0, 0] = 0    # blanked: removed
    cleaned[0, 1] = 40   # inpainted into a smear: still drawn
    cleaned[1, 1] = 200  # drawn, but not screen
    screen = np.array([[True, True, True], [True, False, False]])
    # left: (0, 1) and (0, 2); (1, 0) stays black (the 2nd percentile is 0: drawn means > 6)
    assert screen_left(original, cleaned, screen) == 0.5
    assert screen_left(original, cleaned, np.zeros((2, 3), bool)) == 0.0


def test_screen_pixels_leave_out_the_scan_and_its_margin():
    image = read_dicom_rgb("color3d_jpeg_baseline.dcm")
    screen = screen_pixels("color3d_jpeg_baseline.dcm", image)
    assert not screen[200:300, 300:380].any()  # the middle of the sector
    assert screen[456:478, 100:540].mean() > 0.9  # the button bar along the bottom (rows 454-479)


@pytest.mark.parametrize("method", ["usfmae", "paper"])
def test_cleaning_a_real_frame_keeps_stderr_clean(capfd, method):
    """Leptonica reports boxes outside the image on stderr (from C, not through Python)."""
    remove_annotations(read_dicom_rgb("US1_J2KI.dcm"), method)
    assert capfd.readouterr().err == ""


def test_ocr_of_a_crop_cut_through_text_lines_keeps_stderr_clean(capfd):
    """The crop that printed 'Error in boxClipToRectangle: box outside rectangle': the GE side panel's
    second line, inverted and enlarged as the text-line reader does, with the lines above and below
    cut by its edges."""
    gray = cv2.cvtColor(read_dicom_rgb("US1_J2KI.dcm"), cv2.COLOR_RGB2GRAY)
    view = cv2.resize(255 - gray[37:59, 10:79], None, fx=20 / 14, fy=20 / 14, interpolation=cv2.INTER_LINEAR)
    assert view.shape == (31, 99)
    words = word_boxes(view)
    assert capfd.readouterr().err == ""
    assert all(0 <= w.x and 0 <= w.y and w.x + w.w <= 99 and w.y + w.h <= 31 for w in words)
