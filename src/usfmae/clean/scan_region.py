"""Where the scan is on an ultrasound screen: the region formed by the probe, found by its texture.

A scanner screen holds the scan (one or more sectors or rectangles) and everything the scanner
draws around it: header banners with the patient, date and time, side panels of settings, grey and
colour scale bars, rulers, logos, toolbars. Brightness does not tell them apart (a banner is bright,
an anechoic region or a low-gain scan is dark), colour does not either (banners and Doppler are both
coloured). Texture does: speckle varies from pixel to pixel in *both* directions, while whatever a
scanner draws is flat (banners, panels, glyph interiors), flat along one axis (grey and colour bars
are ramps along one axis) or thin (text, ticks, outlines). So:

1. ``textured``: pixels that differ from a horizontal *and* a vertical neighbour;
2. their density over a window of ``WINDOW`` x the short side; the scan is where it is high;
3. an opening with a disc twice the window removes text lines, toolbars and icon columns (all thinner
   than a scan); the dense components that survive it (``MIN_AREA`` of the frame or more, several for
   side-by-side views) are the scan, holes (cysts, vessels, cavities) filled, grown by half a window
   so dim edges stay in.

Pixels of the scan that are exactly flat (clipped black) are indistinguishable from the screen, but
blanking them changes nothing. When no scan-sized textured region exists (a tiny frame, a frame with
no speckle, a synthetic image) the detector says it is unsure and the caller keeps the whole frame,
removing marks only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

WINDOW = 0.06          # density window, fraction of the short side
WEAK = 0.25            # share that continues a scan found with DENSE (hysteresis)
DENSE = 0.5            # share of textured pixels that makes a window "scan"
MIN_AREA = 0.01        # smallest scan component, fraction of the frame
WHOLE = 0.9            # a scan covering this much of the frame is the whole frame (cropped to the scan)
MAX_CV = 1.5           # local std / mean above this is strokes on a screen, not speckle
HULL_SLACK = 1.12      # a component whose convex hull is at most this much larger is convex (sector, rectangle)
MIN_SIDE = 32          # frames with a shorter side are too small to tell scan from screen


@dataclass(frozen=True)
class ScanRegion:
    """The scan region of one frame.

    Attributes:
        mask: (H, W) bool, True on the scan.
        status: ``"found"`` (scan and screen told apart), ``"whole"`` (the frame is all scan) or
            ``"unsure"`` (no scan-sized textured region: the whole frame is kept).
        reason: why, for ``"unsure"``; empty otherwise.
    """

    mask: np.ndarray
    status: str
    reason: str = ""


def _odd(x: float, lo: int = 3) -> int:
    n = max(lo, int(round(x)))
    return n if n % 2 else n + 1


def textured(gray: np.ndarray) -> np.ndarray:
    """Pixels that differ from a horizontal and from a vertical neighbour. (H, W) uint8 -> (H, W) bool."""
    g = gray.astype(np.int16)
    dx = np.zeros(g.shape, bool)
    dy = np.zeros(g.shape, bool)
    dx[:, 1:-1] = (g[:, 1:-1] != g[:, :-2]) | (g[:, 1:-1] != g[:, 2:])
    dy[1:-1] = (g[1:-1] != g[:-2]) | (g[1:-1] != g[2:])
    return dx & dy


def _open_disc(mask: np.ndarray, k: int) -> np.ndarray:
    """Morphological opening of a 0/1 uint8 mask by a disc ``k`` px wide, through two distance
    transforms (linear time; OpenCV's elliptic structuring elements cost O(k) per pixel)."""
    r = k / 2.0
    eroded = cv2.distanceTransform(mask, cv2.DIST_L2, 5) > r
    return (cv2.distanceTransform((~eroded).astype(np.uint8), cv2.DIST_L2, 5) <= r).astype(np.uint8)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = np.zeros(mask.shape, np.uint8)
    cv2.drawContours(out, contours, -1, 1, thickness=-1)
    return out.astype(bool)


def detect_scan(gray: np.ndarray) -> ScanRegion:
    """Find the scan region of a frame.

    Args:
        gray: (H, W) uint8 frame (luma).

    Returns:
        The region and how sure the detector is (see :class:`ScanRegion`).
    """
    h, w = gray.shape
    everything = np.ones((h, w), bool)
    if min(h, w) < MIN_SIDE:
        return ScanRegion(everything, "unsure", f"frame too small ({w}x{h}) to tell scan from screen")
    win = _odd(WINDOW * min(h, w))
    # Mirror the frame outwards: a scan cut by the frame's edge (a cropped capture) continues past
    # it, so the window and the opening treat the edge like the scan's inside.
    pad = win
    gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    density = cv2.blur(textured(gray).astype(np.float32), (win, win), borderType=cv2.BORDER_REPLICATE)
    # Text on a dark screen is textured too once compressed (JPEG ringing around every glyph), but
    # it is sparse bright strokes on black: far more contrast for its mean than speckle, whose
    # coefficient of variation is ~0.5 (Rayleigh), ~1.2 where a window straddles the scan's edge.
    g = gray.astype(np.float32)
    mean = cv2.blur(g, (win, win), borderType=cv2.BORDER_REPLICATE)
    var = np.maximum(cv2.blur(g * g, (win, win), borderType=cv2.BORDER_REPLICATE) - mean * mean, 0)
    speckle_like = np.sqrt(var) < MAX_CV * (mean + 4.0)
    dense = ((density > DENSE) & speckle_like).astype(np.uint8)
    core = _open_disc(dense, win)
    count, core_labels, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=8)
    seeds = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= MIN_AREA * h * w]  # h, w: unpadded
    if not seeds:
        return ScanRegion(everything, "unsure", "no scan-sized textured region")
    # The opened cores, not the dense pixels they belong to: a bridge of compressed text thinner
    # than the disc would otherwise join a header to the scan.
    region = np.isin(core_labels, seeds)
    # Hysteresis: grow the cores through adjacent weaker speckle (dim wings of a sector, smooth
    # colour-flow crops), never through text or flat screen (not speckle-like).
    weak = ((density > WEAK) & speckle_like).astype(np.uint8) | region.astype(np.uint8)
    count, labels = cv2.connectedComponents(weak, connectivity=8)
    grown = np.zeros(count, bool)
    grown[labels[region]] = True
    grown[0] = False
    region = _open_disc(grown[labels].astype(np.uint8), _odd(win / 2)) > 0
    region = _fill_holes(region | np.isin(core_labels, seeds))
    # Sectors and rectangles are convex: their hull restores the corners the density window rounds
    # off. Side-by-side views that touch, or a cavity open to the screen, are not: there the region
    # grows by a third of the window instead (dim edges stay in, the screen between views stays out).
    count, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    out = np.zeros(gray.shape, np.uint8)
    grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (_odd(win / 3),) * 2)
    for i in range(1, count):
        if stats[i, cv2.CC_STAT_AREA] < MIN_AREA * h * w:
            continue  # a fragment the opening cut off the grown region
        part = (labels == i).astype(np.uint8)
        contours, _ = cv2.findContours(part, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        hull = np.zeros_like(part)
        cv2.fillConvexPoly(hull, cv2.convexHull(np.vstack(contours)), 1)
        out |= hull if hull.sum() <= HULL_SLACK * stats[i, cv2.CC_STAT_AREA] else cv2.dilate(part, grow)
    region = (out > 0)[pad:pad + h, pad:pad + w]
    if region.mean() >= WHOLE:
        return ScanRegion(everything, "whole")
    return ScanRegion(region, "found")
