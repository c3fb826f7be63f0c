"""Annotation removal on the real ultrasound DICOMs shipped by pydicom / pydicom-data (one JSON line).

For every file and both methods: the share of the scan kept, the share of the screen left, and the
readable words left.

- **Scan region (ground truth)**: for each file a polygon drawn by hand around the tissue the probe
  imaged (sector or rectangle, read off the screen with a pixel grid), minus boxes around what the
  scanner drew *on* the scan (grey/colour scale bars, frame counters, cursor); stored in
  :data:`usfmae.clean.real_scans.SCANS` in native pixels (the tests score with the same code). Only the pixels of that region that carry signal count (luma more
  than 6 levels above the frame's 2nd percentile): clipped black inside a sector looks the same
  whether it was kept or blanked.
- **Scan kept**: the share of those pixels whose luma changed by at most 10 levels after cleaning,
  at native resolution (before the 224 px resize). Marks removed inside the scan (calipers, ROI
  outlines) count against a method, so 100% is not reachable on screens that have them.
- **Screen left**: what the scanner drew around the scan (pixels that carry signal farther than 3%
  of the short side from every scan polygon: banners, side panels, scale bars, toolbars), the share
  of it still drawn after cleaning, whatever it became (:func:`usfmae.clean.real_scans.screen_left`).
- **Residual words**: :func:`usfmae.clean.ocr.readable_words` on the cleaned frame (Tesseract on the
  inverted frame and on a white top-hat binarisation, confidence >= 60, two or more letters or
  digits), the same reader for both methods and for the original.

The set is six distinct scans (Philips OB, GE lymph node with power Doppler, Aloka dual view,
SonoSite echo, Philips adult echo, an Acme colour-flow crop) and four variants of them that
stress the detector differently (a cropped screen, two half-size copies, lossy JPEG 2000).

    python bench/clean_real_dicom.py
    python bench/clean_real_dicom.py --figure docs/figures/clean_real_dicom.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from clean_quality import _label, _sheet  # the same labelled contact-sheet drawing (bench/ is on sys.path)

from usfmae.clean.ocr import readable_words
from usfmae.clean.real_scans import SCANS, read_dicom_rgb, scan_kept, scan_pixels, screen_left, screen_pixels
from usfmae.clean.run import remove_annotations
from usfmae.fileio import atomic_path


def evaluate(names: list[str]) -> tuple[dict, list[list[np.ndarray]]]:
    """Per-file figures for both methods, and the figure's rows."""
    result: dict = {}
    rows = []
    for name in names:
        image = read_dicom_rgb(name)
        scan, screen = scan_pixels(name, image), screen_pixels(name, image)
        entry = {"size": f"{image.shape[1]}x{image.shape[0]}",
                 "words_original": len(readable_words(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)))}
        row = [_label(image, name)]
        for method in ("paper", "usfmae"):
            out = remove_annotations(image, method)
            words = readable_words(cv2.cvtColor(out.image, cv2.COLOR_RGB2GRAY))
            entry[method] = {"scan_kept": round(scan_kept(image, out.image, scan), 4),
                             "screen_left": round(screen_left(image, out.image, screen), 4), "words": len(words),
                             "text": " ".join(w.text for w in words)[:120]}
            if method == "usfmae":
                entry[method]["scan_status"] = out.scan_status
            row.append(_label(out.image, method))
        result[name] = entry
        rows.append(row)
    return result, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", nargs="+", default=list(SCANS), help="pydicom test file names")
    parser.add_argument("--figure", type=Path, help="also write original | paper | usfmae rows to this PNG")
    parser.add_argument("--regions", type=Path, help="write the ground-truth regions drawn on each file here")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    per_file, rows = evaluate(args.files)
    summary = {"bench": "clean_real_dicom", "files": len(per_file)}
    for method in ("paper", "usfmae"):
        summary[f"{method}_min_scan_kept"] = min(v[method]["scan_kept"] for v in per_file.values())
        summary[f"{method}_max_screen_left"] = max(v[method]["screen_left"] for v in per_file.values())
        summary[f"{method}_words"] = sum(v[method]["words"] for v in per_file.values())
    summary["original_words"] = sum(v["words_original"] for v in per_file.values())
    print(json.dumps({**summary, "per_file": per_file}))
    if args.figure:
        with atomic_path(args.figure) as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(_sheet(rows, 300), cv2.COLOR_RGB2BGR))
    if args.regions:
        args.regions.mkdir(parents=True, exist_ok=True)
        for name in args.files:
            image = read_dicom_rgb(name)
            vis = image.copy()
            vis[scan_pixels(name, image)] = (0.5 * vis[scan_pixels(name, image)] + [0, 110, 0]).astype(np.uint8)
            cv2.imwrite(str(args.regions / (name[:-4] + ".png")), cv2.cvtColor(vis, cv2.COLOR_RGB2BGR))


if __name__ == "__main__":
    main()
