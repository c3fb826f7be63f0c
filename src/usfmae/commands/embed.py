"""Write encoder features of images to Parquet or NumPy (deterministic, no masking).

INPUT is a folder of images (searched recursively), a `usfmae pack` shard folder (fastest: no
decoding), a Parquet manifest with a `path` column (relative paths are resolved against the
manifest's folder), or a labelled dataset spec KIND:PATH. Unreadable files are skipped, named on one line each and listed in OUT's
`.rejects.jsonl`. Images are decoded and fitted as in pretraining (the encoder's data contract:
size, channels, statistics, and fit: pad = aspect kept with black borders, or stretch; --fit
overrides it); shards packed at that size, channels and fit give the same features. Parquet output has columns `path` and `feature` (a list of D floats);
.npy output is an (N, D) float32 array with the paths in a sibling `.paths.txt`.

Examples:
  usfmae embed --weights demo_out/4_pretrain/checkpoints/final.pt demo_out/1_task/images --out feats.parquet
  usfmae embed --weights usfmae.pt --model mae_vit_base_patch16 --in-chans 3 manifest.parquet --out f.npy
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="image folder, shard folder, Parquet manifest (path column), or KIND:PATH spec")
    parser.add_argument("--weights", help="encoder checkpoint (none: --model from scratch)")
    parser.add_argument("--model", help="registry name (architecture hint for --weights, or the scratch model)")
    parser.add_argument("--in-chans", type=int, choices=[1, 3], help="input channels when the checkpoint does not say")
    parser.add_argument("--out", required=True, help="output file: .parquet or .npy")
    parser.add_argument("--pool", choices=["cls", "mean"], default="cls", help="CLS token or mean of patch tokens")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: 64)")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--num-workers", type=int, default=0, help="image decoding workers (default: 0)")
    parser.add_argument("--fit", choices=["pad", "stretch"],
                        help="how images become square (default: the encoder's pretraining fit, usually pad)")


def run(args: argparse.Namespace) -> int:
    from usfmae.downstream.embed import embed

    overrides = {"in_chans": args.in_chans} if args.in_chans else {}
    summary = embed(args.input, args.out, weights=args.weights, model_name=args.model, pool=args.pool,
                    batch_size=args.batch_size, device=args.device, num_workers=args.num_workers,
                    overrides=overrides, progress=True, fit=args.fit)
    print(f"wrote {summary['n']} x {summary['dim']} features to {args.out}"
          + (f" ({summary['rejected']} file(s) skipped)" if summary["rejected"] else ""))
    return 0
