"""Annotation-removal throughput per core at 800x600, both methods (one JSON line).

Frames are phantom scans (with overlays) of 600x600 centred on an 800x600 black screen, as a
scanner's screen capture. OpenCV is pinned to one thread, so the figures are images/s per core.

    python bench/clean_throughput.py --n 8
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np

from usfmae.clean.run import remove_annotations
from usfmae.phantom.generate import PhantomConfig, generate_sample


def screen_frames(n: int, seed: int, width: int = 800, height: int = 600) -> list[np.ndarray]:
    """``n`` (height, width, 3) uint8 RGB frames: square phantoms centred on a black screen."""
    side = min(width, height)
    cfg = PhantomConfig(size=side)
    frames = []
    for i in range(n):
        frame = np.zeros((height, width, 3), np.uint8)
        x0, y0 = (width - side) // 2, (height - side) // 2
        frame[y0:y0 + side, x0:x0 + side] = generate_sample(seed, i, cfg).image
        frames.append(frame)
    return frames


def time_method(frames: list[np.ndarray], method: str, repeats: int) -> float:
    """Images per second of ``method`` over ``frames`` (best of ``repeats`` passes; one warm-up)."""
    remove_annotations(frames[0], method)  # loads Tesseract, warms caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for frame in frames:
            remove_annotations(frame, method)
        best = min(best, time.perf_counter() - start)
    return len(frames) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="frames per pass")
    parser.add_argument("--repeats", type=int, default=2, help="passes (the best is reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=800)
    parser.add_argument("--height", type=int, default=600)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    frames = screen_frames(args.n, args.seed, args.width, args.height)
    rates = {m: time_method(frames, m, args.repeats) for m in ("paper", "usfmae")}
    print(json.dumps({
        "bench": "clean_throughput", "width": args.width, "height": args.height, "n": args.n, "threads": 1,
        "paper_img_s": round(rates["paper"], 2), "usfmae_img_s": round(rates["usfmae"], 2),
        "paper_ms": round(1000 / rates["paper"], 2), "usfmae_ms": round(1000 / rates["usfmae"], 2),
        "speedup": round(rates["usfmae"] / rates["paper"], 2),
    }))


if __name__ == "__main__":
    main()
