"""Pretrain a masked autoencoder (MAE) on ultrasound images; resumable, and data-parallel under torchrun.

--data is an image folder (searched recursively), a .parquet manifest (column `path`, optional
`status` = ok), a shard folder from `usfmae pack`, or phantom:N[:SEED] to generate N phantom images
on the fly. A preset (--config FILE or a shipped name, see usfmae presets) sets any subset of the flags
below; flags given win; --tensorboard also writes OUT/tensorboard. The run folder
gets config.yaml, log.jsonl, checkpoints/last.pt (every --ckpt-every steps) and final.pt,
recon_<step>.png grids and loss_curve.png. Stopped runs continue with --resume (same losses and
weights as an uninterrupted run). The learning rate is blr * batch-size / 256 unless --lr is given.

Examples:
  usfmae pretrain --data phantom:2048 --out runs/tiny --config tiny_cpu          # a shipped preset (usfmae presets)
  usfmae pretrain --data corpus/manifest.parquet --out runs/b16 --config usfmae_vit_b16
  usfmae pretrain --out runs/b16 --resume                     # continue where it stopped
  usfmae pretrain --data shards/ --out runs/cont --init-from USF-MAE_full_pretrain_43dataset_100epochs.pt
  torchrun --nproc_per_node 8 -m usfmae.cli pretrain --data shards/ --out runs/b16 --batch-size 512
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import yaml

from usfmae.config import add_dataclass_arguments, build_config
from usfmae.train.pretrain import PretrainConfig
from usfmae.train.pretrain import run as run_pretrain


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML file or shipped preset name (usfmae presets), e.g. tiny_cpu")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from checkpoints/last.pt (its config.yaml is the preset)")
    add_dataclass_arguments(parser, PretrainConfig)


def run(args: argparse.Namespace) -> int:
    fields = PretrainConfig.__dataclass_fields__
    overrides = {k: v for k, v in vars(args).items() if k in fields}
    saved = Path(overrides.get("out", PretrainConfig.out)) / "config.yaml"
    if args.resume and args.config is None and saved.is_file():
        # Resuming needs no flags repeated: the run's own resolved config is the base, except the
        # stop point of the invocation that was stopped.
        values = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
        values.pop("stop_after", None)
        cfg = build_config(PretrainConfig, None, {**values, **overrides})
    else:
        cfg = build_config(PretrainConfig, args.config, overrides)
    result = run_pretrain(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result))
    return 0
