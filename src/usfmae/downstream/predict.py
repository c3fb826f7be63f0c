"""Apply a saved classifier or segmenter (``usfmae.models.saved``) to new images.

Inputs: an image file, a folder of images (searched recursively; DICOM files in it too), a
manifest (``manifest.parquet`` or a CSV with a ``path`` or ``image`` column, paths relative to it)
or a DICOM file (every frame, or a sampled rate). Images go through the model's data contract
(``usfmae.contract.prepare``), exactly as during training.

Outputs in ``OUT``:

- classifier: ``predictions.csv`` with ``source, frame, prediction, p_<class>...`` (probabilities);
- segmenter: ``masks/<name>.png`` (label indices at the original image size, mapped back through
  the fit with nearest neighbour), ``overlays/<name>.png`` (classes tinted and outlined) and
  ``predictions.csv`` with ``source, frame, mask, overlay`` and the pixel count of every class.

An unreadable input is skipped with one line and recorded in ``OUT/rejects.jsonl``.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from usfmae.config import check, opt
from usfmae.contract import normalise, prepare
from usfmae.curate.frames import DICOM_SUFFIXES
from usfmae.errors import ConfigError, DataError
from usfmae.eval import explain as explain_lib
from usfmae.eval.seg_report import overlay
from usfmae.fileio import (
    NOT_UTF8_REASON,
    RejectLog,
    atomic_open,
    atomic_path,
    ensure_output_dir,
    is_utf8,
    unique_names,
)
from usfmae.imaging import IMAGE_SUFFIXES, fit_geometry, read_image, unfit
from usfmae.models.encoder import pick_device
from usfmae.models.saved import load_task_model
from usfmae.train import engine

log = logging.getLogger(__name__)


@dataclass
class PredictConfig:
    """Settings of ``usfmae predict``."""

    model: str = opt("", "saved model folder (or its model.json), written by usfmae segment / finetune")
    input: str = opt("", "image, folder, manifest (.parquet/.csv) or DICOM file")
    out: str = opt("predict_out", "output folder")
    batch_size: int = opt(16, "images per forward pass")
    fps: float = opt(0.0, "DICOM cine: frames per second to sample (0 = every frame)")
    overlays: bool = opt(True, "segmenters: also write overlay PNGs")
    device: str | None = opt(None, "cuda, cpu, ... (default: cuda when available)")
    amp: bool = opt(True, "bf16 autocast on CUDA")
    explain: str | None = opt(None, "classifiers: also write explanation overlays to OUT/explain/ "
                              "(rollout, cls or gradcam; CNNs always get gradcam)", choices=explain_lib.METHODS)

    def __post_init__(self) -> None:
        check(self.batch_size > 0, f"--batch-size must be positive, got {self.batch_size}")


def _is_dicom(path: Path) -> bool:
    from usfmae.curate.readers import detect_kind

    return path.suffix.lower() in DICOM_SUFFIXES or (not path.suffix and detect_kind(path) == "dicom")


def list_inputs(source: str | Path) -> list[Path]:
    """The files an input names: itself, a folder's images/DICOMs (sorted), or a manifest's paths."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{path}: input not found")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES
                                                                      or p.suffix.lower() in DICOM_SUFFIXES))
        if not files:
            raise DataError(f"{path}: no images or DICOM files in this folder")
        return files
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        columns = pq.read_schema(path).names
        if "path" not in columns:
            raise DataError(f"{path}: manifest has no 'path' column")
        return [path.parent / p for p in pq.read_table(path, columns=["path"]).column("path").to_pylist()]
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
        column = next((c for c in ("path", "image") if rows and c in rows[0]), None)
        if column is None:
            raise DataError(f"{path}: CSV needs a 'path' or 'image' column")
        return [Path(r[column]) if Path(r[column]).is_absolute() else path.parent / r[column] for r in rows]
    return [path]


