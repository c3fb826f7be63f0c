"""Cleaning the real ultrasound DICOMs of pydicom / pydicom-data, scored as bench/clean_real_dicom.py scores them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from usfmae.clean.ocr import readable_words, word_boxes
from usfmae.clean.real_scans import SCANS, read_dicom_rgb, scan_kept, scan_pixels
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
