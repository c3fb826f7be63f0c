"""clean.scan_aware.colour_marks: small-frame calipers and labels are marks; Doppler flow maps are kept."""

from __future__ import annotations

import numpy as np
import pytest

from usfmae.clean.scan_aware import colour_marks


def _speckle(size: int) -> np.ndarray:
    gray = np.random.default_rng(0).integers(40, 160, (size, size), dtype=np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def _chroma(rgb: np.ndarray) -> np.ndarray:
    return (rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2)).astype(np.uint8)


@pytest.mark.parametrize("colour", [(255, 255, 0), (0, 255, 0), (255, 0, 255), (0, 255, 255)],
                         ids=["yellow", "green", "magenta", "cyan"])
def test_a_thick_caliper_cross_on_a_small_frame_is_a_mark(colour) -> None:
    rgb = _speckle(128)
    rgb[50:52, 40:60] = colour  # a 2-pixel "+": thick enough to pass the stroke opening at 128 px
    rgb[41:61, 49:51] = colour
    drawn = _chroma(rgb) > 40
    marks = colour_marks(rgb, _chroma(rgb), np.ones((128, 128), bool))
    assert marks[drawn].all()


@pytest.mark.parametrize("colour", [(200, 30, 20), (240, 120, 10), (20, 60, 220)], ids=["red", "orange", "blue"])
def test_a_doppler_blob_of_the_same_size_is_kept(colour) -> None:
    rgb = _speckle(128)
    yy, xx = np.mgrid[:128, :128]
    blob = (yy - 60) ** 2 + (xx - 64) ** 2 <= 36  # a small flow map, 113 pixels
    shade = (0.6 + 0.4 * np.random.default_rng(1).random(blob.sum()))[:, None]
    rgb[blob] = (np.array(colour) * shade).astype(np.uint8)
    marks = colour_marks(rgb, _chroma(rgb), np.ones((128, 128), bool))
    assert not marks[blob].any()
