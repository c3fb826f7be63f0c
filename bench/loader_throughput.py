"""Images/s that ONE CPU core delivers: PNG files + PIL + per-image transforms vs packed shards.

    python bench/loader_throughput.py [--n 256] [--size 224] [--batch 64] [--device cpu|cuda]

Fixtures are made in a temporary folder: ``--n`` phantom frames (``usfmae.phantom.generate``) saved as
RGB PNGs, then packed with ``usfmae pack`` into grayscale (1 channel, the default) and RGB shards.

- ``png_pil_images_per_s``: the paper's path: ``PIL.Image.open(...).convert("RGB")``, torchvision
  ``RandomResizedCrop(scale=(0.5, 2.0))``, ``RandomRotation((0, 90))``, horizontal and vertical
  flips, ``ToTensor``, ``Normalize``, stacked into batches (DataLoader collate, no workers);
- ``shards_images_per_s`` / ``shards_rgb_images_per_s``: ``ShardBatchLoader`` delivering uint8
  batches (what the host must supply when augmentation runs on the accelerator);
- ``shards_cpu_augment_images_per_s``: the same plus the batched augmentation and normalisation
  done on this CPU core too (a CPU-only training run);
- with ``--device cuda``: ``shards_device_images_per_s``, normalised augmented batches on the GPU
  from ``build_fast_pipeline`` (prefetch thread + pinned memory).

Every figure is per core (``torch.set_num_threads(1)``, no worker processes, no prefetch thread on
CPU). Prints one JSON line; ``speedup`` = shards / PNG (target >= 10).
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
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from usfmae.data.fast_loader import ShardBatchLoader, build_fast_pipeline  # noqa: E402
from usfmae.data.gpu_augment import GpuAugment  # noqa: E402
from usfmae.shards.pack import PackConfig, pack_corpus  # noqa: E402

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_pngs(folder: Path, n: int, size: int, seed: int = 0) -> str:
    """Write ``n`` RGB PNG fixtures; phantom frames when the simulator is installed, else speckle."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        from usfmae.phantom.generate import PhantomConfig, generate_sample
    except ImportError:
        generate_sample = None
    rng = np.random.default_rng(seed)
    for i in range(n):
        if generate_sample is not None:
            rgb = generate_sample(seed, i, PhantomConfig(size=size)).image
        else:  # Rayleigh speckle, smoothed like a point-spread function
            speckle = cv2.GaussianBlur(rng.rayleigh(1.0, (size, size)).astype(np.float32), (0, 0), 1.0)
            gray = np.clip(speckle * 80, 0, 255).astype(np.uint8)
            rgb = np.repeat(gray[..., None], 3, axis=2)
        cv2.imwrite(str(folder / f"img{i:05d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return "phantom" if generate_sample is not None else "speckle"


def timed(run_once: Callable[[], int], min_seconds: float) -> float:
    """Images/s of ``run_once`` (returns images it delivered), repeated for at least ``min_seconds``."""
    run_once()  # warm-up: imports, page cache, allocator
    images, start = 0, time.perf_counter()
    while True:
        images += run_once()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return images / elapsed


def paper_path(files: list[Path], size: int, batch: int) -> Callable[[], int]:
    from PIL import Image
    from torchvision import transforms as T

    transform = T.Compose([
        T.RandomResizedCrop(size, scale=(0.5, 2.0)), T.RandomRotation((0, 90)),
        T.RandomHorizontalFlip(), T.RandomVerticalFlip(), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])

    def once() -> int:
        for start in range(0, len(files) - batch + 1, batch):
            imgs = [transform(Image.open(f).convert("RGB")) for f in files[start:start + batch]]
            torch.stack(imgs)  # the DataLoader's default collate
        return (len(files) // batch) * batch
    return once


def shard_path(shards: Path, batch: int, augment: GpuAugment | None = None) -> Callable[[], int]:
    loader = ShardBatchLoader(shards, batch, seed=0, prefetch=0)  # prefetch 0: everything on this core
    generator = torch.Generator().manual_seed(0)
    epoch = [0]

    def once() -> int:
        loader.set_epoch(epoch[0])
        epoch[0] += 1
        n = 0
        for x in loader:
            if augment is not None:
                augment(x, generator)
            n += len(x)
        return n
    return once


def device_path(shards: Path, batch: int, size: int, device: str) -> Callable[[], int]:
    pipe = build_fast_pipeline(shards, batch, size, 3, IMAGENET_MEAN, IMAGENET_STD, seed=0, device=device)
    epoch = [0]

    def once() -> int:
        pipe.set_epoch(epoch[0])
        epoch[0] += 1
        n = sum(len(x) for x in pipe)
        torch.cuda.synchronize()
        return n
    return once


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="fixture images (>= batch)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--min-seconds", type=float, default=1.5, help="time each path at least this long")
    parser.add_argument("--device", default="cpu", help="also time the full pipeline on this device (cuda)")
    args = parser.parse_args(argv)
    if args.n < args.batch:
        parser.error("--n must be at least --batch")
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fixture = make_pngs(root / "png", args.n, args.size)
        for name, channels in (("gray", 1), ("rgb", 3)):
            pack_corpus(root / "png", root / name, PackConfig(size=args.size, channels=channels, workers=1),
                        progress=False)
        files = sorted((root / "png").glob("*.png"))
        png = timed(paper_path(files, args.size, args.batch), args.min_seconds)
        gray = timed(shard_path(root / "gray", args.batch), args.min_seconds)
        rgb = timed(shard_path(root / "rgb", args.batch), args.min_seconds)
        augment = GpuAugment(None, args.size, 3, IMAGENET_MEAN, IMAGENET_STD)
        gray_aug = timed(shard_path(root / "gray", args.batch, augment), args.min_seconds)
        result = {
            "bench": "loader_throughput", "fixture": fixture, "n": args.n, "size": args.size, "batch": args.batch,
            "threads": 1, "png_pil_images_per_s": round(png, 1), "shards_images_per_s": round(gray, 1),
            "shards_rgb_images_per_s": round(rgb, 1), "shards_cpu_augment_images_per_s": round(gray_aug, 1),
            "speedup": round(gray / png, 1), "speedup_rgb": round(rgb / png, 1),
        }
        if args.device != "cpu":
            result["shards_device_images_per_s"] = round(
                timed(device_path(root / "gray", args.batch, args.size, args.device), args.min_seconds), 1)
            result["device"] = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
