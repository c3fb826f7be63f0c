"""Write encoder features of images to Parquet or NumPy (deterministic, no masking).

INPUT is a folder of images (searched recursively), a `usfmae pack` shard folder (fastest: no
decoding), a Parquet manifest with a `path` column (relative paths are resolved against the
manifest's folder), or a labelled dataset spec KIND:PATH. Unreadable files are skipped, named on one line each and listed in OUT's
`.rejects.jsonl`. Images are decoded and fitted as in pretraining (the encoder's data contract:
size, channels, statistics, and fit: pad = aspect kept with black borders, or stretch; --fit
overrides it); shards packed at that size, channels and fit give the same features. Parquet output has columns `path` and `feature` (a list of D floats);
.npy output is an (N, D) float32 array with the paths in a sibling `.paths.txt`. With --shard I/N
(Parquet output) a run embeds only part I of N of the inputs; `usfmae merge` then checks that all N
finished and writes the features one run writes, in the same order.

Examples:
  usfmae embed --weights demo_out/4_pretrain/checkpoints/final.pt demo_out/1_task/images --out feats.parquet
  usfmae embed --weights usfmae.pt --model mae_vit_base_patch16 --in-chans 3 manifest.parquet --out f.npy
"""

from __future__ import annotations

import argparse

from usfmae.config import add_dataclass_arguments, config_from_args
from usfmae.downstream.embed import EmbedConfig, run_embed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="image folder, shard folder, Parquet manifest (path column), or KIND:PATH spec")
    parser.add_argument("--out", required=True, help="output file: .parquet or .npy")
    parser.add_argument("--config", help="YAML preset with any of the settings below")
    add_dataclass_arguments(parser, EmbedConfig, skip=("input", "out"))


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(EmbedConfig, args)
    summary = run_embed(cfg, progress=True)
    print(f"wrote {summary['n']} x {summary['dim']} features to {cfg.out}"
          + (f" ({summary['rejected']} file(s) skipped)" if summary["rejected"] else ""))
    return 0
