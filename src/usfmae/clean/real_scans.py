"""Ground truth for annotation removal on real scanner screens: the pydicom / pydicom-data US files.

For each file, the scan region drawn by hand (a polygon around the tissue the probe imaged, sector
or rectangle, read off the screen with a pixel grid) minus boxes around what the scanner drew *on*
the scan (grey/colour scale bars, frame counters, cursor), in native pixels: :data:`SCANS`. Only
the region's pixels that carry signal count (luma more than 6 levels above the frame's 2nd
percentile): clipped black inside a sector looks the same whether it was kept or blanked.
:func:`scan_kept` is the share of those pixels whose luma changed by at most 10 levels.
:func:`screen_left` scores the other side: what the scanner drew *around* the scan (banners, side
panels, toolbars, scale bars, logos), the share of it still on the cleaned frame.

Used by ``bench/clean_real_dicom.py`` (the README's table) and by the tests (every scan kept).
The set is six distinct scans (Philips OB, GE lymph node with power Doppler, Aloka dual view,
SonoSite echo, Philips adult echo, an Acme colour-flow crop) and four variants of them (a cropped
screen, two half-size copies, lossy JPEG 2000).
"""

from __future__ import annotations

import cv2
import numpy as np

from usfmae.clean.run import as_rgb

_OB = [(360, 66), (400, 85), (460, 97), (520, 86), (558, 66), (623, 170), (460, 182), (299, 170)]
_US1 = [(14, 108), (624, 108), (624, 337), (14, 337)]
_US1_BARS = [(4, 132, 48, 238), (594, 132, 638, 238)]
_ECHO_SONOSITE = [(330, 44), (362, 44), (596, 292), (470, 382), (340, 406), (200, 382), (86, 292)]
_ECHO_SONOSITE_MARKS = [(368, 30, 392, 52), (565, 392, 600, 418)]


def _scaled(items, factor):
    """Points or boxes scaled for a resized copy of a screen."""
    return [tuple(round(v * factor) for v in item) for item in items]


# file -> (scan polygons, boxes (x0, y0, x1, y1) drawn on the scan to leave out), native pixels
SCANS: dict[str, tuple[list, list]] = {
    "OBXXXX1A.dcm": ([_OB], []),
    "examples_palette.dcm": ([_OB], []),  # the same screen cropped to 800x350
    "US1_UNCR.dcm": ([_US1], _US1_BARS),
    "US1_J2KI.dcm": ([_US1], _US1_BARS),  # lossy JPEG 2000 of the same frame
    "examples_rgb_color.dcm": ([_scaled(_US1, 0.5)], _scaled(_US1_BARS, 0.5)),  # half size
    "gdcm-US-ALOKA-16.dcm": ([[(100, 27), (262, 27), (336, 150), (336, 415), (32, 415), (32, 122)],
                              [(404, 27), (572, 27), (638, 128), (638, 415), (338, 415), (338, 150)]],
                             [(246, 30, 340, 64), (570, 30, 640, 64), (74, 54, 116, 94)]),
    "color3d_jpeg_baseline.dcm": ([_ECHO_SONOSITE], _ECHO_SONOSITE_MARKS),
    "examples_ybr_color.dcm": ([_scaled(_ECHO_SONOSITE, 0.5)], _scaled(_ECHO_SONOSITE_MARKS, 0.5)),  # half size
    "JPGLosslessP14SV1_1s_1f_8b.dcm": ([[(428, 164), (602, 168), (906, 470), (875, 520), (830, 580), (770, 625),
                                         (700, 642), (500, 646), (300, 584), (158, 456)]], []),
    "color-pl.dcm": ([[(92, 0), (200, 0), (216, 25), (236, 55), (255, 85), (255, 119), (26, 119)]],
                     [(226, 50, 248, 68)]),  # the grey screen left and right of the sector is out
}


