"""Annotation-removal quality on phantom frames with ground truth, both methods (one JSON line).

For each method and phantom size: overlay-pixel recall, tissue false-positive rate (masked fan
pixels that are not overlay), mask IoU against the overlay mask, and PSNR (dB) of the inpainted
frame against the clean one (whole frame, grey). Means over the set; the worst tissue FP too.
The paper's thresholds are in native pixels, so a larger size (600) is evaluated besides 224.

    python bench/clean_quality.py --n 16 --sizes 224 600
    python bench/clean_quality.py --n 4 --sizes 224 --figures docs/figures   # also the README figures

``--figures`` writes ``clean_phantom.png`` (phantom frames: original | paper | usfmae | truth), each
row at its native resolution before the 224 resize. The real-DICOM figure and figures come from
``bench/clean_real_dicom.py``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from usfmae.clean.run import quality_metrics, remove_annotations
from usfmae.fileio import atomic_path
from usfmae.phantom.generate import PhantomConfig, generate_sample


def evaluate(method: str, size: int, n: int, seed: int = 0) -> dict[str, float]:
    """Mean metrics of ``method`` on phantom samples ``0..n-1`` of ``seed`` at ``size``."""
    cfg = PhantomConfig(size=size)
    rows, seconds = [], 0.0
    for index in range(n):
        sample = generate_sample(seed, index, cfg)
        start = time.perf_counter()
        result = remove_annotations(sample.image, method)
        seconds += time.perf_counter() - start
        rows.append(quality_metrics(result.mask, sample.overlay_mask, sample.fan_mask, result.image, sample.clean))
    out = {key: round(float(np.mean([r[key] for r in rows])), 4) for key in rows[0]}
    out["tissue_fp_max"] = round(max(r["tissue_fp"] for r in rows), 4)
    out["ms_per_image"] = round(1000 * seconds / n, 2)
    return out


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    out = tile.copy()
    scale = tile.shape[0] / 300  # labels read the same once every row is scaled to 300 px
    cv2.putText(out, text, (round(4 * scale), round(18 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.55 * scale,
                (255, 64, 64), max(1, round(1.5 * scale)), cv2.LINE_AA)
    return out


def _sheet(rows: list[list[np.ndarray]], height: int) -> np.ndarray:
    """Rows of RGB tiles scaled to ``height`` px tall, separated by white gaps."""
    lines = []
    for tiles in rows:
        scaled = [cv2.resize(t, (round(t.shape[1] * height / t.shape[0]), height), interpolation=cv2.INTER_AREA)
                  for t in tiles]
        gap = np.full((height, 6, 3), 255, np.uint8)
        lines.append(np.hstack([x for t in scaled for x in (t, gap)][:-1]))
    width = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, 6), (0, width - line.shape[1]), (0, 0)), constant_values=255) for line in lines]
    return np.vstack(lines)[:-6]


def write_figures(out_dir: Path, n: int, seed: int) -> None:
    """The README's phantom before/after figure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(n):
        sample = generate_sample(seed, index, PhantomConfig(size=400))
        paper = remove_annotations(sample.image, "paper")
        ours = remove_annotations(sample.image, "usfmae")
        truth = np.repeat(sample.clean[..., None], 3, axis=2)
        rows.append([_label(sample.image, "original"), _label(paper.image, "paper"), _label(ours.image, "usfmae"),
                     _label(truth, "ground truth")])
    with atomic_path(out_dir / "clean_phantom.png") as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(_sheet(rows, 300), cv2.COLOR_RGB2BGR))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="phantom frames per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 600])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figures", type=Path, help="also write the before/after figures to this folder")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    result = {"bench": "clean_quality", "n": args.n, "seed": args.seed}
    for size in args.sizes:
        for method in ("paper", "usfmae"):
            result[f"{method}_{size}"] = evaluate(method, size, args.n, args.seed)
    print(json.dumps(result))
    if args.figures:
        write_figures(args.figures, 4, args.seed)


if __name__ == "__main__":
    main()
