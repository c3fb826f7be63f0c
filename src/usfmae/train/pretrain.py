"""MAE pretraining run: build everything from a :class:`PretrainConfig`, train, checkpoint, resume.

Two halves: :func:`setup` builds the model, optimiser, data pipeline, schedule and masks (resuming
from ``cfg.out`` when asked) and writes nothing; :func:`train` runs it with logging, checkpoints
and figures. ``bench/pretrain_throughput.py`` times the product's own :func:`setup` through
:func:`train_steps`. ``run(cfg)`` joins the two and writes to ``cfg.out``: ``config.yaml`` (resolved settings), ``log.jsonl`` (loss, lr,
images/s), ``checkpoints/last.pt`` every ``ckpt_every`` steps and ``checkpoints/final.pt`` at the
end, ``recon_<step>.png`` reconstruction grids at every checkpoint, ``loss_curve.png`` at the end.

Determinism: the data order is a function of (seed, epoch), each image's augmentation a function
of (seed, epoch, position) and the masking noise a function of (seed, step); a resumed run skips
the batches already consumed, so stopping after k steps and resuming gives the same losses and
weights as an uninterrupted run. ``torchrun`` runs are detected from the environment.

Data pipelines are pluggable (``recipe``): ``paper`` decodes and augments per image in DataLoader
workers (the reference's way); ``fast`` comes from ``usfmae.data.fast_loader.pretrain_pipeline``
(uint8 batches, augmentation on the accelerator). Both return a
:class:`usfmae.data.sampling.DataPipeline`.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from usfmae.config import check, opt, save_config, to_dict
from usfmae.contract import DataContract, normalise
from usfmae.data import transforms as T
from usfmae.data.datasets import build_pretrain_dataset
from usfmae.data.fast_loader import pretrain_pipeline
from usfmae.data.sampling import DataPipeline, StepBatchSampler, local_rows, mix_seed
from usfmae.errors import ConfigError
from usfmae.eval.figures import loss_curve, reconstruction_grid
from usfmae.fileio import RejectLog, append_jsonl, atomic_open, atomic_path, read_jsonl
from usfmae.models.checkpoint import checkpoint_metadata, load_mae_weights, read_checkpoint
from usfmae.models.mae import MaskedAutoencoderViT
from usfmae.models.registry import create_model, list_models
from usfmae.models.serialize import save_checkpoint
from usfmae.runtime import configure_threads, init_worker_threads, progress_bar, worker_start_method
from usfmae.train import engine
from usfmae.train.distributed import DistInfo, barrier, cleanup, init_from_env
from usfmae.train.schedule import effective_lr, lr_at, param_groups, warmup_steps_for
from usfmae.train.watch import tensorboard_writer

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "usfmae-pretrain/1"


@dataclass
class PretrainConfig:
    """Settings of one pretraining run (each field is a ``usfmae pretrain`` flag)."""

    data: str = opt("phantom:512", "image folder, .parquet manifest, shard folder, or phantom:N[:SEED]")
    out: str = opt("runs/pretrain", "output folder (config, log, checkpoints, figures)")
    model: str = opt("mae_vit_micro_patch8_64", "registered model name", choices=list_models)
    in_chans: int | None = opt(None, "input channels: 1 grayscale, 3 RGB (default: the model's)")
    fit: str = opt("pad", "how images become square: pad (aspect kept, black borders) or stretch; recorded in "
                   "the checkpoint's data contract and reused downstream", choices=["pad", "stretch"])
    mask_ratio: float | None = opt(None, "fraction of patches masked (default: the model's; paper 0.25)")
    norm_pix_loss: bool | None = opt(None, "regress per-patch normalised pixels (default: the model's)")
    decoder_num_heads: int | None = opt(None, "decoder attention heads (default: the model's; the released "
                                              "weights use 16, the paper's text 8)")
    epochs: int = opt(10, "passes over the data (ignored when --steps is given)")
    steps: int | None = opt(None, "total optimiser steps (overrides --epochs)")
    batch_size: int = opt(64, "GLOBAL batch: images per optimiser step over all processes and accumulation")
    accum_steps: int = opt(1, "gradient accumulation: micro-batches per optimiser step")
    blr: float = opt(1e-3, "base learning rate per 256 images: lr = blr * batch_size / 256")
    lr: float | None = opt(None, "absolute learning rate (overrides --blr)")
    min_lr: float = opt(0.0, "learning rate at the end of the cosine")
    weight_decay: float = opt(0.01, "AdamW weight decay (not on biases, norms, tokens, positions)")
    warmup_fraction: float = opt(0.1, "share of steps with linear warmup")
    clip_grad: float = opt(1.0, "max gradient norm (0 disables clipping)")
    augment: bool = opt(True, "the paper's augmentations (rotation, flips, random resized crop)")
    rotation: tuple[float, ...] = opt((0.0, 90.0), "rotation range in degrees")
    crop_scale: tuple[float, ...] = opt((0.5, 2.0), "random resized crop area range; > 1 zooms out with padding")
    flip_p: float = opt(0.5, "probability of each of the horizontal and vertical flips")
    gamma: tuple[float, ...] = opt((1.0, 1.0), "intensity gamma range (ultrasound display curves)")
    gain: tuple[float, ...] = opt((1.0, 1.0), "intensity gain range")
    seed: int = opt(0, "seed for init, data order, augmentation and masks")
    ckpt_every: int = opt(500, "write checkpoints/last.pt and a reconstruction grid every N steps")
    log_every: int = opt(20, "read the loss back and log it every N steps")
    stop_after: int | None = opt(None, "stop this invocation after N total steps (continue with --resume)")
    recon_images: int = opt(8, "images in each reconstruction grid")
    init_from: str | None = opt(None, "start from MAE weights (released USF-MAE .pt, facebookresearch MAE, ours)")
    num_workers: int = opt(2, "DataLoader worker processes (paper recipe)")
    amp: bool = opt(True, "bf16 autocast on CUDA")
    compile: bool = opt(False, "torch.compile the model")
    grad_checkpointing: bool = opt(False, "recompute block activations in the backward pass (less memory, "
                                          "about 30% more compute; for large variants / batches)")
    recipe: Literal["paper", "fast"] = opt("paper", "data pipeline: paper (per-image CPU) or fast (shards + GPU)")
    device: str | None = opt(None, "cpu or cuda (default: cuda when available)")
    progress: bool = opt(True, "show a progress bar")
    tensorboard: bool = opt(False, "also write loss, lr and images/s to OUT/tensorboard (needs tensorboard)")

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "accum_steps", "ckpt_every", "log_every"):
            check(getattr(self, name) > 0, f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        check(self.steps is None or self.steps > 0, f"steps must be positive, got {self.steps}")
        check(self.batch_size % self.accum_steps == 0,
              f"batch-size {self.batch_size} must be divisible by accum-steps {self.accum_steps}")
        check(self.blr > 0 and (self.lr is None or self.lr > 0), "learning rates must be positive")
        check(0.0 <= self.warmup_fraction <= 1.0, f"warmup-fraction must be in [0, 1], got {self.warmup_fraction}")
        check(self.mask_ratio is None or 0.0 <= self.mask_ratio < 1.0, f"mask-ratio must be in [0, 1), got {self.mask_ratio}")
        check(self.in_chans in (None, 1, 3), f"in-chans must be 1 or 3, got {self.in_chans}")
        check(len(self.rotation) == 2 and len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1],
              "rotation and crop-scale take two values: low high")
        check(0.0 <= self.flip_p <= 1.0, f"flip-p must be in [0, 1], got {self.flip_p}")
        check(self.recon_images >= 0 and self.num_workers >= 0, "recon-images and num-workers must be >= 0")
        check(self.device in (None, "cpu", "cuda"), f"device must be cpu or cuda, got {self.device!r}")

    def augment_config(self) -> T.AugmentConfig:
        if not self.augment:
            return T.IDENTITY
        return T.AugmentConfig(rotation=tuple(self.rotation), hflip=self.flip_p, vflip=self.flip_p,
                               scale=tuple(self.crop_scale), gamma=tuple(self.gamma), gain=tuple(self.gain))


class _AugmentedView(Dataset):
    """Item ``(index, sample_seed)`` -> normalised float image augmented with that seed."""

    def __init__(self, base: Dataset, aug: T.AugmentConfig, mean: tuple, std: tuple) -> None:
        self.base, self.aug, self.mean, self.std = base, aug, mean, std

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item: tuple[int, int]) -> torch.Tensor:
        index, seed = item
        generator = torch.Generator().manual_seed(seed)
        return T.augment_image(self.base[index], generator, self.aug, self.mean, self.std)


def paper_pipeline(cfg: PretrainConfig, dataset: Dataset, data_config: dict, dist: DistInfo) -> DataPipeline:
    """The reference's recipe: per-image decode + augmentation on the CPU in DataLoader workers."""
    sampler = StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, rank=dist.rank, world_size=dist.world_size,
                               accum_steps=cfg.accum_steps)
    view = _AugmentedView(dataset, cfg.augment_config(), tuple(data_config["mean"]), tuple(data_config["std"]))

    loader: list[DataLoader] = []

    def batches(epoch: int, start_step: int) -> Iterable[torch.Tensor]:
        # The sampler runs in the main process, so moving it on is enough; persistent workers keep
        # their dataset copies (and the phantom cache) from one epoch to the next.
        sampler.set_epoch(epoch, start_step)
        if not loader:
            loader.append(DataLoader(view, batch_sampler=sampler, num_workers=cfg.num_workers,
                                     worker_init_fn=init_worker_threads, persistent_workers=cfg.num_workers > 0,
                                     multiprocessing_context=worker_start_method(cfg.num_workers),
                                     pin_memory=dist.device.type == "cuda"))
        return loader[0]

    return DataPipeline(sampler.steps_per_epoch, batches, lambda x, step, micro: x.float())


