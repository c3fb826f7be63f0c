"""Synthetic B-mode ultrasound phantom with burned-in scanner overlays and exact ground truth.

Image formation follows the physics a scanner goes through, in the scanner's own coordinates
(rows = depth samples along a beam, columns = beams), then scan-converts to the screen:

1. an echogenicity map of the anatomy (skin, fat with Cooper's ligaments, gland or organ
   parenchyma, muscle, vessels) and one lesion (benign oval or malignant spiculated mass);
2. a scatterer at every grid node with a circular complex Gaussian amplitude scaled by
   sqrt(echogenicity) (many scatterers per resolution cell: fully developed speckle), convolved
   with a separable Gaussian PSF whose lateral width grows away from the focal depth;
3. round-trip attenuation along each beam (tissue plus the lesion's extra attenuation, which casts
   a posterior shadow behind malignant masses and posterior enhancement behind fluid-like benign
   ones), receiver noise, time-gain compensation that only roughly undoes the attenuation;
4. envelope detection (Rayleigh speckle), log compression to a dynamic range, and scan
   conversion to a linear (rectangle) or convex (sector) fan on a black screen (``cv2.remap``).

Overlays (text, calipers, rulers, colour boxes) are drawn by :mod:`usfmae.phantom.overlays`
on a separate layer, so the overlay mask is exactly the set of changed pixels.

Example::

    from usfmae.phantom.generate import PhantomConfig, generate_sample, write_phantom_dataset
    s = generate_sample(seed=0, index=3, cfg=PhantomConfig(size=224))
    s.image.shape, s.clean.shape, s.label   # (224, 224, 3), (224, 224), 'malignant'
    write_phantom_dataset("phantom_set", n=100, seed=0, cfg=PhantomConfig())
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from usfmae.config import check, opt, to_dict
from usfmae.errors import ConfigError, DataError
from usfmae.fileio import atomic_path, ensure_output_dir, read_json, write_json
from usfmae.phantom.anatomy import BeamGrid, lesion_map, make_grid, tissue_map
from usfmae.phantom.overlays import composite, draw_overlays
from usfmae.runtime import progress_bar

log = logging.getLogger(__name__)

PHANTOM_CLASSES: tuple[str, ...] = ("benign", "malignant", "normal")
GEOMETRIES: tuple[str, ...] = ("linear", "convex")


@dataclass
class PhantomConfig:
    """Settings of the phantom simulator (every field is also a ``usfmae phantom`` flag)."""

    size: int = opt(224, "output image height and width in pixels")
    overlays: bool = opt(True, "burn scanner overlays (text, calipers, rulers, colour boxes) into the image")
    geometry: Literal["linear", "convex", "random"] = opt("random", "scan geometry: linear, convex or random per image")
    include_normal: bool = opt(False, "also make 'normal' images without a lesion")
    normal_fraction: float = opt(0.2, "share of 'normal' images when --include-normal is on")
    malignant_fraction: float = opt(0.5, "share of malignant among images with a lesion")
    contrast: float = opt(1.0, "lesion contrast (1 = typical; lower is harder, 0 = invisible by echogenicity)")
    lesion_size: float = opt(1.0, "lesion size multiplier (1 = typical)")
    noise: float = opt(1.0, "receiver noise multiplier (0 = none; higher is harder)")

    def __post_init__(self) -> None:
        check(32 <= self.size <= 2048, f"size must be between 32 and 2048 pixels, got {self.size}")
        check(self.geometry in ("linear", "convex", "random"),
              f"geometry must be linear, convex or random, got {self.geometry!r}")
        check(0.0 <= self.normal_fraction <= 1.0, f"normal_fraction must be in [0, 1], got {self.normal_fraction}")
        check(0.0 <= self.malignant_fraction <= 1.0,
              f"malignant_fraction must be in [0, 1], got {self.malignant_fraction}")
        check(0.0 <= self.contrast <= 2.0, f"contrast must be in [0, 2], got {self.contrast}")
        check(0.2 <= self.lesion_size <= 3.0, f"lesion_size must be in [0.2, 3], got {self.lesion_size}")
        check(0.0 <= self.noise <= 20.0, f"noise must be in [0, 20], got {self.noise}")


@dataclass
class PhantomSample:
    """One simulated frame and its ground truth (all arrays are (H, W) with H = W = ``cfg.size``)."""

    image: np.ndarray            # (H, W, 3) uint8 RGB as shown on screen, overlays burned in
    clean: np.ndarray            # (H, W) uint8 grayscale B-mode without overlays
    overlay_mask: np.ndarray     # (H, W) bool, exactly the pixels the overlays changed
    fan_mask: np.ndarray         # (H, W) bool, inside the scan sector
    lesion_mask: np.ndarray      # (H, W) bool, the lesion (all False for 'normal')
    label: str
    label_index: int
    geometry: str
    lesion_box: tuple[int, int, int, int] | None  # (x0, y0, x1, y1) inclusive-exclusive pixels
    depth_mm: float


@dataclass
class BMode:
    """Intermediates of one B-mode frame in beam coordinates (Nd depth samples x Nl beams)."""

    grid: BeamGrid
    echogenicity: np.ndarray     # (Nd, Nl) float32 backscatter power, tissue ~ 1
    speckle: np.ndarray          # (Nd, Nl) float32 envelope |PSF * scatterers| before attenuation/log
    envelope: np.ndarray         # (Nd, Nl) float32 detected envelope after attenuation, noise and TGC
    display: np.ndarray          # (Nd, Nl) uint8 log-compressed, before scan conversion
    lesion: np.ndarray           # (Nd, Nl) float32 lesion occupancy in [0, 1]


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of sample ``index``: depends on (seed, index) only, never on N or order."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 0x05F3AE]))


def _gauss_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / np.sqrt((k * k).sum())   # unit L2 norm: white noise keeps unit variance


def speckle_field(rng: np.random.Generator, amplitude: np.ndarray, axial_sigma: float,
                  lateral_sigma_focus: float, lateral_sigma_far: float, blend: np.ndarray) -> np.ndarray:
    """Complex echo field of random scatterers convolved with a depth-dependent Gaussian PSF.

    Args:
        rng: random generator.
        amplitude: (Nd, Nl) scatterer amplitude (sqrt of echogenicity).
        axial_sigma: PSF standard deviation along depth, in samples.
        lateral_sigma_focus: lateral PSF width at the focal depth, in beams.
        lateral_sigma_far: lateral PSF width far from focus, in beams.
        blend: (Nd,) weight in [0, 1] of the far-field PSF at each depth.

    Returns:
        (Nd, Nl, 2) float32 in-phase and quadrature components; for constant ``amplitude`` 1 each
        sample is circular complex Gaussian with E|z|^2 = 1, so |z| is Rayleigh (mean/std 1.91).
    """
    nd, nl = amplitude.shape
    z = rng.standard_normal((nd, nl, 2), dtype=np.float32) * np.float32(math.sqrt(0.5))
    z *= amplitude[..., None].astype(np.float32)
    ka = _gauss_kernel(axial_sigma)
    k1, k2 = _gauss_kernel(lateral_sigma_focus), _gauss_kernel(lateral_sigma_far)
    near = cv2.sepFilter2D(z, cv2.CV_32F, k1, ka, borderType=cv2.BORDER_REFLECT)
    far = cv2.sepFilter2D(z, cv2.CV_32F, k2, ka, borderType=cv2.BORDER_REFLECT)
    # Correlation of the two filtered fields, so the depth blend keeps unit variance exactly.
    pad = (len(k2) - len(k1)) // 2
    a, b = (np.pad(k1, (pad, pad)), k2) if pad >= 0 else (k1, np.pad(k2, (-pad, -pad)))
    rho = math.fsum((a * b).tolist())            # exact, order-independent sum: deterministic
    w = blend.astype(np.float64)
    norm = np.sqrt((1 - w) ** 2 + w ** 2 + 2 * w * (1 - w) * rho)
    near *= ((1 - w) / norm).astype(np.float32)[:, None, None]
    far *= (w / norm).astype(np.float32)[:, None, None]
    near += far
    return near


def _magnitude(iq: np.ndarray) -> np.ndarray:
    """(Nd, Nl) envelope |I + jQ| of an (Nd, Nl, 2) IQ field.

    numpy, not ``cv2.magnitude``: the latter's result was seen to differ in the last bit between
    calls on equal inputs, which would break byte-exact determinism.
    """
    i, q = iq[..., 0], iq[..., 1]
    return np.sqrt(i * i + q * q)


def simulate_bmode(rng: np.random.Generator, cfg: PhantomConfig, geometry: str, label: str) -> BMode:
    """Form one B-mode frame in beam coordinates (see the module docstring for the steps)."""
    grid = make_grid(rng, cfg.size, geometry)
    echo, tissue_alpha = tissue_map(rng, grid)
    lesion = np.zeros(grid.shape, np.float32)
    lesion_alpha = np.zeros(grid.shape, np.float32)
    if label != "normal":
        echo, lesion, lesion_alpha = lesion_map(rng, grid, echo, label, cfg.contrast, cfg.lesion_size)

    # 2. Scatterers through a PSF that is sharpest at the focal depth.
    depth_frac = np.linspace(0.0, 1.0, grid.nd, dtype=np.float32)
    focus = rng.uniform(0.35, 0.65)
    blend = np.clip(np.abs(depth_frac - focus) / 0.45, 0.0, 1.0)
    iq = speckle_field(rng, np.sqrt(echo), rng.uniform(0.7, 1.1), rng.uniform(1.4, 2.0),
                       rng.uniform(3.0, 4.5), blend)
    speckle = _magnitude(iq)

    # 3. Attenuation along each beam (columns): tissue loss (dB over the full depth) plus the
    # lesion's own extra attenuation integrated from the skin down, so what lies behind a
    # lesion is darker (shadow, alpha > 0) or brighter (enhancement, alpha < 0).
    atten_db = rng.uniform(25.0, 45.0)
    log_gain = np.cumsum(tissue_alpha + lesion_alpha, axis=0)
    log_gain += np.float32(atten_db / 20.0 * math.log(10)) * depth_frac[:, None]
    iq *= np.exp(-log_gain)[..., None]
    noise_amp = cfg.noise * 10.0 ** (-(atten_db + 8.0) / 20.0)
    iq += rng.standard_normal(iq.shape, dtype=np.float32) * np.float32(noise_amp * math.sqrt(0.5))
    # TGC undoes the average loss only roughly: a mis-set slope and slider-shaped bumps.
    tgc_db = (atten_db + rng.uniform(-6.0, 6.0)) * depth_frac
    sliders = rng.uniform(-2.5, 2.5, 6)
    tgc_db = tgc_db + np.interp(depth_frac, np.linspace(0, 1, 6), sliders)
    tgc = (10.0 ** (tgc_db / 20.0)).astype(np.float32)
    envelope = _magnitude(iq) * tgc[:, None]

    # 4. Log compression: [gain - dynamic range, gain] dB -> [0, 255].
    dyn_range = rng.uniform(45.0, 58.0)
    top = rng.uniform(22.0, 27.0)
    db = 20.0 * np.log10(envelope + 1e-6)
    display = np.clip((db - (top - dyn_range)) * (255.0 / dyn_range), 0, 255).astype(np.uint8)
    return BMode(grid, echo, speckle, envelope, display, lesion)


def _choose(rng: np.random.Generator, cfg: PhantomConfig) -> tuple[str, str]:
    """Draw the label and the geometry first, so they use the same random numbers for any settings."""
    u_normal, u_malig, u_geom = rng.random(3)
    if cfg.include_normal and u_normal < cfg.normal_fraction:
        label = "normal"
    else:
        label = "malignant" if u_malig < cfg.malignant_fraction else "benign"
    geometry = cfg.geometry if cfg.geometry != "random" else GEOMETRIES[int(u_geom < 0.5)]
    return label, geometry


def generate_sample(seed: int, index: int, cfg: PhantomConfig | None = None) -> PhantomSample:
    """Simulate sample ``index`` of the phantom set ``seed`` (deterministic in (seed, index, cfg))."""
    cfg = cfg or PhantomConfig()
    rng = sample_rng(seed, index)
    label, geometry = _choose(rng, cfg)
    bmode = simulate_bmode(rng, cfg, geometry, label)
    map_x, map_y, fan = bmode.grid.screen_maps
    clean = cv2.remap(bmode.display, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    clean[~fan] = 0
    lesion_screen = cv2.remap(bmode.lesion, map_x, map_y, cv2.INTER_LINEAR, borderValue=0)
    lesion_mask = (lesion_screen >= 0.5) & fan
    box = None
    if lesion_mask.any():
        ys, xs = np.nonzero(lesion_mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    # The overlay generator gets its own stream, so switching overlays on/off never changes the clean image.
    overlay_rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 0x0E1A7]))
    if cfg.overlays:
        layer = draw_overlays(overlay_rng, bmode.grid, box, label)
        image, overlay_mask = composite(clean, layer)
    else:
        image = np.repeat(clean[..., None], 3, axis=2)
        overlay_mask = np.zeros(clean.shape, bool)
    return PhantomSample(image=image, clean=clean, overlay_mask=overlay_mask, fan_mask=fan,
                         lesion_mask=lesion_mask, label=label, label_index=PHANTOM_CLASSES.index(label),
                         geometry=geometry, lesion_box=box, depth_mm=float(bmode.grid.depth_mm))


def _manifest_schema():
    import pyarrow as pa  # imported here: keeps `import usfmae.phantom.generate` light

    return pa.schema([("id", pa.string()), ("path", pa.string()), ("label", pa.string()),
                      ("label_index", pa.int64()), ("geometry", pa.string()),
                      ("lesion_x0", pa.int64()), ("lesion_y0", pa.int64()),
                      ("lesion_x1", pa.int64()), ("lesion_y1", pa.int64()),
                      ("mask_path", pa.string()), ("clean_path", pa.string()),
                      ("seed", pa.int64()), ("index", pa.int64()), ("depth_mm", pa.float64()),
                      ("lesion_mask_path", pa.string())])


def _write_png(path: Path, array: np.ndarray) -> None:
    """Encode ``array`` (grey or RGB) to PNG atomically (a stopped run never leaves half a file)."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), array):
            raise DataError(f"{path}: could not write PNG")


