"""MAE pretraining throughput: images/s, step time, peak memory and (on GPU) model FLOPs utilisation.

Builds the run with the product's own ``usfmae.train.pretrain.setup`` (model, optimiser, data recipe,
schedule, masks) and trains it with ``train_steps`` (the engine's ``train_one_epoch``) on phantom
images, then prints ONE JSON line:

    {"bench": "pretrain", "recipe": ..., "model": ..., "batch": ..., "images_per_s": ..., "step_s": ...,
     "peak_mem_mb": ..., "device": ..., "mfu": null | fraction, "loader_images_per_s": ..., ...}

Recipes:
  paper  the reference's path: PNG files decoded per image, per-image CPU augmentation in DataLoader
         workers, eager model (batch 64 in the paper).
  fast   packed uint8 shards + batched augmentation on the device (``usfmae.data.fast_loader``);
         data preparation lives in ``prepare_fast_data`` below.

FLOPs are counted analytically from the model config (:func:`mae_train_flops_per_image`): every
matmul of the encoder on the visible tokens + CLS and of the decoder on all tokens + CLS, attention
score/value products included, times 3 for forward + backward. ViT-B/16 at mask 0.25: ~111 GFLOP.

Examples:
  python bench/pretrain_throughput.py                                    # tiny CPU defaults
  python bench/pretrain_throughput.py --model mae_vit_base_patch16 --batch 4 --steps 2 --warmup 1
  python bench/pretrain_throughput.py --recipe paper --model mae_vit_base_patch16 --batch 64 --steps 50 --amp
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from usfmae.models.mae import MAEConfig
from usfmae.models.registry import list_models, variant_config
from usfmae.phantom.generate import PhantomConfig, generate_sample, write_phantom_dataset
from usfmae.shards.store import ShardWriter
from usfmae.train import engine
from usfmae.train.distributed import DistInfo
from usfmae.train.pretrain import PretrainConfig, setup, train_steps

# Dense bf16 tensor-core peaks (FLOP/s) by device-name fragment, for MFU; --peak-tflops overrides.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "4090": 165e12, "4080": 97.5e12}


def mae_train_flops_per_image(cfg: MAEConfig, mask_ratio: float | None = None) -> float:
    """Analytic training FLOPs (forward + backward = 3 x forward) per image for an MAE config.

    A matmul of (n x k) by (k x m) costs 2nkm. Norms, softmax, GELU and the loss are ignored (< 1%).
    """
    ratio = cfg.mask_ratio if mask_ratio is None else mask_ratio
    L = cfg.num_patches
    patch_dim = cfg.patch_size**2 * cfg.in_chans

    def blocks(n_tokens: int, dim: int, depth: int) -> float:
        hidden = int(dim * cfg.mlp_ratio)
        per_block = 2 * n_tokens * dim * (3 * dim + dim + 2 * hidden) + 2 * 2 * n_tokens * n_tokens * dim
        return depth * per_block

    n_enc = 1 + int(L * (1 - ratio))  # CLS + visible tokens
    forward = (2 * L * patch_dim * cfg.embed_dim                      # patch embedding of every patch
               + blocks(n_enc, cfg.embed_dim, cfg.depth)
               + 2 * n_enc * cfg.embed_dim * cfg.decoder_embed_dim    # decoder_embed
               + blocks(1 + L, cfg.decoder_embed_dim, cfg.decoder_depth)
               + 2 * (1 + L) * cfg.decoder_embed_dim * patch_dim)     # decoder_pred
    return 3.0 * forward


def prepare_paper_data(root: Path, n: int, img_size: int) -> str:
    """Write ``n`` phantom PNGs (the reference reads PNG files) and return the folder."""
    write_phantom_dataset(root / "png", n=n, seed=0, cfg=PhantomConfig(size=img_size, overlays=False), progress=False)
    return str(root / "png")


def prepare_fast_data(root: Path, n: int, img_size: int) -> str:
    """Pack ``n`` phantom frames into shards (the fast recipe's input) and return the folder."""
    cfg = PhantomConfig(size=img_size, overlays=False)
    with ShardWriter(root / "shards", (img_size, img_size, 1)) as writer:
        for i in range(n):
            writer.add(generate_sample(0, i, cfg).clean, f"phantom_{i:06d}")
    return str(root / "shards")


PREPARE = {"paper": prepare_paper_data, "fast": prepare_fast_data}


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(args: argparse.Namespace) -> dict:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {k: v for k, v in (("in_chans", args.in_chans), ("mask_ratio", args.mask_ratio)) if v is not None}
    total_steps = args.warmup + args.steps
    with tempfile.TemporaryDirectory(prefix="usfmae_bench_") as tmp:
        n_images = args.images or args.batch * min(total_steps, 4)
        img_size = variant_config(args.model, **overrides).img_size
        # --data: a folder prepared once by PREPARE[recipe] (bench/gpu_check.py shares it between runs)
        source = args.data or PREPARE[args.recipe](Path(tmp), n_images, img_size)
        cfg = PretrainConfig(data=source, out=str(Path(tmp) / "run"), model=args.model, batch_size=args.batch,
                             steps=total_steps, num_workers=args.workers, recipe=args.recipe, amp=args.amp,
                             compile=args.compile, seed=0, progress=False, device=device.type, **overrides)
        # The product's own set-up (model, optimiser, data recipe, schedule, masks), nothing rebuilt here.
        run = setup(cfg, DistInfo(device=device))
        marks: dict[int, float] = {}

        def on_step(step: int) -> None:
            if step in (args.warmup - 1, total_steps - 1):
                _sync(device)  # only at the two timing marks: steps stay asynchronous otherwise
                marks[step] = time.perf_counter()

        start = time.perf_counter()
        train_steps(run, total_steps, engine.LossMeter(device), on_step)
        first = marks.get(args.warmup - 1, start)
        step_s = (marks[total_steps - 1] - first) / args.steps
        # The loader alone: the same recipe without the model (decode + augmentation + transfer).
        pipeline = run.pipeline
        t0, seen = time.perf_counter(), 0
        for i, x in enumerate(itertools.islice(pipeline.batches(0, 0), min(args.steps, pipeline.steps_per_epoch))):
            seen += pipeline.transform(x.to(device), i, 0).shape[0]
        _sync(device)
        loader_ips = seen / (time.perf_counter() - t0)
        model = run.model
    images_per_s = args.batch / step_s
    flops = mae_train_flops_per_image(model.cfg)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next(
        (v for k, v in PEAK_BF16.items() if device.type == "cuda" and k in torch.cuda.get_device_name(device)), None)
    return {
        "bench": "pretrain", "recipe": args.recipe, "model": args.model, "batch": args.batch,
        "images_per_s": round(images_per_s, 2), "step_s": round(step_s, 4), "peak_mem_mb": round(_peak_mem_mb(device), 1),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads",
        "mfu": round(flops * images_per_s / peak, 4) if peak else None,
        "gflop_per_image": round(flops / 1e9, 2), "mask_ratio": model.cfg.mask_ratio, "in_chans": model.cfg.in_chans,
        "loader_images_per_s": round(loader_ips, 1), "steps": args.steps, "amp": args.amp, "compile": args.compile,
        "workers": args.workers,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=sorted(PREPARE), default="paper")
    parser.add_argument("--model", choices=list_models(), default="mae_vit_micro_patch8_64")
    parser.add_argument("--batch", type=int, default=32, help="images per step (paper: 64)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--images", type=int, default=0, help="images on disk (default: batch x min(steps, 4))")
    parser.add_argument("--data", help="use this prepared folder (PNG folder for paper, shards for fast)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="DataLoader workers (paper)")
    parser.add_argument("--in-chans", type=int, choices=(1, 3), help="override the model's channels")
    parser.add_argument("--mask-ratio", type=float, help="override the model's mask ratio")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=torch.cuda.is_available(),
                        help="bf16 autocast (CUDA only)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: known bf16 peaks)")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.steps < 1 or args.warmup < 1:
        parser.error("--batch, --steps and --warmup must be positive")
    print(json.dumps(bench(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
