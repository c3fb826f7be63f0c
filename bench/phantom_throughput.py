"""Phantom generation throughput on one CPU core; prints one JSON line.

    python bench/phantom_throughput.py [--size 224] [--n 300] [--write]

``images_per_s`` times ``generate_sample`` (B-mode formation, scan conversion and overlays);
``--write`` also times the full ``write_phantom_dataset`` path (PNG encoding, manifest) and
reports it as ``write_images_per_s``. Threads are limited to one before numpy/cv2 load.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402

from usfmae.phantom.generate import PhantomConfig, generate_sample, write_phantom_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--n", type=int, default=300, help="images to time (after 5 warm-up images)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-overlays", action="store_true")
    parser.add_argument("--write", action="store_true", help="also time writing PNGs + manifest")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    cfg = PhantomConfig(size=args.size, overlays=not args.no_overlays)
    for i in range(5):
        generate_sample(args.seed, 10**6 + i, cfg)
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(args.n):
        generate_sample(args.seed, i, cfg)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    # images_per_cpu_s is what one uncontended core would do; it differs from images_per_s when
    # other processes share the core (wall clock) during the run.
    result = {"bench": "phantom", "size": args.size, "images_per_s": round(args.n / seconds, 1),
              "seconds": round(seconds, 3), "images_per_cpu_s": round(args.n / cpu_seconds, 1),
              "n": args.n, "overlays": cfg.overlays, "threads": 1, "load_avg_1min": round(os.getloadavg()[0], 2)}
    if args.write:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            write_phantom_dataset(tmp, args.n, args.seed, cfg, progress=False)
            result["write_images_per_s"] = round(args.n / (time.perf_counter() - start), 1)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
