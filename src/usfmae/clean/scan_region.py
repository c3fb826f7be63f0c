"""Where the scan is on an ultrasound screen: the region formed by the probe, found by its texture.

A scanner screen holds the scan (one or more sectors or rectangles) and everything the scanner
draws around it: header banners with the patient, date and time, side panels of settings, grey and
colour scale bars, rulers, logos, toolbars. Brightness does not tell them apart (a banner is bright,
an anechoic region or a low-gain scan is dark), colour does not either (banners and Doppler are both
coloured). Texture does: speckle varies from pixel to pixel in *both* directions, while whatever a
scanner draws is flat (banners, panels, glyph interiors), flat along one axis (grey and colour bars
are ramps along one axis) or thin (text, ticks, outlines). So:

1. ``textured``: pixels that differ from a horizontal *and* a vertical neighbour (full resolution);
2. their density over a window of ``WINDOW`` x the short side, on block averages at about
   ``WORK_SIDE`` px (where the scan is needs no finer grid); the scan is where it is high and the
   local contrast is speckle's (a block of compressed text is dense too, but black and white);
3. an opening with a disc as wide as the window removes text lines, toolbars and icon columns (all
   thinner than a scan); the dense components that survive it (``MIN_AREA`` of the frame or more,
   several for side-by-side views, and wider than ``MIN_CORE_WIDTH`` windows) are the scan's *body*;
4. the body grows through weaker speckle next to it (dim wings, smooth colour-flow crops), holes
   (cysts, vessels, cavities) are filled, and a convex part becomes its hull, its sides continued to
   the frame's edge where a cropped capture cuts the scan.

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
MIN_CORE_WIDTH = 1.35  # a core's widest inscribed disc inside the frame, in windows (toolbars are ~1)
WHOLE = 0.9            # a scan covering this much of the frame is the whole frame (cropped to the scan)
MAX_CV = 1.5           # local std / mean above this is strokes on a screen, not speckle
CORE_CV = 1.0          # ... and above this a core cannot start there (a block of compressed text)
HULL_SLACK = 1.2       # a component whose convex hull is at most this much larger is convex (sector, rectangle)
MIN_SIDE = 32          # frames with a shorter side are too small to tell scan from screen
WORK_SIDE = 200        # where the scan is is found at about this short side (px)


@dataclass(frozen=True)
class ScanRegion:
    """The scan region of one frame.

    Attributes:
        mask: (H, W) bool, True on the scan.
        status: ``"found"`` (scan and screen told apart), ``"whole"`` (the frame is all scan) or
            ``"unsure"`` (no scan-sized textured region: the whole frame is kept).
        reason: why, for ``"unsure"``; empty otherwise.
        body: (H, W) bool, the densely textured cores the region was grown from (``"found"`` only):
            what is certainly scan, as opposed to the margins the region adds around them.
    """

    mask: np.ndarray
    status: str
    reason: str = ""
    body: np.ndarray | None = None


def _odd(x: float, lo: int = 3) -> int:
    n = max(lo, int(round(x)))
    return n if n % 2 else n + 1


def textured(gray: np.ndarray) -> np.ndarray:
    """Pixels that differ from a horizontal and from a vertical neighbour. (H, W) uint8 -> (H, W) bool."""
    g = gray
    dx = np.zeros(g.shape, bool)
    dy = np.zeros(g.shape, bool)
    right = g[:, 1:] != g[:, :-1]   # pixel x differs from x + 1
    down = g[1:] != g[:-1]
    dx[:, :-1] = right
    dx[:, 1:] |= right
    dy[:-1] = down
    dy[1:] |= down
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


def _to_frame_edge(hull: np.ndarray, points: np.ndarray, frame: tuple[int, int, int, int], reach: int) -> np.ndarray:
    """Continue a convex region's sides to the frame's edge where the frame cuts the scan.

    A sector cut by the edge of a capture ends there in a corner; the density window rounds that
    corner off (its dim far field most of all), and the hull keeps the rounding. Each side that
    ends within ``reach`` of an edge the region touches is extended along its own direction to it.

    Args:
        hull: (H, W) uint8 0/1, the filled hull of ``points``.
        points: (N, 2) int hull vertices (x, y), in order.
        frame: the frame's edges ``(x0, y0, x1, y1)`` in ``hull``'s pixels (inclusive).
        reach: longest extension, px; also the length of side that sets the direction.

    Returns:
        (H, W) uint8 0/1.
    """
    x0, y0, x1, y1 = frame
    pts = np.clip(points.astype(np.float64), (x0, y0), (x1, y1))
    n = len(pts)

    def on_edge(p: np.ndarray) -> bool:
        return p[0] <= x0 + 1 or p[1] <= y0 + 1 or p[0] >= x1 - 1 or p[1] >= y1 - 1

    extra = []
    for i in range(n):
        corner = pts[i]
        if on_edge(corner):
            continue
        for step in (1, -1):
            if not on_edge(pts[(i + step) % n]):
                continue
            j = i  # the side's direction: from a vertex at least ``reach`` back along it
            for _ in range(n - 1):
                j = (j - step) % n
                if np.hypot(*(pts[j] - corner)) >= reach:
                    break
            d = corner - pts[j]
            # Where the side leaves the frame: it must be the edge the rounded corner runs into.
            hits = []
            for axis, (lo, hi) in enumerate(((x0, x1), (y0, y1))):
                if d[axis]:
                    border = lo if d[axis] < 0 else hi
                    hits.append(((border - corner[axis]) / d[axis], axis, border))
            if not hits:
                continue
            t, axis, border = min(hits)
            if t > 0 and t * np.hypot(*d) <= reach and abs(pts[(i + step) % n][axis] - border) <= 1:
                extra.append(corner + t * d)
    if not extra:
        return hull
    out = np.zeros_like(hull)
    cv2.fillConvexPoly(out, cv2.convexHull(np.vstack([pts, extra]).round().astype(np.int32)), 1)
    return out | hull


def _widths_in_frame(labels: np.ndarray, count: int, pad: int, h: int, w: int) -> np.ndarray:
    """Each labelled component's width: the diameter of the widest disc inside it and inside the frame.

    A toolbar, a row of buttons or an icon strip along the screen's edge is compressed into texture
    (JPEG noise on its flat face, ringing round its glyphs) and about one window tall, so it survives
    the opening. The mirrored border makes it look twice as tall (its reflection joins it); inside the
    frame it stays about one window wide, where every scan core seen so far is 1.7 windows or more.

    Args:
        labels: (h + 2 pad, w + 2 pad) int32 component labels of the padded working grid.
        count: number of labels (0 is the background).
        pad, h, w: the padding and the unpadded size.

    Returns:
        (count,) float32 widths in working pixels (0 for the background).
    """
    inside = labels[pad:pad + h, pad:pad + w]
    # zero outside the frame: the frame's edge bounds the disc, the mirrored border does not
    distance = cv2.distanceTransform(np.pad((inside > 0).astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    widest = np.zeros(count, np.float32)
    np.maximum.at(widest, inside.ravel(), distance.ravel())
    widest[0] = 0
    return 2 * widest


def detect_scan(gray: np.ndarray) -> ScanRegion:
    """Find the scan region of a frame.

    Args:
        gray: (H, W) uint8 frame (luma).

    Returns:
        The region and how sure the detector is (see :class:`ScanRegion`).
    """
    full_h, full_w = gray.shape
    everything = np.ones((full_h, full_w), bool)
    if min(full_h, full_w) < MIN_SIDE:
        return ScanRegion(everything, "unsure", f"frame too small ({full_w}x{full_h}) to tell scan from screen")
    # Which pixels are textured is decided at full resolution (speckle grains are a few pixels);
    # where the dense regions are needs no more than ~WORK_SIDE px on the short side: the window,
    # the openings and the labelling run on block averages, ~10x less work at 800x600.
    step = max(1, min(full_h, full_w) // WORK_SIDE)
    h, w = -(-full_h // step), -(-full_w // step)
    t = textured(gray).astype(np.float32)
    g = gray.astype(np.float32)
    maps = [t, g, g * g]
    if step > 1:
        maps = [cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA) for m in maps]
    win = _odd(WINDOW * min(h, w))
    # Mirror the frame outwards: a scan cut by the frame's edge (a cropped capture) continues past
    # it, so the window and the opening treat the edge like the scan's inside.
    pad = win
    t, g, g2 = (cv2.copyMakeBorder(m, pad, pad, pad, pad, cv2.BORDER_REFLECT) for m in maps)
    density = cv2.blur(t, (win, win), borderType=cv2.BORDER_REPLICATE)
    # Text on a dark screen is textured too once compressed (JPEG ringing around every glyph), but
    # it is sparse bright strokes on black: far more contrast for its mean than speckle, whose
    # coefficient of variation is ~0.5 (Rayleigh), ~1.2 where a window straddles the scan's edge.
    mean = cv2.blur(g, (win, win), borderType=cv2.BORDER_REPLICATE)
    var = np.maximum(cv2.blur(g2, (win, win), borderType=cv2.BORDER_REPLICATE) - mean * mean, 0)
    spread = np.sqrt(var) / (mean + 4.0)
    speckle_like = spread < MAX_CV
    dense = ((density > DENSE) & (spread < CORE_CV)).astype(np.uint8)
    core = _open_disc(dense, win)
    count, core_labels, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=8)
    width = _widths_in_frame(core_labels, count, pad, h, w)
    seeds = [i for i in range(1, count)  # h, w: unpadded
             if stats[i, cv2.CC_STAT_AREA] >= MIN_AREA * h * w and width[i] >= MIN_CORE_WIDTH * win]
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
    cores = np.isin(core_labels, seeds).astype(np.uint8)
    region = _fill_holes(region | cores.astype(bool))
    # Sectors and rectangles are convex: their hull restores the corners the density window rounds
    # off. Side-by-side views that touch, or a cavity open to the screen, are not: there the region
    # grows by a third of the window instead (dim edges stay in, the screen between views stays out).
    count, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    out = np.zeros(t.shape, np.uint8)
    grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (_odd(win / 3),) * 2)
    for i in range(1, count):
        if stats[i, cv2.CC_STAT_AREA] < MIN_AREA * h * w:
            continue  # a fragment the opening cut off the grown region
        part = (labels == i).astype(np.uint8)
        # The hull of the whole part, else of its textured body (the growth may have reached a
        # patch of textured screen beside the scan: that stays as grown, outside the hull).
        for shape in (part, _fill_holes(part & cores).astype(np.uint8)):
            if not shape.any():
                continue
            contours, _ = cv2.findContours(shape, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            points = cv2.convexHull(np.vstack(contours))[:, 0]
            hull = np.zeros_like(part)
            cv2.fillConvexPoly(hull, points, 1)
            if hull.sum() <= HULL_SLACK * shape.sum():
                out |= _to_frame_edge(hull, points, (pad, pad, pad + w - 1, pad + h - 1), 2 * win) | part
                break
        else:
            out |= cv2.dilate(part, grow)
    region = _full_size(out[pad:pad + h, pad:pad + w], full_h, full_w)
    if region.mean() >= WHOLE:
        return ScanRegion(everything, "whole")
    return ScanRegion(region, "found", body=_full_size(cores[pad:pad + h, pad:pad + w], full_h, full_w))


def _full_size(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """A 0/1 uint8 mask of the working resolution at (h, w), bool, edges interpolated (not blocky)."""
    if mask.shape == (h, w):
        return mask > 0
    return cv2.resize(mask * np.uint8(255), (w, h), interpolation=cv2.INTER_LINEAR) >= 128
