"""Our annotation removal (``usfmae clean --method usfmae``, the default).

What it does differently from the paper's pipeline (:mod:`usfmae.clean.paper`), and why:

1. **Scan region first** (:mod:`usfmae.clean.scan_region`). The image formed by the probe is
   speckle, textured in both directions; banners, side panels, scale bars, rulers, logos and text
   are flat, ramps along one axis, or sparse strokes. Every pixel outside the textured region that
   differs from the background is screen and is set to the background level: no OCR, no
   inpainting there. Bright drawings inside the region's margin that black screen cuts off from the
   scan's textured body (a header line right above a small scan) are screen too. When the detector
   finds no scan-sized textured region it says so and the whole frame is kept (marks removed only),
   instead of blanking what it could not place.
2. **Colour Doppler is kept.** Inside the fan only *thin* saturated structures are removed (ROI box
   outlines, coloured text, calipers, dotted lines): saturated pixels away from thick blobs, unless
   they are shaded with the blobs' own colours (fragments of the same flow map). Filled colour
   rectangles (scale bars) are removed too.
3. **Small anatomy survives.** Grey marks inside the fan must be much brighter than the tissue
   around them (a stroke-sized white top-hat above the speckle's own noise floor) *and* line-like,
   cross-like or exactly flat like drawn pixels. Dark lesions, cyst edges and speckle are never
   candidates, unlike the paper's "any small closed Canny contour" rule.
4. **Thresholds scale with the image** (sizes are fractions of the short side, intensity
   thresholds follow the speckle statistics), so the method behaves the same at 224 px and 800x600.
5. **OCR only where text may be**: the few text-line-shaped groups of marks inside the fan are
   cropped and read with the process-wide Tesseract; recognised words add their bright pixels.
6. **Cheap fill**: Telea inpainting on small crops around each group of marks (grey B-mode is
   inpainted as one channel).
"""

from __future__ import annotations

import cv2
import numpy as np

from usfmae.clean.ocr import word_boxes
from usfmae.clean.scan_region import ScanRegion, detect_scan

BG_DELTA = 6               # grey levels above background that count as "something drawn" on screen
CHROMA_MIN = 40            # max(R,G,B) - min(R,G,B) of a coloured pixel
TOPHAT_MIN = 60            # a grey mark is at least this much brighter than its surroundings
STROKE_FRAC = 0.008        # stroke width limit as a fraction of the short side (>= 1 px)
INPAINT_RADIUS = 3
TOPHAT_NOISE = 1.9         # threshold = this x the 90th percentile of the speckle's top-hat
EXTENT_STROKES = 2.5       # a line-like mark is at least this many stroke widths long
DOPPLER_SHARE = 0.5        # a thin colour fragment with this share of flow-map colours is Doppler
FLOW_HUE_SHARE = 0.5       # a thick colour blob with this share of Doppler hues is a flow map
FLOW_RED_MAX, FLOW_RED_MIN = 20, 165  # OpenCV hue (0-179): red to orange wraps around 0
FLOW_BLUE = (95, 135)      # cyan-blue to blue
MAX_OCR_LINES = 3          # candidate text lines read per frame inside a found scan
MAX_OCR_LINES_UNSURE = 12  # ... and over the whole frame when the scan region is unsure


def _odd(x: float, lo: int = 3) -> int:
    n = max(lo, int(round(x)))
    return n if n % 2 else n + 1


def _ellipse(k: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))


def _nonzero(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of a 2-D array, in the same order: the 1-D search plus a divmod is ~10x
    faster on sparse 800x600 masks than numpy's 2-D one."""
    return np.divmod(np.flatnonzero(a if a.dtype == bool else a != 0), a.shape[1])  # bool: 10x faster again


def _components(mask: np.ndarray, connectivity: int = 8) -> tuple[int, np.ndarray, np.ndarray]:
    """Label a sparse mask and measure its components from the foreground pixels only.

    OpenCV's ``connectedComponentsWithStats`` costs ~10 ms on an 800x600 frame whatever the mask
    holds; plain labelling plus statistics over the few foreground pixels is ~10x cheaper.

    Returns:
        ``(count, labels (H, W) int32, stats (count, 5) int64)``; stats columns are x, y, w, h,
        area as in OpenCV; row 0 is the background (zeros).
    """
    count, labels = cv2.connectedComponentsWithAlgorithm(mask.astype(np.uint8), connectivity, cv2.CV_32S,
                                                         cv2.CCL_BBDT)
    ys, xs = _nonzero(labels)
    lab = labels[ys, xs]
    x0 = np.full(count, labels.shape[1], np.int64)
    y0 = np.full(count, labels.shape[0], np.int64)
    x1 = np.zeros(count, np.int64)
    y1 = np.zeros(count, np.int64)
    np.minimum.at(x0, lab, xs)
    np.minimum.at(y0, lab, ys)
    np.maximum.at(x1, lab, xs)
    np.maximum.at(y1, lab, ys)
    stats = np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1, np.bincount(lab, minlength=count)], axis=1)
    stats[0] = 0
    return count, labels, stats


