"""Annotation removal on the real ultrasound DICOMs shipped by pydicom / pydicom-data (one JSON line).

For every file and both methods: the share of the scan kept, and the readable words left.

- **Scan region (ground truth)**: for each file a polygon drawn by hand around the tissue the probe
  imaged (sector or rectangle, read off the screen with a pixel grid), minus boxes around what the
  scanner drew *on* the scan (grey/colour scale bars, frame counters, cursor); stored below in
  ``SCANS`` in native pixels. Only the pixels of that region that carry signal count (luma more
  than 6 levels above the frame's 2nd percentile): clipped black inside a sector looks the same
  whether it was kept or blanked.
- **Scan kept**: the share of those pixels whose luma changed by at most 10 levels after cleaning,
  at native resolution (before the 224 px resize). Marks removed inside the scan (calipers, ROI
  outlines) count against a method, so 100% is not reachable on screens that have them.
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
from usfmae.clean.run import as_rgb, remove_annotations
from usfmae.fileio import atomic_path

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
    "JPGLosslessP14SV1_1s_1f_8b.dcm": ([[(428, 164), (602, 168), (906, 470), (700, 642), (500, 646), (300, 584),
                                         (158, 456)]], []),
    "color-pl.dcm": ([[(92, 0), (200, 0), (216, 25), (236, 55), (255, 85), (255, 119), (26, 119)]],
                     [(226, 50, 248, 68)]),  # the grey screen left and right of the sector is out
}


def read_dicom_rgb(name: str) -> np.ndarray:
    """Frame 0 of a pydicom test file as (H, W, 3) uint8 RGB, through the ingest reader."""
    from pydicom.data import get_testdata_file

    from usfmae.curate.readers import read_frames

    # Explicit names only: a wildcard search makes pydicom-data try to download the whole set.
    frame = next(iter(read_frames(get_testdata_file(name), fps=0)))
    return as_rgb(frame.pixels)


def scan_pixels(name: str, rgb: np.ndarray) -> np.ndarray:
    """(H, W) bool: the hand-drawn scan region's pixels that carry signal (see the module docstring)."""
    polygons, marks = SCANS[name]
    region = np.zeros(rgb.shape[:2], np.uint8)
    for polygon in polygons:
        cv2.fillPoly(region, [np.array(polygon, np.int32)], 1)
    for x0, y0, x1, y1 in marks:
        region[y0:y1, x0:x1] = 0
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return (region > 0) & (gray > np.percentile(gray, 2) + 6)


def scan_kept(original: np.ndarray, cleaned: np.ndarray, scan: np.ndarray) -> float:
    """Share of ``scan`` pixels whose luma changed by at most 10 levels."""
    a = cv2.cvtColor(original, cv2.COLOR_RGB2GRAY).astype(np.int16)
    b = cv2.cvtColor(cleaned, cv2.COLOR_RGB2GRAY).astype(np.int16)
    return float(np.mean(np.abs(a - b)[scan] <= 10))


def evaluate(names: list[str]) -> tuple[dict, list[list[np.ndarray]]]:
    """Per-file figures for both methods, and the figure's rows."""
    result: dict = {}
    rows = []
    for name in names:
        image = read_dicom_rgb(name)
        scan = scan_pixels(name, image)
        entry = {"size": f"{image.shape[1]}x{image.shape[0]}",
                 "words_original": len(readable_words(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)))}
        row = [_label(image, name)]
        for method in ("paper", "usfmae"):
            out = remove_annotations(image, method)
            words = readable_words(cv2.cvtColor(out.image, cv2.COLOR_RGB2GRAY))
            entry[method] = {"scan_kept": round(scan_kept(image, out.image, scan), 4), "words": len(words),
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
