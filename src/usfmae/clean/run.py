"""Annotation removal: shared entry points, output resizing and the batch runner behind ``usfmae clean``.

Two methods share one interface (:func:`remove_annotations`):

- ``paper`` (:mod:`usfmae.clean.paper`): the USF-MAE pipeline as published, for reproduction;
- ``usfmae`` (:mod:`usfmae.clean.scan_aware`, the default): scan-fan aware, keeps colour Doppler
  inside the fan, leaves small anatomy alone, and is several times faster.

Both work on the native-resolution frame; then the training image is made (``paper``:
:func:`resize_output`, nearest-neighbour stretch, as the reference; ``usfmae``:
:func:`usfmae.imaging.fit`, the fit of every stage: area interpolation, aspect kept by padding or
stretched on request).

Batch layout written by :func:`run_clean` under ``out``::

    images/<id>.png      cleaned frame (grayscale PNG unless colour survived cleaning)
    masks/<id>.png       removed pixels (255), same geometry as the image
    manifest.parquet     id, path, mask_path, source, method, width, height, mask_fraction,
                         scan_status, scan_reason, residual_words, residual_text, seconds
    rejects.jsonl        unreadable or failed inputs, one line each
    contact_sheet.png    original | mask overlay | cleaned for a sample
    clean_config.yaml    the resolved settings
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from usfmae import imaging
from usfmae.clean.inputs import list_inputs
from usfmae.clean.manifest import done_index, manifest_writer, read_records, sheet_positions
from usfmae.config import check, opt, save_config, to_dict
from usfmae.curate.shard import in_shard, parse_shard
from usfmae.curate.shard_runs import record_run
from usfmae.errors import DataError
from usfmae.fileio import (
    RejectLog,
    append_jsonl,
    atomic_open,
    atomic_path,
    end_with_parent,
    ensure_output_dir,
)
from usfmae.imaging import DEFAULT_MAX_PIXELS
from usfmae.runtime import configure_threads, progress_bar

log = logging.getLogger(__name__)

METHODS = ("usfmae", "paper")


@dataclass
class CleanConfig:
    """Settings of ``usfmae clean``."""

    method: Literal["usfmae", "paper"] = opt("usfmae", "annotation removal method: ours or the paper's")
    size: int = opt(224, "output side in pixels")
    resize: Literal["pad", "stretch"] = opt("pad", "usfmae method: keep aspect by padding, or stretch")
    sheet: int = opt(8, "images shown in the before/after contact sheet (0: none)")
    workers: int = opt(1, "worker processes")
    ocr: bool = opt(True, "run Tesseract text detection")
    text_check: bool = opt(True, "read each cleaned frame with OCR and record the words left (with ocr)")
    strict: bool = opt(False, "reject frames on which readable words are left after cleaning (needs text-check)")
    max_pixels: int = opt(DEFAULT_MAX_PIXELS, "refuse images with more pixels (checked from the file header)")
    allow_outside: bool = opt(False, "accept manifest paths outside the manifest's folder")
    shard: str | None = opt(None, "clean only part I of N of the inputs (I/N, 0-based; e.g. a SLURM array "
                                  "task); `usfmae merge` combines the N outputs")

    def __post_init__(self) -> None:
        parse_shard(self.shard)
        check(self.method in METHODS, f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        check(16 <= self.size <= 4096, f"size must be between 16 and 4096, got {self.size}")
        check(self.resize in ("pad", "stretch"), f"resize must be pad or stretch, got {self.resize!r}")
        check(self.sheet >= 0, f"sheet must be >= 0, got {self.sheet}")
        check(self.workers >= 1, f"workers must be >= 1, got {self.workers}")
        check(self.max_pixels >= 1, f"max-pixels must be >= 1, got {self.max_pixels}")
        check((self.text_check and self.ocr) or not self.strict,
              "strict needs ocr and text-check (it drops frames with words left)")


@dataclass
class CleanResult:
    """Output of :func:`remove_annotations` at native resolution.

    Attributes:
        image: (H, W, 3) uint8 RGB, annotations removed.
        mask: (H, W) bool, pixels that were replaced.
        fan: (H, W) bool scan region found by the ``usfmae`` method, None for ``paper``.
        scan_status: ``"found"``, ``"whole"`` (all scan) or ``"unsure"`` (nothing blanked, marks
            only) for ``usfmae``; ``""`` for ``paper``.
        scan_reason: why the detector was unsure.
    """

    image: np.ndarray
    mask: np.ndarray
    fan: np.ndarray | None = None
    scan_status: str = ""
    scan_reason: str = ""


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Any 2D frame -> (H, W, 3) uint8 RGB: gray replicated, alpha dropped, 16-bit scaled to its range."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = image.astype(np.float32)
        lo, hi = float(image.min()), float(image.max())
        image = ((image - lo) * (255.0 / max(hi - lo, 1e-6))).round().astype(np.uint8)
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[..., :3])
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image)
    raise ValueError(f"expected a (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got shape {image.shape}")


def remove_annotations(image: np.ndarray, method: str = "usfmae", ocr: bool = True) -> CleanResult:
    """Remove burned-in annotations from one frame at native resolution.

    Args:
        image: (H, W) gray or (H, W, 3) RGB frame (uint8; other dtypes are scaled to uint8).
        method: ``"usfmae"`` (ours) or ``"paper"`` (the reference pipeline).
        ocr: run Tesseract text detection.

    Returns:
        The cleaned RGB frame, the removed-pixel mask and (``usfmae``) the scan fan.
    """
    rgb = as_rgb(image)
    if method == "paper":
        from usfmae.clean.paper import clean_paper

        cleaned, mask = clean_paper(rgb, use_ocr=ocr)
        return CleanResult(cleaned, mask, None)
    if method == "usfmae":
        from usfmae.clean.scan_aware import clean_usfmae

        cleaned, mask, region = clean_usfmae(rgb, use_ocr=ocr)
        return CleanResult(cleaned, mask, region.mask, region.status, region.reason)
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def residual_words(image: np.ndarray) -> list:
    """Readable words left on a cleaned native-resolution frame (see :func:`usfmae.clean.ocr.readable_words`).

    Args:
        image: (H, W, 3) uint8 RGB or (H, W) gray.

    Returns:
        list of :class:`usfmae.clean.ocr.WordBox`.
    """
    from usfmae.clean.ocr import readable_words

    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    return readable_words(gray)


def resize_output(image: np.ndarray, size: int = 224, mode: str = "pad",
                  interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """Resize to ``size`` x ``size``.

    Args:
        image: (H, W) or (H, W, C) array.
        size: output side.
        mode: ``"stretch"`` (ignore aspect) or ``"pad"`` (scale the long side to ``size``, centre,
            pad with zeros: ultrasound backgrounds are black).
        interpolation: OpenCV flag; ``INTER_AREA`` for images (ours), ``INTER_NEAREST`` for masks
            and for the paper's resize.

    Returns:
        (size, size) or (size, size, C) array of ``image``'s dtype.
    """
    h, w = image.shape[:2]
    if mode == "stretch":
        return cv2.resize(image, (size, size), interpolation=interpolation)
    if mode != "pad":
        raise ValueError(f"resize mode must be 'pad' or 'stretch', got {mode!r}")
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = cv2.resize(image, (nw, nh), interpolation=interpolation)
    out = np.zeros((size, size) + image.shape[2:], image.dtype)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = small.reshape((nh, nw) + image.shape[2:])
    return out


def _channels(image: np.ndarray) -> int:
    return 1 if image.ndim == 2 or image.shape[2] == 1 else 3


def clean_to_size(image: np.ndarray, cfg: CleanConfig) -> tuple[np.ndarray, np.ndarray, CleanResult]:
    """Remove annotations, then resize as the method prescribes.

    Returns:
        ``(image (S, S, 3) uint8 RGB, mask (S, S) bool, native-resolution result)``.
    """
    result = remove_annotations(image, cfg.method, cfg.ocr)
    if cfg.method == "paper":
        out = resize_output(result.image, cfg.size, "stretch", cv2.INTER_NEAREST)
        mask = resize_output(result.mask.astype(np.uint8), cfg.size, "stretch", cv2.INTER_NEAREST)
    else:
        # the one fit of every stage (usfmae.imaging): area interpolation, pad or stretch
        out = imaging.fit(result.image, cfg.size, _channels(result.image), cfg.resize)
        mask = imaging.fit(result.mask.astype(np.uint8) * 255, cfg.size, 1, cfg.resize)[:, :, 0] >= 128
    return out, mask.astype(bool), result


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB (:func:`usfmae.imaging.read_image`: the pixel
    count is checked from the header first); raises :class:`DataError` naming the file."""
    return as_rgb(imaging.read_image(path, max_pixels=max_pixels))