def _check_out_dir(out_dir: Path, cfg: PhantomConfig, seed: int) -> None:
    """Create ``out_dir`` or fail with one line; refuse to mix sets made with other settings."""
    ensure_output_dir(out_dir)
    saved = out_dir / "phantom.json"
    if saved.exists():
        try:
            previous = read_json(saved)
        except (OSError, ValueError):
            previous = None
        if previous != {"seed": int(seed), "config": to_dict(cfg)}:
            raise DataError(f"{out_dir}: holds a phantom set made with other settings or seed; use a new --out")


def write_phantom_dataset(out_dir: str | os.PathLike, n: int, seed: int = 0, cfg: PhantomConfig | None = None,
                          progress: bool = True) -> Path:
    """Generate ``n`` samples and write them with their ground truth and a Parquet manifest.

    Layout: ``images/<id>.png`` (RGB, overlays burned in), ``clean/<id>.png`` (grey, no overlays),
    ``masks/<id>.png`` (255 = overlay pixel), ``lesion_masks/<id>.png`` (255 = lesion pixel: the
    exact segmentation truth; all 0 for 'normal'), ``manifest.parquet``, ``phantom.json`` (seed,
    settings).
    Images stream to disk one at a time (memory is flat in ``n``); manifest rows are written in
    row groups. Re-running into the same folder skips images already written (resume).

    Args:
        out_dir: output folder (created).
        n: number of images (>= 0).
        seed: dataset seed; sample ``i`` depends on (seed, i) only.
        cfg: simulator settings.
        progress: show a tqdm progress bar.

    Returns:
        Path of ``manifest.parquet``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    cfg = cfg or PhantomConfig()
    if int(n) < 0:
        raise ConfigError(f"n must be zero or positive, got {n}")
    out = Path(out_dir)
    _check_out_dir(out, cfg, seed)
    write_json(out / "phantom.json", {"seed": int(seed), "config": to_dict(cfg)})
    for sub in ("images", "clean", "masks", "lesion_masks"):
        (out / sub).mkdir(exist_ok=True)
    schema = _manifest_schema()
    manifest = out / "manifest.parquet"
    rows: list[dict] = []
    skipped = 0
    with atomic_path(manifest) as tmp:
        writer = pq.ParquetWriter(str(tmp), schema)
        try:
            for index in progress_bar(range(int(n)), desc="phantom", unit="img", enabled=progress):
                sample = generate_sample(seed, index, cfg)
                sid = f"s{seed}_{index:07d}"
                paths = {k: f"{k}/{sid}.png" for k in ("images", "clean", "masks", "lesion_masks")}
                if all((out / p).exists() for p in paths.values()):
                    skipped += 1          # written by an earlier (interrupted) run: same bytes
                else:
                    _write_png(out / paths["images"], sample.image)
                    _write_png(out / paths["clean"], sample.clean)
                    _write_png(out / paths["masks"], sample.overlay_mask.astype(np.uint8) * 255)
                    _write_png(out / paths["lesion_masks"], sample.lesion_mask.astype(np.uint8) * 255)
                box = sample.lesion_box or (None,) * 4
                rows.append({"id": sid, "path": paths["images"], "label": sample.label,
                             "label_index": sample.label_index, "geometry": sample.geometry,
                             "lesion_x0": box[0], "lesion_y0": box[1], "lesion_x1": box[2], "lesion_y1": box[3],
                             "mask_path": paths["masks"], "clean_path": paths["clean"], "seed": int(seed),
                             "index": index, "depth_mm": round(sample.depth_mm, 3),
                             "lesion_mask_path": paths["lesion_masks"]})
                if len(rows) >= 4096:
                    writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                    rows.clear()
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
        finally:
            writer.close()
    if skipped:
        log.info("resumed: %d of %d images were already written", skipped, n)
    return manifest


def contact_sheet(path: str | os.PathLike, seed: int = 0, size: int = 224, per_class: int = 2,
                  cfg: PhantomConfig | None = None) -> Path:
    """Write a labelled grid PNG: rows linear/convex x with/without overlays, columns benign/malignant.

    The same sample appears with and without overlays (overlays use their own random stream), so
    the sheet also shows what annotation removal has to undo.

    Returns:
        ``path``.
    """
    base = cfg or PhantomConfig(size=size)
    strip = max(14, size // 14)
    rows = []
    for geometry in GEOMETRIES:
        for overlays in (True, False):
            tiles = []
            for label, fraction in (("benign", 0.0), ("malignant", 1.0)):
                tile_cfg = dataclasses.replace(base, size=size, geometry=geometry, overlays=overlays,
                                               include_normal=False, malignant_fraction=fraction)
                for index in range(per_class):
                    sample = generate_sample(seed, index, tile_cfg)
                    caption = np.zeros((strip, size, 3), np.uint8)
                    text = f"{label} | {geometry} | {'overlays' if overlays else 'clean'}"
                    cv2.putText(caption, text, (4, strip - 4), cv2.FONT_HERSHEY_SIMPLEX, strip / 36,
                                (255, 255, 255), 1, cv2.LINE_AA)
                    tile = np.vstack([caption, sample.image])
                    tiles.append(np.pad(tile, ((2, 2), (2, 2), (0, 0)), constant_values=60))
            rows.append(np.hstack(tiles))
    path = Path(path)
    _write_png(path, np.vstack(rows))
    return path