def build_pipeline(cfg: PretrainConfig, dataset: Dataset, data_config: dict, dist: DistInfo) -> DataPipeline:
    """The data recipe named by ``cfg.recipe``."""
    if cfg.recipe == "fast":  # shards + uint8 batches + augmentation on the accelerator
        return pretrain_pipeline(cfg, dataset, data_config, dist)
    return paper_pipeline(cfg, dataset, data_config, dist)


def mask_generator_fn(cfg: PretrainConfig, dist: DistInfo, num_patches: int) -> engine.MaskGenerator:
    """(step, micro) -> generator whose next (b, L) draw is this rank's rows of the step's noise.

    On the CPU the global batch's noise is one stream seeded by (seed, step); a rank skips the rows
    of the blocks before its own, so any world size or accumulation draws the same masks. CUDA
    generators cannot skip cheaply, so there the rank and micro-step are mixed into the seed.
    """
    def make(step: int, micro: int) -> torch.Generator:
        g = torch.Generator(device=dist.device)
        if dist.device.type == "cpu":
            g.manual_seed(mix_seed(cfg.seed, step, 0x3A5C))
            skip = local_rows(cfg.batch_size, dist.world_size, cfg.accum_steps, dist.rank, micro).start
            if skip:
                torch.rand(skip * num_patches, generator=g)
        else:
            g.manual_seed(mix_seed(cfg.seed, step, micro, dist.rank, 0x3A5C))
        return g

    return make


