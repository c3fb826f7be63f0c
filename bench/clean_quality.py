"""Annotation-removal quality on phantom frames with ground truth, both methods (one JSON line).

For each method and phantom size: overlay-pixel recall, tissue false-positive rate (masked fan
pixels that are not overlay), mask IoU against the overlay mask, and PSNR (dB) of the inpainted
frame against the clean one (whole frame, grey). Means over the set; the worst tissue FP too.
The paper's thresholds are in native pixels, so a larger size (600) is evaluated besides 224.

    python bench/clean_quality.py --n 16 --sizes 224 600
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np

from usfmae.data.clean import quality_metrics, remove_annotations
from usfmae.data.phantom import PhantomConfig, generate_sample


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="phantom frames per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 600])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    result = {"bench": "clean_quality", "n": args.n, "seed": args.seed}
    for size in args.sizes:
        for method in ("paper", "usfmae"):
            result[f"{method}_{size}"] = evaluate(method, size, args.n, args.seed)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