def write_png(path: Path, image: np.ndarray) -> None:
    """Atomically write RGB (as grayscale when all channels agree) or a 2D array as PNG."""
    if image.ndim == 3:
        chans = image.astype(np.int16)
        if np.abs(chans[..., 0] - chans[..., 1]).max(initial=0) <= 1 and \
                np.abs(chans[..., 1] - chans[..., 2]).max(initial=0) <= 1:
            image = image[..., 1]
        else:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    # Encoded in memory, written by Python: OpenCV's file functions crash on non-UTF-8 folder names.
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.tobytes())


# ----------------------------------------------------------------------------------- batch runner

def _work(task: tuple[str, str, str, dict]) -> dict:
    """Clean one file and write its outputs (runs in a worker process)."""
    item_id, file, out, cfg_dict = task
    cfg = CleanConfig(**cfg_dict)
    start = time.perf_counter()
    try:
        image = read_image(file, cfg.max_pixels)
        cleaned, mask, native = clean_to_size(image, cfg)
        words = residual_words(native.image) if cfg.text_check and cfg.ocr else []
    except DataError as exc:
        return {"id": item_id, "file": file, "error": str(exc).split(": ", 1)[-1]}
    except (cv2.error, ValueError, MemoryError) as exc:
        return {"id": item_id, "file": file, "error": f"cleaning failed ({exc.__class__.__name__})"}
    text = " ".join(w.text for w in words)
    if cfg.strict and words:
        return {"id": item_id, "file": file, "error": f"{len(words)} readable word(s) left after cleaning "
                                                      f"(--strict): {text[:80]}"}
    out_dir = Path(out)
    write_png(out_dir / "masks" / f"{item_id}.png", mask.astype(np.uint8) * 255)
    write_png(out_dir / "images" / f"{item_id}.png", cleaned)  # written last: marks the item done
    return {"id": item_id, "path": f"images/{item_id}.png", "mask_path": f"masks/{item_id}.png",
            "source": str(file), "method": cfg.method, "width": int(image.shape[1]),
            "height": int(image.shape[0]), "mask_fraction": float(native.mask.mean()),
            "scan_status": native.scan_status, "scan_reason": native.scan_reason,
            "residual_words": len(words), "residual_text": text, "seconds": round(time.perf_counter() - start, 4)}