def read_dicom_rgb(name: str) -> np.ndarray:
    """Frame 0 of a pydicom test file as (H, W, 3) uint8 RGB, through the ingest reader.

    Args:
        name: an exact file name of :data:`SCANS` (pydicom or pydicom-data).
    """
    from pydicom.data import get_testdata_file

    from usfmae.curate.readers import read_frames

    # Explicit names only: a wildcard search makes pydicom-data try to download the whole set.
    frame = next(iter(read_frames(get_testdata_file(name), fps=0)))
    return as_rgb(frame.pixels)


def _polygons(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """(H, W) uint8 0/1: the file's hand-drawn scan polygons filled (the boxes on them not cut out)."""
    region = np.zeros(shape[:2], np.uint8)
    for polygon in SCANS[name][0]:
        cv2.fillPoly(region, [np.array(polygon, np.int32)], 1)
    return region


def _signal(rgb: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose luma is more than 6 levels above the frame's 2nd percentile."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return gray > np.percentile(gray, 2) + 6


def scan_pixels(name: str, rgb: np.ndarray) -> np.ndarray:
    """The hand-drawn scan region's pixels that carry signal (see the module docstring).

    Args:
        name: a key of :data:`SCANS`.
        rgb: (H, W, 3) uint8, the file's frame 0.

    Returns:
        (H, W) bool.
    """
    region = _polygons(name, rgb.shape)
    for x0, y0, x1, y1 in SCANS[name][1]:
        region[y0:y1, x0:x1] = 0
    return (region > 0) & _signal(rgb)


SCREEN_MARGIN = 0.03  # screen this close to the hand-drawn scan (fraction of the short side) is not scored


def screen_pixels(name: str, rgb: np.ndarray) -> np.ndarray:
    """What the scanner drew around the scan: pixels that carry signal (as in :func:`scan_pixels`)
    farther than ``SCREEN_MARGIN`` of the short side from every scan polygon.

    The margin leaves out the scan's blurred rim and the few pixels a hand-drawn polygon misses;
    the boxes drawn *on* the scan are not screen either (they lie inside the polygons).

    Args:
        name: a key of :data:`SCANS`.
        rgb: (H, W, 3) uint8, the file's frame 0.

    Returns:
        (H, W) bool.
    """
    k = 2 * round(SCREEN_MARGIN * min(rgb.shape[:2])) + 1
    near_scan = cv2.dilate(_polygons(name, rgb.shape), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0
    return ~near_scan & _signal(rgb)


def screen_left(original: np.ndarray, cleaned: np.ndarray, screen: np.ndarray) -> float:
    """Share of ``screen`` pixels still drawn after cleaning: luma more than 6 levels above the
    original frame's 2nd percentile, whatever it became (a bar inpainted into a grey smear is still
    on the screen); 0.0 when there is no screen.

    Args:
        original, cleaned: (H, W, 3) uint8 RGB at native resolution.
        screen: (H, W) bool, from :func:`screen_pixels`.
    """
    if not screen.any():
        return 0.0
    background = np.percentile(cv2.cvtColor(original, cv2.COLOR_RGB2GRAY), 2)
    drawn = cv2.cvtColor(cleaned, cv2.COLOR_RGB2GRAY) > background + 6
    return float(np.mean(drawn[screen]))


def scan_kept(original: np.ndarray, cleaned: np.ndarray, scan: np.ndarray) -> float:
    """Share of ``scan`` pixels whose luma changed by at most 10 levels.

    Args:
        original, cleaned: (H, W, 3) uint8 RGB at native resolution.
        scan: (H, W) bool, from :func:`scan_pixels`.
    """
    a = cv2.cvtColor(original, cv2.COLOR_RGB2GRAY).astype(np.int16)
    b = cv2.cvtColor(cleaned, cv2.COLOR_RGB2GRAY).astype(np.int16)
    return float(np.mean(np.abs(a - b)[scan] <= 10))
