"""Does curation stay flat in memory as the corpus grows? Peak RSS and frames/s of each stage at two sizes.

    python bench/scale.py                          # N = 10,000 and 100,000 (the issue's sizes; long)
    python bench/scale.py --sizes 500 5000         # a quick run
    python bench/scale.py --sizes 500 5000 --stages ingest,pack

For each N it writes N phantom frames at 64 px (``usfmae.phantom``, overlays on, one PNG per frame,
1,000 per source folder), then runs the CLI verbs as a user would, each in a fresh process so its
peak memory is its own: ``ingest`` (1 worker: everything in the measured process), ``clean``
(usfmae method, 1 worker), ``pack`` (64 px shards) and ``embed`` (micro MAE, from the shards).

Prints ONE JSON line: per stage and N the seconds, frames/s and peak RSS (VmHWM of the verb's
process), and per stage ``rss_ratio`` = peak RSS at the largest N / at the smallest. Flat memory
means a ratio under 1.5 for a 10x larger corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("ingest", "clean", "pack", "embed")

# the child: run one CLI verb and report its own peak memory (VmHWM is not inherited over exec)
_CHILD = """
import json, sys, time
from usfmae.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
seconds = time.perf_counter() - start
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"code": code, "seconds": seconds, "peak_rss_mb": round(hwm / 1024, 1)}))
"""


def write_frames(root: Path, n: int, size: int = 64, distinct: int = 0) -> None:
    """``n`` phantom scans with burned-in overlays as PNGs under ``root/PhantomK/`` (1,000 per folder).

    ``distinct`` > 0 draws only that many and writes copies of them under the other names: minutes
    less at 100,000 frames, and the same work per frame for clean, pack and embed (not for ingest,
    which would find the copies to be duplicates).
    """
    import cv2

    from usfmae.phantom.generate import PhantomConfig, generate_sample

    cfg = PhantomConfig(size=size, overlays=True)
    drawn: list[bytes] = []
    for i in range(n):
        folder = root / f"Phantom{i // 1000:03d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        if not distinct or len(drawn) < distinct:
            ok, png = cv2.imencode(".png", cv2.cvtColor(generate_sample(0, i, cfg).image, cv2.COLOR_RGB2BGR))
            drawn.append(png.tobytes())
        (folder / f"{i:07d}.png").write_bytes(drawn[i % len(drawn)] if distinct else drawn.pop())


def verb(args: list[str], env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, env=env)
    result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 and proc.stdout.strip() else {}
    if result.get("code") != 0:  # main() returns a user error's exit code instead of raising
        raise SystemExit(f"usfmae {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return result


def commands(stage: str, work: Path, stages: list[str], clean_ocr: bool = True) -> list[str]:
    # each stage reads the previous stage's output, or the generated frames when that stage is not run
    corpus = work / "corpus" / "manifest.parquet" if "ingest" in stages else work / "root"
    cleaned = work / "cleaned" / "manifest.parquet" if "clean" in stages else corpus
    return {
        "ingest": ["ingest", str(work / "root"), "--out", str(work / "corpus"), "--workers", "1", "--no-progress"],
        "clean": ["clean", str(corpus), "--out", str(work / "cleaned"), "--size", "64",
                  "--sheet", "0", "--no-progress", *([] if clean_ocr else ["--no-ocr"])],
        "pack": ["pack", str(cleaned), "--out", str(work / "shards"), "--size", "64",
                 "--workers", "1", "--no-progress"],
        "embed": ["embed", str(work / "shards"), "--model", "mae_vit_micro_patch8_64", "--out",
                  str(work / "features.parquet"), "--device", "cpu", "--batch-size", "256"],
    }[stage]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="corpus sizes N")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated: " + ", ".join(STAGES))
    parser.add_argument("--threads", type=int, default=1, help="--threads for every verb")
    parser.add_argument("--no-ocr", action="store_true",
                        help="clean without Tesseract: its driver's memory at 100,000 frames in minutes")
    parser.add_argument("--distinct", type=int, default=0,
                        help="draw only this many frames and copy them (0: all distinct; not for ingest)")
    args = parser.parse_args(argv)
    asked = {s for s in args.stages.split(",") if s}
    if asked - set(STAGES):
        parser.error(f"unknown stage(s): {', '.join(sorted(asked - set(STAGES)))}")
    stages = [s for s in STAGES if s in asked]  # pipeline order, whatever the order asked: each reads the last
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    result: dict = {"bench": "scale", "sizes": args.sizes, "frame_px": 64, "threads": args.threads, "distinct": args.distinct,
                    "clean_ocr": not args.no_ocr,
                    "load_before": round(os.getloadavg()[0], 2)}
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="usfmae_scale_") as tmp:
            work = Path(tmp)
            start = time.perf_counter()
            write_frames(work / "root", n, distinct=args.distinct)
            result.setdefault("generate_s", {})[str(n)] = round(time.perf_counter() - start, 1)
            for stage in stages:
                figures = verb(["--threads", str(args.threads), *commands(stage, work, stages, not args.no_ocr)], env)
                result.setdefault(stage, {})[str(n)] = {
                    "seconds": round(figures["seconds"], 2), "frames_per_s": round(n / figures["seconds"], 1),
                    "peak_rss_mb": figures["peak_rss_mb"]}
    small, large = str(min(args.sizes)), str(max(args.sizes))
    for stage in stages:
        result[stage]["rss_ratio"] = round(result[stage][large]["peak_rss_mb"] / result[stage][small]["peak_rss_mb"], 3)
    result["load_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