def _init_worker() -> None:
    end_with_parent()  # a killed parent must not leave workers writing into its folder
    cv2.setNumThreads(1)  # processes give the parallelism; OpenCV threads would oversubscribe


def run_clean(source: str | Path, out: str | Path, cfg: CleanConfig, progress: bool = True) -> dict:
    """Clean every image of a folder or manifest into ``out`` (resumable), or part I of N of them.

    Memory stays flat in the number of images apart from the input listing: records go to
    ``done.jsonl`` as they come, and the manifest is streamed from it in input order.

    Returns:
        Summary: counts of ``cleaned``, ``skipped`` (already done), ``rejected``, ``total``, and the
        paths of the manifest and contact sheet.

    Raises:
        DataError: the input holds no images at all (before any ``--shard`` split).
    """
    configure_threads(None, cfg.workers)  # spawned workers inherit the count through the environment
    out = ensure_output_dir(out)
    items, bad_inputs = list_inputs(source, cfg.allow_outside)
    if not items and not bad_inputs:
        raise DataError(f"{source}: no images to clean")
    shard = parse_shard(cfg.shard)
    if shard is not None:  # the partition every stage shares, keyed by the input's id
        items = [item for item in items if in_shard(item[0], shard)]
        bad_inputs = [bad for bad in bad_inputs if in_shard(bad["id"], shard)]
    record_run(out, "clean", cfg.shard, source, to_dict(cfg), finished=False)
    save_config(cfg, out / "clean_config.yaml")
    done_log = out / "done.jsonl"
    done = done_index(done_log, out, cfg.method)
    rejects = RejectLog(out / "rejects.jsonl", log)
    # Files rejected by an earlier run stay rejected (delete rejects.jsonl to retry them).
    rejected_before = {r.get("id") for r in rejects.read()}
    for bad in bad_inputs:
        if bad["id"] not in rejected_before:
            rejects.reject(bad["file"], bad["reason"], id=bad["id"])
    skipped = sum(1 for i, _ in items if i in done or i in rejected_before)
    cfg_dict = to_dict(cfg)
    todo = ((i, str(f), str(out), cfg_dict) for i, f in items if i not in done and i not in rejected_before)
    cleaned = 0
    n_todo = len(items) - skipped
    pool = mp.get_context("spawn").Pool(cfg.workers, _init_worker) if cfg.workers > 1 and n_todo > 1 else None
    try:
        results = pool.imap(_work, todo, chunksize=4) if pool else map(_work, todo)
        for record in progress_bar(results, total=n_todo, desc=f"clean ({cfg.method})", enabled=progress,
                           unit="img"):
            if "error" in record:
                rejects.reject(record["file"], record["error"], id=record["id"])
                continue
            append_jsonl(done_log, record)
            cleaned += 1
    finally:
        if pool:
            pool.close()
            pool.join()
    done = done_index(done_log, out, cfg.method)
    wanted = (i for i, _ in items if i in done)
    totals, sheet = write_outputs(out, cfg, read_records(done_log, done, wanted), sum(i in done for i, _ in items))
    record_run(out, "clean", cfg.shard, source, to_dict(cfg), finished=True)
    return {"total": len(items) + len(bad_inputs), "cleaned": cleaned, "skipped": skipped,
            "rejected": rejects.count + len(rejected_before), **totals,
            "manifest": str(out / "manifest.parquet"), "contact_sheet": str(sheet) if sheet else None}