def iter_frames(files: list[Path], fps: float, rejects: RejectLog) -> Iterator[tuple[Path, int, np.ndarray]]:
    """(file, frame index, uint8 (H, W, C) RGB) for every readable frame; bad files are rejected."""
    from usfmae.curate.readers import ReadError, read_frames

    for path in files:
        if not is_utf8(path):  # predictions.csv is UTF-8: the row could not name this file
            rejects.reject(path, NOT_UTF8_REASON)
            continue
        try:
            if _is_dicom(path):
                for frame in read_frames(path, fps=fps):
                    pixels = frame.pixels if frame.pixels.ndim == 3 else frame.pixels[..., None]
                    yield path, frame.index, pixels
            else:
                yield path, 0, read_image(path)
        except (DataError, ReadError, OSError, ValueError, cv2.error) as exc:
            rejects.reject(path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _relative(path: Path, root: Path | None) -> Path:
    return path.relative_to(root) if root is not None and path.is_relative_to(root) else Path(path.name)


def output_stems(files: list[Path], root: Path | None) -> dict[Path, str]:
    """The output stem of each input: its relative path without suffix, ``/`` as ``__``, other
    characters outside ``[A-Za-z0-9._-]`` as ``_``; stems two inputs share (``x/y.png`` and
    ``x__y.png``, ``img.png`` and ``img.tif``) made distinct by :func:`usfmae.fileio.unique_names`."""
    rels = [_relative(f, root) for f in files]
    plain = [re.sub(r"[^A-Za-z0-9._-]+", "_", "__".join(r.with_suffix("").parts)) for r in rels]
    return dict(zip(files, unique_names(plain, [r.as_posix() for r in rels]), strict=True))


def _name(path: Path, index: int, multi: bool, stems: dict[Path, str]) -> str:
    stem = stems[path]
    return f"{stem}_f{index:04d}" if multi else stem


def predict(cfg: PredictConfig) -> dict[str, Any]:
    """Run the saved model over the input and write the outputs (see the module docstring).

    Returns:
        ``{"kind", "n", "csv", "rejected"}``.
    """
    model, card = load_task_model(cfg.model)
    contract, classes, kind = card["data_contract"], card["classes"], card["kind"]
    if cfg.explain and kind != "classifier":
        raise ConfigError("--explain applies to saved classifiers; this model is a segmenter")
    out = ensure_output_dir(cfg.out)
    rejects = RejectLog(out / "rejects.jsonl")
    files = list_inputs(cfg.input)
    root = Path(cfg.input).expanduser() if Path(cfg.input).is_dir() else None
    stems = output_stems(files, root)
    device = pick_device(cfg.device)
    model.to(device)
    rows: list[dict[str, Any]] = []
    batch: list[tuple[Path, int, np.ndarray]] = []

    def flush() -> None:
        x = torch.stack([prepare(img, contract) for _, _, img in batch])
        logits = engine.predict(model, [x], device=device, amp=cfg.amp, transform=lambda t: normalise(t, contract))
        heat = None
        if cfg.explain:
            # Explain the class the model predicted for each image.
            targets = [int(i) for i in logits.argmax(1)]
            heat = explain_lib.explain(model, normalise(x.to(device), contract), cfg.explain, targets).cpu().numpy()
        start = len(rows)
        for (path, index, img), out_logits in zip(batch, logits, strict=True):
            multi = _is_dicom(path)
            row: dict[str, Any] = {"source": str(path), "frame": index}
            if kind == "classifier":
                probs = torch.softmax(out_logits, 0).numpy()
                row["prediction"] = classes[int(probs.argmax())]
                row.update({f"p_{c}": round(float(p), 6) for c, p in zip(classes, probs, strict=True)})
                if heat is not None:
                    name = _name(path, index, multi, stems)
                    # The map lives on the model's square input: undo the fit so it lies on the scan.
                    geometry = fit_geometry(img.shape[0], img.shape[1], contract.img_size, contract.fit)
                    on_image = unfit(heat[len(rows) - start], geometry, interpolation="linear")
                    row["explain"] = _write_png(out / "explain" / f"{name}.png",
                                                explain_lib.overlay(img, on_image)[..., ::-1])
            else:
                small = out_logits.argmax(0).to(torch.uint8).numpy()
                mask = unfit(small, fit_geometry(img.shape[0], img.shape[1], contract.img_size, contract.fit))
                name = _name(path, index, multi, stems)
                row["mask"] = _write_png(out / "masks" / f"{name}.png", mask)
                if cfg.overlays:
                    row["overlay"] = _write_png(out / "overlays" / f"{name}.png", overlay(img, mask)[..., ::-1])
                counts = np.bincount(mask.ravel(), minlength=len(classes))
                row.update({f"pixels_{c}": int(n) for c, n in zip(classes, counts, strict=False)})
            rows.append(row)
        batch.clear()

    for item in iter_frames(files, cfg.fps, rejects):
        batch.append(item)
        if len(batch) >= cfg.batch_size:
            flush()
    if batch:
        flush()
    if not rows:
        raise DataError(f"{cfg.input}: none of the {len(files)} input file(s) could be read")
    csv_path = out / "predictions.csv"
    with atomic_open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {"kind": kind, "n": len(rows), "csv": str(csv_path), "rejected": rejects.count}


def _write_png(path: Path, array: np.ndarray) -> str:
    """Write ``array`` (grey or BGR) as PNG atomically; returns the path as a string."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(array)):
            raise DataError(f"{path}: could not write PNG")
    return str(path)
