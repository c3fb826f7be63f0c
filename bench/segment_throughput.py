"""Segmentation training and inference throughput per head; one JSON line per model.

    python bench/segment_throughput.py [--model mae_vit_base_patch16] [--size 224] [--batch 8]
        [--steps 5] [--heads linear pyramid unet] [--device cuda]

For each head (linear probe and feature pyramid on the encoder, and the U-Net ResNet-50 baseline)
it times ``--steps`` optimiser steps of Dice + cross-entropy on random images (after one warm-up
step; bf16 autocast on CUDA) and ``--steps`` inference batches, and reports images/s, the CPU
images/s (what an uncontended core would do, on CPU), peak memory (CUDA: max allocated; CPU: peak
RSS of the process) and the load average, since the shared CPU machines are rarely idle.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import torch

from usfmae.train.segment import SegmentConfig, build_segmenter, dice_ce_loss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_head(model_name: str, head: str, size: int, batch: int, steps: int, device: torch.device) -> dict:
    name = "unet_resnet50" if head == "unet" else model_name
    overrides = {"img_size": size, "in_chans": 1}
    cfg = SegmentConfig(data="x", model=name, head="pyramid" if head == "unet" else head, **overrides)
    model, _, _, _ = build_segmenter(cfg, 2)
    model.to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randn(batch, 1, size, size, device=device)
    y = torch.randint(0, 2, (batch, size, size), device=device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def train_step() -> None:
        with amp:
            out = model(x)
        loss = dice_ce_loss(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    train_step()
    _sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        train_step()
    _sync(device)
    train_s, train_cpu = time.perf_counter() - start, time.process_time() - cpu
    model.eval()
    with torch.no_grad(), amp:
        model(x)
        _sync(device)
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            model(x)
        _sync(device)
    infer_s, infer_cpu = time.perf_counter() - start, time.process_time() - cpu
    n = steps * batch
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result = {"bench": "segment", "model": name, "head": None if head == "unet" else head, "size": size,
              "batch": batch, "device": str(device), "train_images_per_s": round(n / train_s, 2),
              "infer_images_per_s": round(n / infer_s, 2), "peak_memory_mb": round(peak, 1),
              "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2), "steps": steps,
              "threads": torch.get_num_threads(), "load_avg_1min": round(os.getloadavg()[0], 2)}
    if device.type == "cpu":
        result.update(train_images_per_cpu_s=round(n / train_cpu, 2), infer_images_per_cpu_s=round(n / infer_cpu, 2))
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mae_vit_base_patch16", help="encoder registry name")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--heads", nargs="+", default=["linear", "pyramid", "unet"],
                        choices=["linear", "pyramid", "unet"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = []
    for head in args.heads:
        result = bench_head(args.model, head, args.size, args.batch, args.steps, torch.device(args.device))
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