def _rng_state() -> dict[str, Any]:
    """Every global RNG, as tensors and plain containers (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fixed_images(dataset: Dataset, n: int, contract: DataContract) -> torch.Tensor:
    """The first ``n`` images, normalised, unaugmented: (n, C, H, W) float for reconstruction grids."""
    n = min(n, len(dataset))
    if n == 0:
        return torch.empty(0)
    return normalise(torch.stack([dataset[i] for i in range(n)]), contract)


def read_run_state(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`train`, as one dict (``"model"``, ``"optimizer"``, ``"rng"``,
    ``"step"``, ...), read by :func:`usfmae.models.checkpoint.read_checkpoint`.

    Raises:
        ConfigError: the file is not a usfmae pretraining checkpoint.
    """
    state, meta = read_checkpoint(path)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path}: not a usfmae pretraining checkpoint")
    return {"model": state, **meta}


def _model_overrides(cfg: PretrainConfig) -> dict[str, Any]:
    pairs = {"in_chans": cfg.in_chans, "mask_ratio": cfg.mask_ratio, "norm_pix_loss": cfg.norm_pix_loss,
             "decoder_num_heads": cfg.decoder_num_heads, "fit": cfg.fit}
    return {k: v for k, v in pairs.items() if v is not None}


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records written after the checkpoint we resume from (they will be redone)."""
    if path.exists():
        keep = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
        with atomic_open(path, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in keep)


@dataclass
class PretrainSetup:
    """Everything a pretraining run trains with, as built by :func:`setup`.

    Attributes:
        model: the MAE itself (checkpoints and figures use it).
        train_model: what the loop calls: ``model``, wrapped in DDP and/or compiled as configured.
        pipeline: the data recipe's batches and on-device transform.
        masks: (step, micro) -> masking generator.
        total_steps: optimiser steps of the whole run; end_step: where this invocation stops.
        step: the next step to run (0, or the step of the checkpoint resumed from).
        resumed: the run state resumed from (:func:`read_run_state`), or None.
    """

    cfg: PretrainConfig
    dist: DistInfo
    model: MaskedAutoencoderViT
    train_model: nn.Module
    optimizer: torch.optim.Optimizer
    dataset: Dataset
    data_config: dict[str, Any]
    pipeline: DataPipeline
    masks: engine.MaskGenerator
    total_steps: int
    end_step: int
    base_lr: float
    warmup_steps: int
    step: int = 0
    resumed: dict[str, Any] | None = None

    def lr(self, step: int) -> float:
        """The learning rate of optimiser step ``step`` (warmup + cosine)."""
        return lr_at(step, self.total_steps, self.base_lr, self.warmup_steps, self.cfg.min_lr)


def setup(cfg: PretrainConfig, dist: DistInfo | None = None, resume: bool = False) -> PretrainSetup:
    """Build the run ``cfg`` describes; with ``resume``, continue from ``cfg.out/checkpoints/last.pt``.

    Nothing is written (only a rejected input file is recorded in ``cfg.out/rejects.jsonl``).

    Raises:
        ConfigError: bad settings, too few images, or ``cfg.out`` holds a run and ``resume`` is False.
    """
    dist = dist or DistInfo(device=torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")))
    out = Path(cfg.out)
    last_path = out / "checkpoints" / "last.pt"
    state = None
    if last_path.exists():
        if not resume:
            raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        state = read_run_state(last_path)
    elif resume:
        log.info("no checkpoint in %s yet: starting from step 0", last_path.parent)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)

    model = create_model(cfg.model, **_model_overrides(cfg))
    model.set_grad_checkpointing(cfg.grad_checkpointing)
    if cfg.init_from and state is None:
        load_mae_weights(model, cfg.init_from)
    contract = model.data_contract
    data_config = contract.to_dict()
    rejects = RejectLog(out / "rejects.jsonl") if dist.is_main else None
    dataset = build_pretrain_dataset(cfg.data, contract.img_size, contract.in_chans, rejects, fit=contract.fit)
    if len(dataset) < cfg.batch_size:
        raise ConfigError(f"{cfg.data} has {len(dataset)} images, fewer than one global batch ({cfg.batch_size})")
    pipeline = build_pipeline(cfg, dataset, data_config, dist)
    total = cfg.steps or cfg.epochs * pipeline.steps_per_epoch
    base_lr = cfg.lr or effective_lr(cfg.blr, cfg.batch_size)

    device = dist.device
    model.to(device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=base_lr, betas=(0.9, 0.95),
                                  fused=device.type == "cuda")
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        step = int(state["step"])
    train_model: nn.Module = model
    if dist.distributed:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.local_rank] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)
    return PretrainSetup(cfg, dist, model, train_model, optimizer, dataset, data_config, pipeline,
                         mask_generator_fn(cfg, dist, model.cfg.num_patches), total,
                         min(total, cfg.stop_after or total), base_lr, warmup_steps_for(total, cfg.warmup_fraction),
                         step, state)


def train_steps(s: PretrainSetup, end: int, meter: engine.LossMeter,
                on_step: Callable[[int], None] | None = None) -> int:
    """Run optimiser steps ``s.step .. end - 1`` epoch by epoch through the engine; returns (and
    records in ``s.step``) the step reached. ``on_step(step)`` runs after each optimiser step."""
    cfg = s.cfg
    while s.step < end:
        epoch, in_epoch = divmod(s.step, s.pipeline.steps_per_epoch)
        todo = min(end - s.step, s.pipeline.steps_per_epoch - in_epoch)
        batches = itertools.islice(s.pipeline.batches(epoch, in_epoch), todo * cfg.accum_steps)
        result = engine.train_one_epoch(
            s.train_model, batches, s.optimizer, device=s.dist.device, first_step=s.step,
            accum_steps=cfg.accum_steps, lr_fn=s.lr, batch_transform=s.pipeline.transform, meter=meter,
            mask_generator=s.masks, clip_grad=cfg.clip_grad or None, amp=cfg.amp, on_step=on_step)
        s.step += result["steps"]
        if not result["steps"]:
            break  # an empty epoch (cannot happen with >= 1 global batch; guards against a loop)
    return s.step


def run(cfg: PretrainConfig, resume: bool = False) -> dict[str, Any]:
    """Pretrain as ``cfg`` says, or continue the run in ``cfg.out`` when ``resume`` is set.

    Returns:
        {"step", "total_steps", "loss" (last logged), "images_per_s", "checkpoint", "out"}.

    Raises:
        ConfigError: bad settings, or ``cfg.out`` holds a run and ``resume`` is False.
        NonFiniteLossError: the loss diverged; the message names the last good checkpoint.
    """
    # The step's math gets the idle cores. The paper recipe's DataLoader workers (one thread each)
    # decode in the step's gaps rather than beside it: on the idle 2-core machine, with 2 workers,
    # 2 torch threads gave 256 images/s against 194 with 1 (bench/threads.py). The fast recipe has
    # one prefetch thread. Cores other processes hold are still left out (runtime.idle_cores).
    configure_threads(None, 0)
    dist = init_from_env(cfg.device)
    try:
        return train(setup(cfg, dist, resume))
    finally:
        cleanup()


def train(s: PretrainSetup) -> dict[str, Any]:
    """Train ``s`` to ``s.end_step``: log every ``log_every`` steps, checkpoint and draw a
    reconstruction grid every ``ckpt_every``, write ``final.pt`` and the loss curve at the end."""
    cfg, dist, model, pipeline = s.cfg, s.dist, s.model, s.pipeline
    out = Path(cfg.out)
    ckpt_dir, log_path = out / "checkpoints", out / "log.jsonl"
    last_path = ckpt_dir / "last.pt"
    total, end = s.total_steps, s.end_step
    fixed = _fixed_images(s.dataset, cfg.recon_images, DataContract.from_dict(s.data_config))
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        _truncate_log(log_path, s.step)
        log.info("%s on %s: %d images, %d steps (%d per epoch), global batch %d, lr %.3g, world size %d",
                 cfg.model, dist.device, len(s.dataset), total, pipeline.steps_per_epoch, cfg.batch_size,
                 s.base_lr, dist.world_size)

    bar = progress_bar(total=end, initial=s.step, enabled=dist.is_main and cfg.progress, unit="step",
               dynamic_ncols=True)
    meter = engine.LossMeter(dist.device)
    board = tensorboard_writer(out) if cfg.tensorboard and dist.is_main else None
    clock = {"t": time.perf_counter(), "step": s.step, "loss": None, "start": time.perf_counter(),
             "start_step": s.step}

    def save(done: int) -> None:
        """Checkpoint + reconstruction grid after ``done`` steps (rank 0); the loss was checked finite."""
        if not dist.is_main:
            return
        payload = {
            "format": CHECKPOINT_FORMAT, "step": done, "epoch": done // pipeline.steps_per_epoch,
            "model": model.state_dict(), "optimizer": s.optimizer.state_dict(),
            "scheduler": {"step": done, "total_steps": total, "warmup_steps": s.warmup_steps, "base_lr": s.base_lr,
                          "min_lr": cfg.min_lr},
            "scaler": None,  # bf16 autocast needs no loss scaling
            "rng": _rng_state(),
            "data_order": {"seed": cfg.seed, "epoch": done // pipeline.steps_per_epoch,
                           "step_in_epoch": done % pipeline.steps_per_epoch},
            "config": to_dict(cfg), **checkpoint_metadata(model),  # model_name, model_cfg, data_contract
        }
        save_checkpoint(payload, last_path)
        if len(fixed):
            reconstruction_grid(model, fixed, s.data_config, out / f"recon_{done:07d}.png", seed=cfg.seed)

    def on_step(step: int) -> None:
        done = step + 1
        bar.update(1)
        at_ckpt = done % cfg.ckpt_every == 0 or done == end
        if done % cfg.log_every and not at_ckpt:
            return
        loss = meter.sync()  # raises NonFiniteLossError before anything is saved
        now = time.perf_counter()
        ips = (done - clock["step"]) * cfg.batch_size / max(now - clock["t"], 1e-9)
        clock.update(t=now, step=done, loss=loss)
        if dist.is_main:
            record = {"step": done, "epoch": step // pipeline.steps_per_epoch, "loss": loss, "lr": s.lr(step),
                      "images_per_s": round(ips, 2)}
            append_jsonl(log_path, record)
            if board is not None:
                for key in ("loss", "lr", "images_per_s"):
                    board.add_scalar(f"pretrain/{key}", record[key], done)
            bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{ips:.0f}")
        if at_ckpt:
            save(done)
            clock["t"] = time.perf_counter()  # images/s measures training, not checkpoint writing

    try:
        train_steps(s, end, meter, on_step)
    except engine.NonFiniteLossError as exc:
        where = f"the last good checkpoint is {last_path}" if last_path.exists() else "no checkpoint was written"
        raise engine.NonFiniteLossError(f"{exc}; stopped, {where}") from exc
    finally:
        bar.close()
        if board is not None:
            board.close()
    if dist.is_main:
        if s.step == total:
            with atomic_path(ckpt_dir / "final.pt") as tmp:
                shutil.copyfile(last_path, tmp)  # streamed: a ViT-B checkpoint with its optimizer is ~1.3 GB
        loss_curve(read_jsonl(log_path), out / "loss_curve.png")
    # Leave together: a rank that tears down gloo while rank 0 is still writing can abort
    # ("terminate called without an active exception"), failing a run that succeeded.
    barrier()
    elapsed = time.perf_counter() - clock["start"]
    return {"step": s.step, "total_steps": total, "loss": clock["loss"], "checkpoint": str(last_path),
            "images_per_s": (s.step - clock["start_step"]) * cfg.batch_size / max(elapsed, 1e-9), "out": str(out)}
