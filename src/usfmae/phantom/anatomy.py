"""Anatomy of the phantom: scan geometry, tissue echogenicity and the lesion, in beam coordinates.

A :class:`BeamGrid` holds the physical position (mm) of every sample of every beam, so the tissue
and the lesion are defined in the patient's space (a lesion keeps its shape in a convex sector)
while attenuation is integrated along the beams (grid columns), as a scanner receives it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

# Screen layout (fractions of the image side): room for text above, rulers and bars at the sides.
TOP, BOTTOM, SIDE = 0.10, 0.04, 0.14


@dataclass
class BeamGrid:
    """Scan geometry of one frame: Nd depth samples x Nl beams and where they land on screen."""

    size: int                 # screen side in pixels
    geometry: str             # "linear" or "convex"
    nd: int
    nl: int
    depth_mm: float           # imaging depth along each beam
    width_mm: float           # linear: aperture width; convex: unused (0)
    radius_mm: float          # convex: probe radius of curvature; linear: 0
    half_angle: float         # convex: half sector angle (rad); linear: 0
    mm_per_px: float
    origin: tuple[float, float]  # linear: fan top-left corner (px); convex: sector apex (px)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.nd, self.nl)

    @cached_property
    def depth(self) -> np.ndarray:
        """(Nd,) float32 depth of each sample along its beam, mm from the skin."""
        return ((np.arange(self.nd, dtype=np.float32) + 0.5) * (self.depth_mm / self.nd)).astype(np.float32)

    @cached_property
    def xy(self) -> tuple[np.ndarray, np.ndarray]:
        """(Nd, Nl) float32 lateral x and depth y (mm) of every sample; y is 0 at the central skin point."""
        t = (np.arange(self.nl, dtype=np.float32) + 0.5) / self.nl
        if self.geometry == "linear":
            x = np.broadcast_to(((t - 0.5) * self.width_mm)[None, :], self.shape)
            y = np.broadcast_to(self.depth[:, None], self.shape)
            return np.ascontiguousarray(x), np.ascontiguousarray(y)
        theta = (t * 2.0 - 1.0) * self.half_angle
        r = self.radius_mm + self.depth[:, None]
        return (r * np.sin(theta)[None, :]).astype(np.float32), (r * np.cos(theta)[None, :] - self.radius_mm).astype(np.float32)

    @cached_property
    def screen_maps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``cv2.remap`` maps (H, W) float32 from screen pixels to (beam, sample), and the fan mask."""
        s = self.size
        v, u = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
        if self.geometry == "linear":
            fx = (u - self.origin[0]) * (self.mm_per_px / self.width_mm) * self.nl - 0.5
            fy = (v - self.origin[1]) * (self.mm_per_px / self.depth_mm) * self.nd - 0.5
        else:
            dx = (u - self.origin[0]) * self.mm_per_px
            dy = (v - self.origin[1]) * self.mm_per_px
            fx = (np.arctan2(dx, dy) / self.half_angle + 1.0) * 0.5 * self.nl - 0.5
            fy = (np.hypot(dx, dy) - self.radius_mm) / self.depth_mm * self.nd - 0.5
        fan = (fx >= -0.5) & (fx <= self.nl - 0.5) & (fy >= -0.5) & (fy <= self.nd - 0.5)
        return fx.astype(np.float32), fy.astype(np.float32), fan

    def to_screen(self, x_mm: np.ndarray | float, y_mm: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Screen pixel coordinates (u, v) of physical points (x lateral, y depth below the central skin)."""
        x_mm, y_mm = np.asarray(x_mm, np.float64), np.asarray(y_mm, np.float64)
        if self.geometry == "linear":
            return (self.origin[0] + (x_mm + self.width_mm / 2) / self.mm_per_px,
                    self.origin[1] + y_mm / self.mm_per_px)
        return (self.origin[0] + x_mm / self.mm_per_px,
                self.origin[1] + (y_mm + self.radius_mm) / self.mm_per_px)

    @cached_property
    def fan_box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) pixel bounding box of the fan."""
        ys, xs = np.nonzero(self.screen_maps[2])
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def make_grid(rng: np.random.Generator, size: int, geometry: str) -> BeamGrid:
    """Draw a probe (linear: small parts, 3-6 cm; convex: abdominal, 7-16 cm) and lay it out on screen."""
    avail_h = size * (1 - TOP - BOTTOM)
    avail_w = size * (1 - 2 * SIDE) if geometry == "linear" else size * (1 - 0.8 * SIDE)  # sectors: wider
    if geometry == "linear":
        depth, width = rng.uniform(35.0, 60.0), rng.uniform(35.0, 46.0)
        mmpp = max(depth / avail_h, width / avail_w)
        origin = ((size - width / mmpp) / 2, size * TOP)
        return BeamGrid(size, geometry, size, size, depth, width, 0.0, 0.0, mmpp, origin)
    radius, depth, half = rng.uniform(40.0, 60.0), rng.uniform(80.0, 160.0), rng.uniform(0.38, 0.56)
    box_h = radius + depth - radius * math.cos(half)
    box_w = 2 * (radius + depth) * math.sin(half)
    mmpp = max(box_h / avail_h, box_w / avail_w)
    origin = (size / 2, size * TOP - radius * math.cos(half) / mmpp)
    return BeamGrid(size, geometry, size, size, depth, 0.0, radius, half, mmpp, origin)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 smooth random field of about unit std with ``cells`` (rows, cols) bumps."""
    coarse = rng.standard_normal((cells[0] + 2, cells[1] + 2), dtype=np.float32)
    field = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return field / max(float(field.std()), 1e-6)


def _boundary(rng: np.random.Generator, x: np.ndarray, base: float, amp: float) -> np.ndarray:
    """Wavy interface depth (mm) at lateral positions ``x`` (mm): a few random sinusoids."""
    out = np.full(x.shape, base, np.float32)
    for wavelength in rng.uniform(20.0, 90.0, 3):
        out += amp * rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * x / wavelength + rng.uniform(0, 2 * np.pi))
    return out


def _band(d: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    return (d >= top) & (d < bottom)


def tissue_map(rng: np.random.Generator, grid: BeamGrid) -> tuple[np.ndarray, np.ndarray]:
    """Echogenicity (backscatter power, parenchyma ~ 1) and extra attenuation of the background tissue.

    Linear probes image a breast-like stack (skin, fat with Cooper's ligaments, glandular layer,
    retromammary fat, striated pectoral muscle); convex probes an abdomen-like one (skin, fat,
    abdominal wall muscle, liver-like parenchyma with vessels, sometimes a bright diaphragm).

    Returns:
        echo: (Nd, Nl) float32 >= 0.
        alpha: (Nd, Nl) float32 log-amplitude loss per sample (negative in fluid: enhancement).
    """
    shape, depth = grid.shape, grid.depth_mm
    x, y = grid.xy
    d = np.broadcast_to(grid.depth[:, None], shape)          # depth along the beam (mm from skin)
    xl = x[0]                                                   # lateral position at the skin
    alpha = np.zeros(shape, np.float32)
    skin = rng.uniform(1.2, 2.5)
    fine = smooth_field(rng, shape, (24, 18))
    coarse = smooth_field(rng, shape, (5, 4))
    if grid.geometry == "linear":
        b1 = _boundary(rng, xl, depth * rng.uniform(0.12, 0.25), depth * 0.04)
        b2 = _boundary(rng, xl, depth * rng.uniform(0.62, 0.78), depth * 0.05)
        b3 = b2 + depth * rng.uniform(0.05, 0.1)
        echo = np.full(shape, rng.uniform(0.3, 0.45), np.float32)            # pectoral muscle
        angle = rng.uniform(-0.5, 0.5)
        stri = np.sin(2 * np.pi * (d * math.cos(angle) + x * math.sin(angle)) / rng.uniform(1.5, 3.0))
        echo *= 1 + 2.5 * np.maximum(stri, 0) ** 6
        fat = np.float32(rng.uniform(0.08, 0.16))
        ligaments = np.exp(-(fine / 0.12) ** 2) * (1.2 + coarse * 0.3)   # contour lines = curved septa
        sub = _band(d, skin, b1)
        echo[sub] = (fat * (1 + 0.3 * coarse) + ligaments)[sub]
        gland = _band(d, b1, b2)
        islands = np.where(coarse + 0.5 * fine > 1.3, 0.2, 1.0)               # fat lobules in gland
        echo[gland] = (rng.uniform(0.8, 1.2) * np.exp(0.3 * fine) * islands)[gland]
        echo[_band(d, b2, b3)] = (fat * np.exp(0.2 * fine))[_band(d, b2, b3)]
        echo[np.abs(d - b1) < 0.6] *= 4.0                                    # superficial fascia
        echo[np.abs(d - b3) < 0.8] = 3.0                                     # pectoral fascia
    else:
        b1 = _boundary(rng, xl, depth * rng.uniform(0.08, 0.15), depth * 0.02)
        b2 = b1 + depth * rng.uniform(0.06, 0.12)
        echo = (rng.uniform(0.6, 0.95) * np.exp(0.18 * fine + 0.12 * coarse)).astype(np.float32)  # liver-like
        sub = _band(d, skin, b1)
        echo[sub] = (rng.uniform(0.1, 0.2) * (1 + 0.3 * coarse) + 0.8 * np.exp(-(fine / 0.1) ** 2))[sub]
        wall = _band(d, b1, b2)
        stri = np.sin(2 * np.pi * d / rng.uniform(2.0, 4.0) + 0.05 * x)
        echo[wall] = (0.35 * (1 + 1.8 * np.maximum(stri, 0) ** 6))[wall]
        echo[(np.abs(d - b1) < 0.8) | (np.abs(d - b2) < 1.0)] = 2.5          # fascia lines
        for _ in range(rng.integers(1, 4)):                                  # vessels: anechoic, bright walls
            cx, cy = rng.uniform(-0.3, 0.3) * depth, rng.uniform(0.35, 0.85) * depth
            rx, ry = rng.uniform(2.0, 7.0), rng.uniform(2.0, 6.0)
            rho = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
            echo = np.where(rho < 1, 0.01, echo) + 2.0 * np.exp(-((rho - 1.05) / 0.08) ** 2)
            alpha -= (rho < 1) * (0.5 / (2 * ry * grid.nd / depth))          # fluid: mild enhancement
        if rng.random() < 0.5:                                               # diaphragm near the bottom
            dia = _boundary(rng, xl, depth * rng.uniform(0.85, 0.95), depth * 0.03)
            echo += 4.0 * np.exp(-((d - dia) / 1.2) ** 2)
    echo[d < skin] = rng.uniform(2.5, 4.0)                                   # skin entry echo
    return np.maximum(echo, 0.0).astype(np.float32), alpha


def lesion_map(rng: np.random.Generator, grid: BeamGrid, echo: np.ndarray, label: str, contrast: float,
               size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Insert one lesion: benign (oval, wider than tall, circumscribed, hypo/anechoic, enhancing)
    or malignant (taller than wide, spiculated, heterogeneous, with a halo, shadowing).

    Returns:
        echo: (Nd, Nl) float32 echogenicity with the lesion.
        occupancy: (Nd, Nl) float32 in [0, 1], 1 inside the lesion.
        alpha: (Nd, Nl) float32 extra log-amplitude loss per sample inside the lesion.
    """
    x, y = grid.xy
    depth = grid.depth_mm
    scale = size * (1.0 if grid.geometry == "linear" else 0.75)
    malignant = label == "malignant"
    if malignant:
        width = rng.uniform(0.16, 0.28) * depth * scale
        height = width * rng.uniform(1.15, 1.6)
    else:
        width = rng.uniform(0.22, 0.38) * depth * scale
        height = width / rng.uniform(1.35, 2.0)
    cy = rng.uniform(0.3, 0.6) * depth
    cy = float(np.clip(cy, 0.2 * depth + height / 2, 0.9 * depth - height / 2)) if height < 0.7 * depth else cy
    cx = rng.uniform(-0.25, 0.25) * (grid.width_mm or 2 * (grid.radius_mm + cy) * math.sin(grid.half_angle))
    tilt = rng.uniform(-0.25, 0.25)
    dx, dy = x - cx, y - cy
    u = (dx * math.cos(tilt) + dy * math.sin(tilt)) / (width / 2)
    v = (-dx * math.sin(tilt) + dy * math.cos(tilt)) / (height / 2)
    rho = np.sqrt(u * u + v * v)
    near = rho < 2.5                                 # shape maths only where it can matter
    # The margin radius is a function of the polar angle only: tabulate it once, then look it up.
    table = np.linspace(-np.pi, np.pi, 721, dtype=np.float32)
    radius = np.ones(table.shape, np.float32)
    if malignant:                                    # angular, irregular margin with spicules
        for k in range(3, 9):
            radius += rng.uniform(0.02, 0.07) * np.cos(k * table + rng.uniform(0, 2 * np.pi))
        for centre in rng.uniform(-np.pi, np.pi, rng.integers(5, 13)):
            wrapped = (table - centre + np.pi) % (2 * np.pi) - np.pi
            radius += rng.uniform(0.25, 0.8) * np.exp(-(wrapped / rng.uniform(0.05, 0.1)) ** 2)
        edge = 0.15
    else:                                            # smooth, at most gently lobulated
        for k in (2, 3):
            radius += rng.uniform(0.0, 0.05) * np.cos(k * table + rng.uniform(0, 2 * np.pi))
        edge = 0.04
    phi = np.arctan2(v[near], u[near])
    margin = radius[np.rint((phi + np.pi) * (360 / np.pi)).astype(np.intp)]
    occ = np.zeros(echo.shape, np.float32)
    occ[near] = np.clip((margin - rho[near]) / edge + 0.5, 0.0, 1.0)
    gap = rho[near] - margin                         # signed margin coordinate (0 on the margin)

    tex_cells = (max(4, int(grid.nd * height / depth / 4)), max(4, int(grid.nl * 0.1)))
    if malignant:
        ratio = rng.uniform(0.04, 0.15)
        texture = np.exp(0.7 * smooth_field(rng, echo.shape, tex_cells))
        total_loss = rng.uniform(1.0, 2.2)           # nepers across the lesion: posterior shadow
    elif rng.random() < 0.45:                        # simple cyst: anechoic
        ratio, texture, total_loss = rng.uniform(0.001, 0.006), 1.0, -rng.uniform(0.5, 1.0)
    else:                                            # solid benign (fibroadenoma-like): homogeneous
        ratio = rng.uniform(0.06, 0.18)
        texture = np.exp(0.12 * smooth_field(rng, echo.shape, tex_cells))
        total_loss = -rng.uniform(0.2, 0.6)
    level = max(1.0 - contrast * (1.0 - ratio), 0.005)
    out = echo * (1.0 - occ * (1.0 - level * texture))
    if malignant and rng.random() < 0.6:             # echogenic halo just outside the margin
        out[near] *= 1.0 + 1.2 * contrast * np.exp(-((gap - 0.12) / 0.08) ** 2)
    if malignant and rng.random() < 0.5:             # microcalcifications: a few bright points
        inside = np.flatnonzero(occ > 0.9)
        if inside.size:
            out.flat[rng.choice(inside, size=min(inside.size, int(rng.integers(3, 9))), replace=False)] += 25.0 * contrast
    if not malignant and rng.random() < 0.5:         # thin echogenic capsule
        out[near] += 0.8 * contrast * np.exp(-(gap / 0.03) ** 2)
    alpha = occ * np.float32(total_loss * min(contrast, 1.5) / (height * grid.nd / depth))
    if not malignant and rng.random() < 0.6:         # refraction at the curved sides: thin edge shadows
        sides = (np.abs(gap) < 0.06) & (np.abs(u[near]) > 0.9 * margin)
        alpha[near] += sides * np.float32(rng.uniform(0.02, 0.05) * min(contrast, 1.5))
    return np.maximum(out, 0.0).astype(np.float32), occ, alpha.astype(np.float32)
