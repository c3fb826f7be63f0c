"""The one-command GPU proof: CUDA correctness checks and throughput benchmarks, one JSON line each.

    bash bench/gpu_check.sh                         # on a GPU machine (<= 8 minutes); $OUT/gpu_check.jsonl
    python bench/gpu_check.py --out results.jsonl   # the same, without the wrapper
    python bench/gpu_check.py --smoke               # CPU smoke mode: tiny model, gloo, a few steps (CI)
    python bench/gpu_check.py --only bf16_loss,pretrain_fast_m25

Correctness (``"ok": true | false``), on fixed phantom inputs and fixed seeds:

- ``bf16_loss``: the MAE loss under bf16 autocast is within 2% of float32, gradients aligned;
- ``compile``: ``torch.compile`` (inductor; ``aot_eager`` in smoke mode) gives eager's loss and gradients;
- ``fused_adamw``: ``AdamW(fused=True)`` equals the single-tensor reference over 3 steps, and its
  first step equals the closed form ``p (1 - lr wd) - lr g / (|g| + eps)``;
- ``ddp_step``: one optimiser step of ``engine.train_one_epoch`` through DistributedDataParallel on
  a 1-process NCCL group (gloo in smoke mode) equals the same step without DDP;
- ``gpu_augment``: the batched on-device augmentation equals the per-image CPU path for the same
  parameters (``transforms.apply_params_image``, cv2).

Benchmarks (``bench/pretrain_throughput.py``'s ``bench``, the product's pipelines and training loop):
images/s, step time, MFU from analytic FLOPs and peak memory for ViT-B/16 (``mae_vit_base_patch16``)
at mask 0.25 and 0.75 with the paper (PNG + DataLoader workers) and fast (shards + on-device
augmentation) recipes at batch 256, the fast recipe compiled, the shard loader into GPU memory,
and encoder inference (``embed``) in bf16.

Every check runs in its own process (forked from a server that imported torch once), under a
timeout, inside an overall budget, so a hang or a CUDA fault costs one line, not the window:
``{"check": ..., "status": "pass"|"fail"|"done"|"error"|"timeout"|"skipped", "seconds": ..., ...}``.
Lines go to stdout and are appended to ``--out``; the last line is a summary.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing as mp
import os
import platform
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import pretrain_throughput  # noqa: E402  (bench/ sibling: the pretraining benchmark)

from usfmae.data.gpu_augment import GpuAugment  # noqa: E402
from usfmae.data.transforms import PAPER, apply_params_image  # noqa: E402
from usfmae.models.encoder import extract_features  # noqa: E402
from usfmae.models.registry import create_model, variant_config  # noqa: E402
from usfmae.shards.store import ShardReader  # noqa: E402
from usfmae.train import engine  # noqa: E402
from usfmae.train.schedule import param_groups  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes of one mode: the GPU run, or the CPU smoke run that keeps the same code paths alive."""

    device: str
    model: str
    batch: int
    steps: int
    warmup: int
    images: int
    compile_backend: str
    ddp_backend: str
    amp: bool
    workers: int
    min_seconds: float
    budget_s: float
    timeout_scale: float  # smoke mode: each check's GPU timeout times this


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


GPU = Profile(device="cuda", model="mae_vit_base_patch16", batch=256, steps=10, warmup=3, images=512,
              compile_backend="inductor", ddp_backend="nccl", amp=True, workers=max(1, _cores() - 2),
              min_seconds=3.0, budget_s=480.0, timeout_scale=1.0)
SMOKE = Profile(device="cpu", model="mae_vit_micro_patch8_64", batch=8, steps=2, warmup=1, images=16,
                compile_backend="aot_eager", ddp_backend="gloo", amp=False, workers=0,
                min_seconds=0.05, budget_s=600.0, timeout_scale=1.0)  # generous: CI machines are shared