def colour_marks(rgb: np.ndarray, chroma: np.ndarray, fan: np.ndarray) -> np.ndarray:
    """Thin, flat-coloured structures inside the fan: ROI boxes, coloured text and calipers.

    Colour Doppler is kept: its flow maps are thick blobs, and thin fragments away from them that
    are shaded with the blobs' colours belong to the same flow map. Filled rectangles (colour scale
    bars) are marks whatever their size.

    Args:
        rgb: (H, W, 3) uint8.
        chroma: (H, W) uint8, max - min over RGB.
        fan: (H, W) bool.

    Returns:
        (H, W) bool.
    """
    coloured = ((chroma > CHROMA_MIN) & fan).astype(np.uint8)
    if not coloured.any():
        return coloured.astype(bool)
    k = _odd(2.5 * STROKE_FRAC * min(chroma.shape))
    thick = cv2.morphologyEx(coloured, cv2.MORPH_OPEN, _ellipse(k))
    bars = np.zeros(chroma.shape, bool)
    if thick.any():
        _, labels, stats = _components(thick)
        # Bold glyphs survive the opening as specks: a flow map is a big blob ...
        big = stats[:, 4] >= k * k
        # ... in the flow map's hues: on a small frame a caliper cross or a label is a few pixels
        # thick and passes the opening, but it is drawn in yellow, green, cyan or magenta, while
        # velocity and power Doppler are red to orange and blue (a tint over the whole frame is
        # large, whatever its hue)
        big &= (_flow_hue_share(rgb, labels, len(stats)) >= FLOW_HUE_SHARE) | (stats[:, 4] >= 0.01 * chroma.size)
        # ... but never a filled rectangle: that is a colour scale bar drawn beside the image.
        rect = stats[:, 4] >= 0.85 * stats[:, 2] * stats[:, 3]
        big[0] = rect[0] = False
        bars = cv2.dilate((big & rect)[labels].astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & (coloured > 0)
        thick = (big & ~rect)[labels].astype(np.uint8)
    near_thick = cv2.dilate(thick, np.ones((2 * k + 1, 2 * k + 1), np.uint8))
    thin = (coloured > 0) & (near_thick == 0)
    if not thin.any():
        return bars
    count, labels, stats = _components(thin)
    area = stats[:, 4]
    doppler_like = np.zeros(count, bool)
    if thick.any():
        # A thin fragment shaded with the flow map's colours is a piece of Doppler, not a mark.
        ys, xs = _nonzero(thin)
        ty, tx = _nonzero(thick)
        in_map = np.isin(_quantised(rgb[ys, xs]), np.unique(_quantised(rgb[ty, tx])))
        doppler_like = np.bincount(labels[ys, xs], weights=in_map, minlength=count) >= DOPPLER_SHARE * area
    long = np.maximum(stats[:, 2], stats[:, 3]) >= 0.1 * min(chroma.shape)  # box edges, lines
    keep = ~doppler_like | long  # even one saturated pixel in grey B-mode is drawn
    keep[0] = False
    return keep[labels] | bars


def _flow_hue_share(rgb: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """(count,) share of each component's pixels in Doppler flow hues: red to orange, or blue."""
    hue = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 0]  # 0-179
    flow = (hue <= FLOW_RED_MAX) | (hue >= FLOW_RED_MIN) | ((hue >= FLOW_BLUE[0]) & (hue <= FLOW_BLUE[1]))
    inside = labels > 0
    total = np.bincount(labels[inside], minlength=count)
    in_flow = np.bincount(labels[inside], weights=flow[inside], minlength=count)
    return in_flow / np.maximum(total, 1)


def _quantised(pixels: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 RGB -> (N,) int64 key of the colour at 16 levels per channel."""
    q = (pixels >> 4).astype(np.int64)
    return (q[:, 0] << 8) | (q[:, 1] << 4) | q[:, 2]


def screen_background(gray: np.ndarray, bg: int) -> np.ndarray:
    """Dark pixels connected to the frame border: the screen around the fan (and a sector's apex).

    Args:
        gray: (H, W) uint8.
        bg: background grey level.

    Returns:
        (H, W) bool. Anechoic regions inside the fan are not connected to the border and stay False.
    """
    dark = (gray <= bg + BG_DELTA).astype(np.uint8)
    count, labels = cv2.connectedComponentsWithAlgorithm(dark, 4, cv2.CV_32S, cv2.CCL_BBDT)
    border = np.zeros(count, bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        border[edge] = True
    border[0] = False
    return border[labels]


def detect_fan(gray: np.ndarray, chroma: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, ScanRegion]:
    """Scan region (sector/rectangle, see :mod:`usfmae.clean.scan_region`) and the screen around it.

    Args:
        gray: (H, W) uint8.
        chroma: (H, W) uint8 max - min over RGB, or None: coloured screen (banners, logos) whose
            luma is close to the background's counts as drawn too.

    Returns:
        ``(fan, screen_marks, screen_background, background level, region)``; masks (H, W) bool.
        Screen marks are the pixels outside the scan that differ from the background. When the
        detector is unsure (``region.status == "unsure"``) the fan is the whole frame and nothing
        is blanked: only marks are removed.
    """
    small = gray[::4, ::4] if min(gray.shape) >= 64 else gray
    bg = int(np.percentile(small, 2))
    screen_bg = screen_background(gray, bg)
    region = detect_scan(gray)
    fan = region.mask
    drawn = gray > bg + BG_DELTA
    if chroma is not None:
        drawn |= chroma > CHROMA_MIN
    if region.body is not None:
        fan = fan & ~_islands(gray, drawn & fan, region.body, bg)
    return fan, drawn & ~fan, screen_bg, bg, region


def _islands(gray: np.ndarray, drawn: np.ndarray, body: np.ndarray, bg: int) -> np.ndarray:
    """Screen drawings the scan region took in: bright groups of drawn pixels cut off from the
    scan's body by screen background (a text line or a ruler right beside the scan, inside the
    margin the region adds around its textured body), with the dim specks around them. Other dim
    groups stay: dark-scan speckle."""
    # A group cut off from the body lies in the margin (drawn, not body) and does not touch the
    # body's drawn pixels: label the margin only, a few percent of the frame.
    margin = drawn & ~body
    count, labels = cv2.connectedComponentsWithAlgorithm(margin.astype(np.uint8), 8, cv2.CV_32S, cv2.CCL_BBDT)
    if count <= 1:
        return np.zeros(drawn.shape, bool)
    ys, xs = _nonzero(margin)
    lab = labels[ys, xs]
    touching = cv2.dilate((drawn & body).astype(np.uint8), np.ones((3, 3), np.uint8))[ys, xs] > 0
    cut_off = np.ones(count, bool)
    cut_off[lab[touching]] = False
    cut_off[0] = False
    loose = cut_off[lab]
    bright = np.zeros(count, bool)
    bright[lab[loose & (gray[ys, xs] >= bg + TOPHAT_MIN)]] = True
    # Compression rings each glyph with dim specks of its own: loose groups next to a bright one go too.
    seed = np.zeros(drawn.shape, np.uint8)
    hit = loose & bright[lab]
    seed[ys[hit], xs[hit]] = 1
    near = cv2.dilate(seed, np.ones((5, 5), np.uint8))[ys, xs] > 0
    bright[lab[loose & near]] = True
    cut_off &= bright
    out = np.zeros(drawn.shape, bool)
    keep = cut_off[lab]
    out[ys[keep], xs[keep]] = True
    return out


def gray_marks(gray: np.ndarray, fan: np.ndarray, screen_bg: np.ndarray, screen: np.ndarray,
               chroma: np.ndarray) -> np.ndarray:
    """Bright, thin or flat structures inside the fan: calipers, dotted lines, text, arrows.

    Args:
        gray: (H, W) uint8.
        fan: (H, W) bool scan fan.
        screen_bg: (H, W) bool screen background (see :func:`screen_background`).
        screen: (H, W) bool marks found outside the fan.
        chroma: (H, W) uint8; coloured pixels (Doppler, colour marks) are left to :func:`colour_marks`.

    Returns:
        (H, W) bool.
    """
    short = min(gray.shape)
    stroke = max(1.0, STROKE_FRAC * short)
    # Drawn lines stay 1-2 px wide at any resolution while speckle grains grow with it: a top-hat
    # just wider than a stroke responds to marks, not to high-resolution speckle.
    k = _odd(min(4 * stroke + 3, 7), lo=5)
    # The black screen would make every fan edge look like a bright ridge to the top-hat: paint it
    # white first, so only structures brighter than the surrounding *tissue* respond.
    lifted = gray.copy()
    lifted[screen_bg] = 255
    tophat = cv2.morphologyEx(lifted, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    inside = fan & ~screen_bg & (chroma <= CHROMA_MIN)
    sample = tophat[inside][::7]
    # Speckle sets the noise floor of the top-hat; marks stand well above it.
    thr = max(TOPHAT_MIN, TOPHAT_NOISE * float(np.percentile(sample, 90))) if sample.size else TOPHAT_MIN
    cand = ((tophat > thr) & inside).astype(np.uint8)
    if not cand.any():
        return cand.astype(bool)
    # A small closing links the dots of a dotted line and the parts of a glyph into one component.
    linked = cv2.morphologyEx(cand, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    count, labels, stats = _components(linked)
    area = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
    bw, bh = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    extent = np.maximum(bw, bh).astype(np.float64)
    fill = area / np.maximum(bw * bh, 1)
    # Drawn pixels are flat: most of a mark shares its brightest value exactly (anti-aliased rims
    # aside), while a speckle grain peaks at one pixel and falls off.
    ys, xs = _nonzero(linked)
    lab, val = labels[ys, xs], gray[ys, xs]
    peak = np.zeros(count, np.int32)
    np.maximum.at(peak, lab, val)
    at_peak = np.bincount(lab, weights=val >= peak[lab] - 1, minlength=count)
    flat = (at_peak / np.maximum(area, 1) >= 0.5) & (area >= 4)
    thin = area / np.maximum(extent, 1) <= 1.6 * stroke          # mean width along the long axis
    line_like = (extent >= EXTENT_STROKES * stroke) & ((fill < 0.45) | thin)   # crosses, arrows, letters, lines
    # A bright structure that continues into the screen is a mark cut by the fan edge.
    touching = np.zeros(count, bool)
    touching[lab[cv2.dilate(screen.astype(np.uint8), np.ones((3, 3), np.uint8))[ys, xs] > 0]] = True
    keep = (line_like | flat | touching) & (area <= 0.02 * gray.size) & (area >= 3)
    keep[0] = False
    return keep[labels] & (cand > 0)


def text_in_fan(gray: np.ndarray, marks: np.ndarray, fan: np.ndarray, max_lines: int = MAX_OCR_LINES) -> np.ndarray:
    """Read candidate text lines inside the fan; return the bright pixels of recognised words."""
    short = min(gray.shape)
    line = cv2.dilate(marks.astype(np.uint8), cv2.getStructuringElement(
        cv2.MORPH_RECT, (_odd(0.03 * short), _odd(0.006 * short, lo=1))))
    _, _, stats = _components(line)
    out = np.zeros_like(marks)
    pad = max(2, int(0.01 * short))
    lines = [tuple(st[:4]) for st in stats[1:]
             # Text lines are wide, a few glyphs tall; dotted lines and blobs cannot be read.
             if st[2] >= 3 * st[3] and max(5, 0.012 * short) <= st[3] <= 0.08 * short]
    # Reading is the expensive step: the widest few lines are enough (screen text never gets here).
    for x, y, w, h in sorted(lines, key=lambda b: -b[2])[:max_lines]:
        x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(gray.shape[1], x + w + pad), min(gray.shape[0], y + h + pad)
        crop = gray[y0:y1, x0:x1]
        # Tesseract reads dark text on light best and wants glyphs ~20 px tall (at most 2x upscaling).
        up = min(2.0, max(1.0, 20.0 / h))
        view = cv2.resize(255 - crop, None, fx=up, fy=up, interpolation=cv2.INTER_LINEAR) if up > 1 else 255 - crop
        for word in word_boxes(view):
            wx0, wy0 = x0 + int(word.x / up), y0 + int(word.y / up)
            wx1, wy1 = x0 + int(np.ceil((word.x + word.w) / up)), y0 + int(np.ceil((word.y + word.h) / up))
            region = gray[wy0:wy1, wx0:wx1]
            local = np.percentile(region, 50) if region.size else 255
            out[wy0:wy1, wx0:wx1] |= region > local + TOPHAT_MIN / 2
    return out & fan


def _inpaint_groups(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Telea inpainting on crops around each group of mask pixels (cost ~ masked area, not frame)."""
    if not mask.any():
        return image
    out = image.copy()
    grow = 4 * INPAINT_RADIUS
    groups = cv2.dilate(mask.astype(np.uint8), np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    _, _, stats = _components(groups)
    h, w = mask.shape
    for x, y, bw, bh, _ in stats[1:]:
        x0, y0, x1, y1 = max(0, x - 1), max(0, y - 1), min(w, x + bw + 1), min(h, y + bh + 1)
        sub = mask[y0:y1, x0:x1].astype(np.uint8)
        out[y0:y1, x0:x1] = cv2.inpaint(np.ascontiguousarray(out[y0:y1, x0:x1]), sub, INPAINT_RADIUS,
                                        cv2.INPAINT_TELEA).reshape(out[y0:y1, x0:x1].shape)
    return out


def usfmae_mask(rgb: np.ndarray, use_ocr: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray, ScanRegion]:
    """Masks of the ``usfmae`` method.

    Args:
        rgb: (H, W, 3) uint8 RGB.
        use_ocr: read candidate text lines inside the fan.

    Returns:
        ``(inside-fan marks, screen marks, fan, background level, chroma, scan region)``; masks are
        (H, W) bool, chroma (H, W) uint8 is max - min over the RGB channels.
    """
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    r, g, b = cv2.split(rgb)
    chroma = cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))  # numpy's axis=2 reduce is ~10x slower
    fan, screen, screen_bg, bg, region = detect_fan(gray, chroma)
    inside = colour_marks(rgb, chroma, fan) | gray_marks(gray, fan, screen_bg, screen, chroma)
    if use_ocr and inside.any():
        inside |= text_in_fan(gray, inside, fan, MAX_OCR_LINES if region.status != "unsure" else MAX_OCR_LINES_UNSURE)
    # Anti-aliased (or JPEG-blurred) rims of drawn marks are dimmer than the core: grow each mark
    # by one pixel into neighbours that are tinted or clearly brighter than the tissue around them.
    rim = cv2.dilate(inside.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~inside & fan
    if rim.any():
        local = cv2.blur(gray, (7, 7)).astype(np.int16)
        inside |= rim & ((chroma > CHROMA_MIN // 3) | (gray.astype(np.int16) > local + TOPHAT_MIN // 2))
    return inside, screen, fan, bg, chroma, region


def clean_usfmae(rgb: np.ndarray, use_ocr: bool = True) -> tuple[np.ndarray, np.ndarray, ScanRegion]:
    """Our annotation removal at native resolution.

    Args:
        rgb: (H, W, 3) uint8 RGB frame.
        use_ocr: read candidate text lines inside the fan with Tesseract.

    Returns:
        ``(cleaned (H, W, 3) uint8 RGB, mask (H, W) bool, scan region)``.
    """
    inside, screen, fan, bg, chroma, region = usfmae_mask(rgb, use_ocr)
    cleaned = rgb.copy()
    cleaned[screen] = bg
    if inside.any():
        colour_left = bool(np.any((chroma > CHROMA_MIN) & fan & ~inside))
        if colour_left:  # Doppler kept: fill in colour
            cleaned = _inpaint_groups(cleaned, inside)
        else:  # grey B-mode: one channel is a third of the work
            gray = _inpaint_groups(np.ascontiguousarray(cleaned[..., 1]), inside)
            cleaned = cv2.merge([gray, gray, gray])
    return cleaned, inside | screen, region