def write_outputs(out: Path, cfg: CleanConfig, records: Iterable[dict], count: int,
                  done_log: Path | None = None) -> tuple[dict[str, int], Path | None]:
    """Write ``manifest.parquet`` (and, when given, the resume log ``done_log``) from ``count``
    records in manifest order, then the contact sheet; what a single run and a merge both end with.

    Returns:
        ``(totals of the summary, the contact sheet's path or None)``.
    """
    positions = sheet_positions(count, cfg.sheet)
    with contextlib.ExitStack() as stack:
        log_file = stack.enter_context(atomic_open(done_log, "w", encoding="utf-8")) if done_log else None
        writer = stack.enter_context(manifest_writer(out / "manifest.parquet", positions, log_file))
        for record in records:
            writer.add(record)
    sheet = None
    if writer.sheet_rows:
        sheet = out / "contact_sheet.png"
        write_contact_sheet(sheet, [(Path(r["source"]), out / r["path"], out / r["mask_path"])
                                    for r in writer.sheet_rows], cfg)
    return writer.totals(), sheet


def overlay_mask(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (255, 40, 40)) -> np.ndarray:
    """Blend ``colour`` over the masked pixels of an (H, W, 3) RGB image (for figures)."""
    out = rgb.copy()
    out[mask] = (0.35 * out[mask] + 0.65 * np.array(colour)).astype(np.uint8)
    return out


def write_contact_sheet(path: Path, rows: list[tuple[Path, Path, Path]], cfg: CleanConfig) -> None:
    """One row per item: original (resized like the output) | mask overlay | cleaned."""
    tiles = []
    for source, image_path, mask_path in rows:
        try:
            original = read_image(source)
        except DataError:
            continue
        if cfg.method == "paper":
            original = resize_output(original, cfg.size, "stretch", cv2.INTER_NEAREST)
        else:
            original = imaging.fit(original, cfg.size, _channels(original), cfg.resize)
        cleaned = read_image(image_path)
        mask = imaging.read_image(mask_path)[..., 0] > 127
        gap = np.full((cfg.size, 4, 3), 255, np.uint8)
        tiles.append(np.hstack([original, gap, overlay_mask(original, mask), gap, cleaned]))
    if not tiles:
        return
    sep = np.full((4, tiles[0].shape[1], 3), 255, np.uint8)
    sheet = np.vstack([t for tile in tiles for t in (tile, sep)][:-1])
    write_png(path, sheet)


def quality_metrics(mask: np.ndarray, overlay: np.ndarray, fan: np.ndarray, cleaned: np.ndarray,
                    clean: np.ndarray) -> dict[str, float]:
    """Annotation-removal quality against ground truth (phantom images).

    Args:
        mask: (H, W) bool, pixels a method replaced.
        overlay: (H, W) bool, pixels the overlays were drawn on.
        fan: (H, W) bool, the true scan sector.
        cleaned: (H, W, 3) RGB or (H, W) gray uint8 output of the method.
        clean: (H, W) uint8 ground-truth image without overlays.

    Returns:
        ``recall`` (overlay pixels masked), ``tissue_fp`` (fraction of non-overlay fan pixels masked),
        ``iou`` (mask vs overlay), ``psnr`` (dB, cleaned grey vs clean, whole frame).
    """
    tissue = fan & ~overlay
    inter = np.count_nonzero(mask & overlay)
    union = np.count_nonzero(mask | overlay)
    gray = cv2.cvtColor(cleaned, cv2.COLOR_RGB2GRAY) if cleaned.ndim == 3 else cleaned
    mse = float(np.mean((gray.astype(np.float64) - clean.astype(np.float64)) ** 2))
    return {
        "recall": inter / max(np.count_nonzero(overlay), 1),
        "tissue_fp": np.count_nonzero(mask & tissue) / max(np.count_nonzero(tissue), 1),
        "iou": inter / max(union, 1),
        "psnr": 99.0 if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse),
    }