def _model(p: Profile, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(p.model, **overrides).to(p.device)


def _img_size(p: Profile) -> int:
    return variant_config(p.model).img_size


def _fixed_batch(p: Profile, work: Path, model: torch.nn.Module, n: int) -> torch.Tensor:
    """The first ``n`` packed phantom frames, resized + normalised for ``model``: (n, C, S, S) float."""
    dc = model.data_contract.to_dict()
    frames = torch.from_numpy(ShardReader(work / "shards").read_batch(np.arange(n))).permute(0, 3, 1, 2)
    resize = GpuAugment(None, dc["img_size"], dc["in_chans"], dc["mean"], dc["std"], enabled=False)
    return resize(frames.to(p.device))


def _loss_and_grads(model: torch.nn.Module, x: torch.Tensor, amp: bool) -> tuple[float, torch.Tensor]:
    """MAE loss with the masking seeded, and all gradients flattened (float32 on the CPU)."""
    model.zero_grad(set_to_none=True)
    generator = torch.Generator(device=x.device).manual_seed(0)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        loss, _, _ = model(x, None, generator)
    loss.backward()
    grads = torch.cat([q.grad.detach().float().flatten().cpu() for q in model.parameters() if q.grad is not None])
    return float(loss.detach()), grads


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


def _sync(p: Profile) -> None:
    if p.device == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------- checks


def check_prepare(p: Profile, work: Path) -> dict:
    """Phantom fixtures shared by every later check: PNG files (paper recipe) and shards (fast)."""
    size = _img_size(p)
    pretrain_throughput.prepare_paper_data(work, p.images, size)
    pretrain_throughput.prepare_fast_data(work, p.images, size)
    return {"images": p.images, "img_size": size}


def check_bf16_loss(p: Profile, work: Path) -> dict:
    model = _model(p)
    x = _fixed_batch(p, work, model, min(16, p.images))
    loss32, grads32 = _loss_and_grads(model, x, amp=False)
    loss16, grads16 = _loss_and_grads(model, x, amp=True)
    rel, cos = abs(loss16 - loss32) / abs(loss32), _cosine(grads16, grads32)
    return {"ok": rel < 0.02 and cos > 0.99, "loss_fp32": round(loss32, 6), "loss_bf16": round(loss16, 6),
            "rel_diff": round(rel, 6), "grad_cosine": round(cos, 6)}


def check_compile(p: Profile, work: Path) -> dict:
    model = _model(p)
    x = _fixed_batch(p, work, model, min(16, p.images))
    loss_eager, grads_eager = _loss_and_grads(model, x, amp=False)
    compiled = torch.compile(model, backend=p.compile_backend)
    start = time.perf_counter()
    loss_comp, grads_comp = _loss_and_grads(compiled, x, amp=False)
    first_s = time.perf_counter() - start
    rel = abs(loss_comp - loss_eager) / abs(loss_eager)
    err = float((grads_comp - grads_eager).abs().max() / grads_eager.abs().max().clamp_min(1e-12))
    return {"ok": rel < 1e-3 and err < 1e-2, "backend": p.compile_backend, "loss_eager": round(loss_eager, 6),
            "loss_compiled": round(loss_comp, 6), "rel_diff": rel, "grad_max_rel_err": round(err, 8),
            "first_call_s": round(first_s, 2)}


def check_fused_adamw(p: Profile, work: Path) -> dict:
    lr, wd, eps, betas = 1e-3, 0.05, 1e-8, (0.9, 0.95)
    fused = torch.optim.AdamW(param_groups(_model(p), wd), lr=lr, betas=betas, eps=eps, fused=True)
    ref = torch.optim.AdamW(param_groups(_model(p), wd), lr=lr, betas=betas, eps=eps, foreach=False, fused=False)
    pairs = [(a, b, bool(ga["weight_decay"])) for ga, gb in zip(fused.param_groups, ref.param_groups, strict=True)
             for a, b in zip(ga["params"], gb["params"], strict=True)]
    start = [a.detach().clone() for a, _, _ in pairs]
    g = torch.Generator().manual_seed(0)
    closed_err = 0.0
    for step in range(3):
        grads = [torch.randn(a.shape, generator=g).to(p.device) for a, _, _ in pairs]
        for (a, b, _), grad in zip(pairs, grads, strict=True):
            a.grad, b.grad = grad.clone(), grad.clone()
        fused.step()
        ref.step()
        if step == 0:
            # Adam's first bias-corrected step is g / (|g| + eps) exactly, after decoupled decay
            for (a, _, decays), a0, grad in zip(pairs, start, grads, strict=True):
                expect = a0 * (1 - lr * wd if decays else 1.0) - lr * grad / (grad.abs() + eps)
                closed_err = max(closed_err, float((a.detach() - expect).abs().max()))
    step_err = max(float((a.detach() - b.detach()).abs().max()) for a, b, _ in pairs)
    return {"ok": step_err < 1e-6 and closed_err < 1e-6, "max_abs_diff_vs_reference": step_err,
            "max_abs_diff_vs_closed_form": closed_err, "steps": 3, "params": sum(a.numel() for a, _, _ in pairs)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_ddp_step(p: Profile, work: Path) -> dict:
    """One step of the product's set-up and loop (``pretrain.setup`` + ``train_steps``), plain and in DDP."""
    import torch.distributed as dist

    from usfmae.train.distributed import DistInfo, all_reduce_mean
    from usfmae.train.pretrain import PretrainConfig, setup, train_steps

    device = torch.device(p.device, 0) if p.device == "cuda" else torch.device("cpu")
    kwargs = {"device_id": device} if p.device == "cuda" else {}
    dist.init_process_group(p.ddp_backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1,
                            **kwargs)
    try:
        batch, results = min(p.batch, 32), []
        for wrap in (False, True):
            cfg = PretrainConfig(data=str(work / "shards"), out=str(work / f"ddp_{wrap}"), model=p.model,
                                 batch_size=batch, steps=1, recipe="fast", amp=False, seed=0, progress=False,
                                 device=p.device)
            run = setup(cfg, DistInfo(device=device))
            if wrap:  # what setup does for world size > 1, on this 1-process group
                run.train_model = torch.nn.parallel.DistributedDataParallel(
                    run.model, device_ids=[0] if p.device == "cuda" else None)
            meter = engine.LossMeter(device)
            train_steps(run, 1, meter)
            loss = meter.sync()  # all-reduce of the loss statistics over the group
            results.append((loss, torch.cat([q.detach().flatten().cpu() for q in run.model.parameters()])))
        probe = all_reduce_mean(torch.ones(4, device=device))
        _sync(p)
    finally:
        dist.destroy_process_group()
    (loss_plain, w_plain), (loss_ddp, w_ddp) = results
    err = float((w_plain - w_ddp).abs().max())
    return {"ok": err < 1e-5 and abs(loss_plain - loss_ddp) < 1e-5 and bool((probe == 1).all()),
            "backend": p.ddp_backend, "loss_plain": loss_plain, "loss_ddp": loss_ddp, "max_abs_weight_diff": err,
            "batch": batch}


def check_gpu_augment(p: Profile, work: Path) -> dict:
    import cv2

    size, n = _img_size(p), 8
    rng = np.random.default_rng(0)
    # smooth images: cv2's fixed-point bilinear weights (1/32 pixel) differ from grid_sample on sharp edges
    imgs = np.stack([cv2.GaussianBlur(rng.uniform(0, 255, (size, size)).astype(np.float32), (0, 0), 1.5)
                     for _ in range(n)])
    imgs = ((imgs - imgs.min()) / (imgs.max() - imgs.min()) * 255).round().astype(np.uint8)
    batch = torch.from_numpy(imgs)[:, None]
    augment = GpuAugment(PAPER, size, 1, [0.0], [1.0])
    params = augment.sample(n, torch.Generator().manual_seed(3))
    out = augment(batch.to(p.device), params=params).cpu()
    err = max(float((out[i] - apply_params_image(batch[i], params, index=i)).abs().max()) for i in range(n))
    return {"ok": err < 2e-3, "max_abs_err": err, "images": n, "size": size}


def _pretrain(recipe: str, mask_ratio: float, compile_model: bool = False) -> Callable[[Profile, Path], dict]:
    def run(p: Profile, work: Path) -> dict:
        args = argparse.Namespace(
            recipe=recipe, model=p.model, batch=p.batch, steps=p.steps, warmup=p.warmup + (2 if compile_model else 0),
            images=p.images, data=str(work / ("png" if recipe == "paper" else "shards")), workers=p.workers,
            in_chans=None, mask_ratio=mask_ratio, device=p.device, threads=0, amp=p.amp, compile=compile_model,
            peak_tflops=None)
        return pretrain_throughput.bench(args)
    return run


def check_loader(p: Profile, work: Path) -> dict:
    from usfmae.data.fast_loader import build_fast_pipeline

    size = _img_size(p)
    pipe = build_fast_pipeline(work / "shards", p.batch, size, 1, [0.5], [0.25], seed=0, device=p.device)
    images, epoch, start = 0, 0, None
    while True:
        pipe.set_epoch(epoch)
        for x in pipe:
            images += len(x)
        _sync(p)
        if start is None:  # the first epoch warms up (pinned buffers, kernels)
            images, start = 0, time.perf_counter()
        elif time.perf_counter() - start >= p.min_seconds:
            break
        epoch += 1
    return {"images_per_s": round(images / (time.perf_counter() - start), 1), "batch": p.batch, "size": size,
            "augment": True}


def check_embed(p: Profile, work: Path) -> dict:
    model = _model(p).eval()
    dc = model.data_contract.to_dict()
    frames = torch.from_numpy(ShardReader(work / "shards").read_batch(np.arange(p.images))).permute(0, 3, 1, 2)
    frames = frames.repeat(max(1, 4 * p.batch // p.images), 1, 1, 1).contiguous()
    extract_features(model, frames[: p.batch], dc["mean"], dc["std"], batch_size=p.batch, device=p.device)
    if p.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # passes over the set until min_seconds have gone: at 10,000 images/s one pass of 1,024 images is
    # 0.1 s, too short to time against start-up jitter (extract_features returns host tensors, so
    # each pass has finished on the device when it returns)
    images, start = 0, time.perf_counter()
    while images == 0 or time.perf_counter() - start < p.min_seconds:
        feats = extract_features(model, frames, dc["mean"], dc["std"], batch_size=p.batch, device=p.device)
        images += len(frames)
    seconds = time.perf_counter() - start
    return {"images_per_s": round(images / seconds, 1), "images": images, "seconds_timed": round(seconds, 3),
            "batch": p.batch,
            "dim": int(feats.shape[1]), "bf16": p.device == "cuda", "model": p.model,
            "peak_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if p.device == "cuda" else None}


# name -> (function, timeout in seconds on the GPU, needs CUDA); run in this order (cheap and
# essential first, so a short window still proves correctness)
CHECKS: dict[str, tuple[Callable[[Profile, Path], dict], float, bool]] = {
    "prepare": (check_prepare, 90, False),
    "bf16_loss": (check_bf16_loss, 60, False),
    "fused_adamw": (check_fused_adamw, 45, False),
    "ddp_step": (check_ddp_step, 60, False),
    "gpu_augment": (check_gpu_augment, 30, False),
    "pretrain_fast_m25": (_pretrain("fast", 0.25), 60, False),
    "pretrain_fast_m75": (_pretrain("fast", 0.75), 60, False),
    "pretrain_paper_m25": (_pretrain("paper", 0.25), 90, False),
    "pretrain_paper_m75": (_pretrain("paper", 0.75), 90, False),
    "loader": (check_loader, 45, False),
    "embed": (check_embed, 45, False),
    "compile": (check_compile, 150, False),
    "pretrain_fast_m25_compiled": (_pretrain("fast", 0.25, compile_model=True), 180, True),
}


# ---------------------------------------------------------------------------------------------- runner


def _child(name: str, profile: Profile, work: str, conn) -> None:
    """Run one check in this process and send its result dict (never raises)."""
    with contextlib.suppress(Exception):
        os.nice(0)
    if profile.device == "cpu":
        torch.set_num_threads(1)
    try:
        result = CHECKS[name][0](profile, Path(work))
        ok = result.pop("ok", None)
        status = "done" if ok is None else ("pass" if ok else "fail")
        conn.send({"status": status, **result})
    except BaseException as exc:  # noqa: BLE001 - reported as one line, the runner goes on
        conn.send({"status": "error", "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"})
    finally:
        conn.close()


def run_check(ctx, name: str, profile: Profile, work: Path, timeout: float) -> dict:
    """One check in a fresh process under ``timeout`` seconds: its JSON record."""
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(name, profile, str(work), child), name=f"gpu_check:{name}")
    start = time.perf_counter()
    proc.start()
    child.close()
    record: dict
    if parent.poll(timeout):
        try:
            record = parent.recv()
        except EOFError:
            record = {"status": "error", "error": "the check process died without a result"}
        proc.join(10)
    else:
        record = {"status": "timeout", "error": f"no result within {timeout:.0f} s"}
    if proc.is_alive():
        proc.kill()
        proc.join()
    if record["status"] == "error" and proc.exitcode not in (0, None):
        record["exitcode"] = proc.exitcode
    return {"check": name, "status": record.pop("status"), "seconds": round(time.perf_counter() - start, 2), **record}


def _emit(record: dict, out: Path | None) -> None:
    line = json.dumps(record, default=float)
    print(line, flush=True)
    if out is not None:
        with out.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU smoke mode: tiny model, gloo, a few steps")
    parser.add_argument("--out", type=Path, help="append the JSON lines to this file too")
    parser.add_argument("--only", help="comma-separated check names (prepare always runs)")
    parser.add_argument("--budget", type=float, help="overall seconds (default: 480 on GPU, 600 smoke)")
    parser.add_argument("--work", type=Path, help="fixture folder (default: a temporary one)")
    args = parser.parse_args(argv)
    profile = SMOKE if args.smoke else GPU
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA GPU is visible; use --smoke for the CPU smoke mode")
    names = list(CHECKS)
    if args.only:
        wanted = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = sorted(wanted - set(CHECKS))
        if unknown:
            parser.error(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS)}")
        names = [n for n in names if n in wanted or n == "prepare"]
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    budget = args.budget or profile.budget_s
    deadline = time.perf_counter() + budget
    ctx = mp.get_context("forkserver")
    # the server imports torch and the product once; every check forks from it with CUDA untouched
    ctx.set_forkserver_preload(["torch", "pretrain_throughput", "usfmae.train.pretrain", "usfmae.data.fast_loader"])
    _emit({"check": "environment", "status": "done", "mode": "smoke" if args.smoke else "gpu",
           "torch": torch.__version__, "python": platform.python_version(), "cores": _cores(),
           "device": torch.cuda.get_device_name() if profile.device == "cuda" else platform.processor() or "cpu",
           "model": profile.model, "batch": profile.batch, "budget_s": budget}, args.out)
    import tempfile

    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="usfmae_gpu_check_") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in names:
            fn, timeout, cuda_only = CHECKS[name]
            left = deadline - time.perf_counter()
            if cuda_only and profile.device != "cuda":
                continue
            if left < 5:
                record = {"check": name, "status": "skipped", "error": "over the overall budget"}
            else:
                record = run_check(ctx, name, profile, work, min(timeout * profile.timeout_scale, left))
            counts[record["status"]] = counts.get(record["status"], 0) + 1
            _emit(record, args.out)
            if name == "prepare" and record["status"] != "done":
                break  # every later check reads the fixtures
    bad = sum(counts.get(s, 0) for s in ("fail", "error", "timeout"))
    _emit({"check": "summary", "status": "fail" if bad else "pass", **counts,
           "seconds": round(budget - (deadline - time.perf_counter()), 1)}, args.out)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
