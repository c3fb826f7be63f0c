"""Scanner-screen overlays for the phantom: text, calipers, rulers, arrows, colour boxes.

Everything is drawn without anti-aliasing onto a separate RGBA layer (alpha 0 or 255), then
composited over the clean image, so the overlay mask is exact: a pixel is in the mask if and only if
an overlay changed it. A drawn pixel whose colour happens to equal the grey below is nudged by one
grey level, so "drawn" and "changed" are the same set.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from usfmae.phantom.anatomy import BeamGrid

PIL_FONT = -1   # Pillow's bundled TrueType font (same glyphs on every machine), drawn without anti-aliasing
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX,
         cv2.FONT_HERSHEY_COMPLEX_SMALL, cv2.FONT_HERSHEY_TRIPLEX, PIL_FONT)
WHITE, GREY = (235, 235, 235), (170, 170, 170)
COLOURS = ((255, 255, 0), (0, 255, 0), (0, 220, 255), (255, 160, 0), (255, 80, 200))  # yellow, green, cyan, orange, pink
PROBES = {"linear": (("L12-5", "Breast"), ("L15-7io", "Small Parts"), ("ML6-15", "Thyroid"), ("L11-3", "MSK")),
          "convex": (("C5-1", "Abdomen"), ("C1-6", "OB/GYN"), ("C5-2", "Renal"), ("4C1", "Pelvis"))}
SITES = {"linear": ("RT BREAST 10:00", "LT BREAST 2:00", "RT BR 3CM FN", "LT AXILLA", "THYROID RT"),
         "convex": ("LIVER", "RT KIDNEY", "LT OVARY", "UTERUS SAG", "RUQ")}


class Layer:
    """An RGBA canvas with drawing helpers that always write alpha 255 and never anti-alias."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.rgba = np.zeros((size, size, 4), np.uint8)
        self.size = size
        self.rng = rng

    def text(self, text: str, org: tuple[int, int], font: int, height: float, colour, thick: int = 1) -> int:
        """Draw ``text`` with its baseline-left at ``org`` and cap height ~``height`` px; return its width."""
        if font == PIL_FONT:
            return self._pil_text(text, org, height, colour)
        (_, base_h), _ = cv2.getTextSize("0", font, 1.0, 1)
        scale = max(height / base_h, 0.2)
        cv2.putText(self.rgba, text, org, font, scale, (*colour, 255), thick, cv2.LINE_8)
        return cv2.getTextSize(text, font, scale, thick)[0][0]

    def _pil_text(self, text: str, org: tuple[int, int], height: float, colour) -> int:
        font = _pil_font(max(6, int(round(height * 1.25))))
        ascent, descent = font.getmetrics()
        width = max(1, int(font.getlength(text)) + 1)
        canvas = Image.new("L", (width, ascent + descent))
        draw = ImageDraw.Draw(canvas)
        draw.fontmode = "1"                     # binary glyphs: every drawn pixel is fully opaque
        draw.text((0, ascent), text, fill=255, font=font, anchor="ls")
        glyphs = np.asarray(canvas) > 0
        x0, y0 = org[0], org[1] - ascent
        # Clip the glyph box to the screen.
        gx0, gy0 = max(0, -x0), max(0, -y0)
        gx1, gy1 = min(width, self.size - x0), min(ascent + descent, self.size - y0)
        if gx1 > gx0 and gy1 > gy0:
            region = self.rgba[y0 + gy0:y0 + gy1, x0 + gx0:x0 + gx1]
            region[glyphs[gy0:gy1, gx0:gx1]] = (*colour, 255)
        return width

    def line(self, p, q, colour, thick: int = 1) -> None:
        cv2.line(self.rgba, _pt(p), _pt(q), (*colour, 255), thick, cv2.LINE_8)

    def dotted(self, p, q, colour, step: int = 3) -> None:
        """A dotted measurement line: single pixels (or 2x2 dots) every ``step`` px."""
        n = max(int(math.hypot(q[0] - p[0], q[1] - p[1]) / step), 1)
        for t in np.linspace(0.0, 1.0, n + 1):
            x, y = _pt((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
            self.rgba[max(y, 0):y + 1, max(x, 0):x + 1] = (*colour, 255)

    def cross(self, c, arm: int, colour, diagonal: bool = False) -> None:
        """A caliper mark: '+' or 'x' centred on ``c``."""
        x, y = _pt(c)
        if diagonal:
            self.line((x - arm, y - arm), (x + arm, y + arm), colour)
            self.line((x - arm, y + arm), (x + arm, y - arm), colour)
        else:
            self.line((x - arm, y), (x + arm, y), colour)
            self.line((x, y - arm), (x, y + arm), colour)


@lru_cache(maxsize=32)
def _pil_font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _pt(p) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def _status_text(layer: Layer, grid: BeamGrid, font: int, h: float) -> None:
    """Header lines (probe, preset, date, frame rate) and a parameter column (depth, gain, DR)."""
    rng, s = layer.rng, layer.size
    probe, preset = PROBES[grid.geometry][rng.integers(len(PROBES[grid.geometry]))]
    date = f"{rng.integers(2015, 2026)}/{rng.integers(1, 13):02d}/{rng.integers(1, 29):02d}"
    clock = f"{rng.integers(7, 19):02d}:{rng.integers(0, 60):02d}:{rng.integers(0, 60):02d}"
    hosp = ("ST MARY HOSP", "RADIOLOGY 2", "WOMENS CLINIC", "US ROOM 4")[rng.integers(4)]
    row = int(round(h * 1.7))
    x = int(s * 0.02)
    colour = WHITE if rng.random() < 0.7 else GREY
    layer.text(f"{hosp}  {date}", (x, row), font, h, colour)
    layer.text(f"{probe} {preset}  {clock}", (x, 2 * row), font, h, colour)
    params = [f"{grid.depth_mm / 10:.0f} cm" if rng.random() < 0.5 else f"D{grid.depth_mm / 10:.1f}cm",
              f"G{rng.integers(30, 80)}", f"FR {rng.integers(12, 60)}Hz", f"DR{rng.integers(50, 90)}",
              f"{rng.uniform(2.0, 15.0):.1f}MHz", f"MI {rng.uniform(0.2, 1.4):.1f}"]
    y = int(s * 0.3)
    for text in params[: rng.integers(3, len(params) + 1)]:
        layer.text(text, (x, y), font, h * 0.9, colour)
        y += row


def _depth_ruler(layer: Layer, grid: BeamGrid, font: int, h: float) -> None:
    """Tick marks every cm (small ones every 5 mm) right of the fan, numbered, plus a focus marker."""
    rng = layer.rng
    x0, _, x1, _ = grid.fan_box
    xr = min(x1 + 3, layer.size - 4)
    step = 5.0 if grid.depth_mm < 80 else 10.0
    colour = WHITE if rng.random() < 0.6 else GREY
    for depth in np.arange(0.0, grid.depth_mm + 1e-6, step):
        _, v = grid.to_screen(0.0, depth)
        major = round(depth) % 10 == 0
        layer.line((xr, v), (xr + (4 if major else 2), v), colour)
        every = 10 if grid.depth_mm < 80 else 50      # numbers every cm, or every 5 cm on deep presets
        if depth > 0 and round(depth) % every == 0:
            layer.text(f"{depth / 10:.0f}", (xr + 6, int(v + h / 2)), font, h * 0.8, colour)
    focus = rng.uniform(0.3, 0.7) * grid.depth_mm
    _, v = grid.to_screen(0.0, focus)
    tri = np.array([[xr - 1, v], [xr - 5, v - 3], [xr - 5, v + 3]], np.int32)
    cv2.fillPoly(layer.rgba, [tri], (*colour, 255), cv2.LINE_8)


def _grey_bar(layer: Layer) -> None:
    """A vertical greyscale bar (bright at the top) at the left edge, with a 1 px frame."""
    s = layer.size
    x0, y0 = int(s * 0.02), int(s * 0.58)
    w, h = max(3, int(s * 0.03)), max(8, int(s * 0.3))
    ramp = np.linspace(250, 8, h).astype(np.uint8)
    layer.rgba[y0:y0 + h, x0:x0 + w, :3] = ramp[:, None, None]
    layer.rgba[y0:y0 + h, x0:x0 + w, 3] = 255
    cv2.rectangle(layer.rgba, (x0 - 1, y0 - 1), (x0 + w, y0 + h), (*GREY, 255), 1, cv2.LINE_8)


def _measurements(layer: Layer, grid: BeamGrid, box: tuple[int, int, int, int] | None, font: int, h: float) -> None:
    """Calipers across the lesion (or a random structure), dotted lines, readouts, arrow, ROI box."""
    rng, s = layer.rng, layer.size
    fx0, fy0, fx1, fy1 = grid.fan_box
    if box is None:                                      # 'normal': measure something plausible
        cx, cy = rng.uniform(fx0 + 0.3 * (fx1 - fx0), fx1 - 0.3 * (fx1 - fx0)), rng.uniform(fy0 + 0.3 * (fy1 - fy0), fy1 - 0.3 * (fy1 - fy0))
        bw, bh = rng.uniform(0.1, 0.25) * s, rng.uniform(0.08, 0.2) * s
        box = (int(cx - bw / 2), int(cy - bh / 2), int(cx + bw / 2), int(cy + bh / 2))
    x0, y0, x1, y1 = box
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    caliper = COLOURS[0] if rng.random() < 0.5 else WHITE
    arm = max(2, int(s * 0.012))
    diagonal = rng.random() < 0.4
    if rng.random() < 0.85:
        pairs = [((x0, ym), (x1, ym)), ((xm, y0), (xm, y1))][: rng.integers(1, 3)]
        for n, (p, q) in enumerate(pairs, start=1):
            layer.cross(p, arm, caliper, diagonal)
            layer.cross(q, arm, caliper, diagonal)
            if rng.random() < 0.8:
                layer.dotted(p, q, caliper, step=max(2, s // 75))
            length_cm = math.hypot(q[0] - p[0], q[1] - p[1]) * grid.mm_per_px / 10
            layer.text(f"{n} D {length_cm:.2f}cm", (int(s * 0.05), int(s * (0.985 - 0.05 * (len(pairs) - n)))),
                       font, h * 0.9, caliper)
    if rng.random() < 0.6:                               # arrow pointing at the lesion
        ang = rng.uniform(0, 2 * math.pi)
        tip = (xm + math.cos(ang) * (x1 - x0) * 0.6, ym + math.sin(ang) * (y1 - y0) * 0.6)
        tail = (tip[0] + math.cos(ang) * s * 0.12, tip[1] + math.sin(ang) * s * 0.12)
        cv2.arrowedLine(layer.rgba, _pt(tail), _pt(tip), (*WHITE, 255), 1, cv2.LINE_8, tipLength=0.3)
    if rng.random() < 0.5:                               # colour ROI box (e.g. a Doppler box)
        colour = COLOURS[rng.integers(len(COLOURS))]
        pad = rng.uniform(0.02, 0.08) * s
        cv2.rectangle(layer.rgba, _pt((x0 - pad, y0 - pad)), _pt((x1 + pad, y1 + pad)), (*colour, 255),
                      1 + int(rng.random() < 0.3), cv2.LINE_8)


def draw_overlays(rng: np.random.Generator, grid: BeamGrid, box: tuple[int, int, int, int] | None,
                  label: str) -> np.ndarray:
    """Draw a random scanner screen's overlays for one frame.

    Args:
        rng: the overlay random stream (separate from the image's).
        grid: the frame's scan geometry (fan position, depth, pixel size).
        box: lesion box (x0, y0, x1, y1) in screen pixels, or None.
        label: class name (not drawn; kept for future per-class annotation styles).

    Returns:
        (H, W, 4) uint8 RGBA layer; alpha is 255 exactly where something was drawn.
    """
    del label
    layer = Layer(grid.size, rng)
    s = grid.size
    font = FONTS[rng.integers(len(FONTS))]
    h = s * rng.uniform(0.022, 0.032)                    # cap height: 5-7 px at 224
    _status_text(layer, grid, font, h)
    if rng.random() < 0.8:
        _depth_ruler(layer, grid, FONTS[rng.integers(len(FONTS))], h)
    if rng.random() < 0.7:
        _grey_bar(layer)
    _measurements(layer, grid, box, font, h)
    if rng.random() < 0.7:                               # coloured body-site annotation inside the fan
        fx0, fy0, fx1, fy1 = grid.fan_box
        site = SITES[grid.geometry][rng.integers(len(SITES[grid.geometry]))]
        org = (int(rng.uniform(fx0, fx0 + 0.4 * (fx1 - fx0))), int(rng.uniform(fy1 - 0.2 * (fy1 - fy0), fy1 - 2)))
        layer.text(site, org, FONTS[rng.integers(len(FONTS))], h * rng.uniform(0.9, 1.3),
                   COLOURS[rng.integers(len(COLOURS))])
    return layer.rgba


def composite(clean: np.ndarray, layer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Burn an RGBA overlay layer into a grey image.

    Args:
        clean: (H, W) uint8 grey B-mode.
        layer: (H, W, 4) uint8 RGBA from :func:`draw_overlays`.

    Returns:
        image: (H, W, 3) uint8 RGB; mask: (H, W) bool, True exactly where image != clean.
    """
    mask = layer[..., 3] > 0
    image = np.repeat(clean[..., None], 3, axis=2)
    drawn = layer[..., :3][mask]
    below = image[mask]
    same = (drawn == below).all(axis=1)
    # Nudge a drawn pixel that equals the grey below by one level, so it still counts as changed.
    drawn[same] = np.where(drawn[same] > 0, drawn[same] - 1, 1).astype(np.uint8)
    image[mask] = drawn
    return image, mask
