"""Export an encoder as timm-compatible safetensors with a model card, and as ONNX.

Writes OUT/model.safetensors (timm VisionTransformer keys, no decoder), OUT/config.json (timm
kwargs and the data contract), OUT/README.md (model card: data, recipe, MIT licence, input
contract, leakage statement) and OUT/encoder.onnx (images -> pooled features, dynamic batch),
which is checked against PyTorch with onnxruntime (max abs difference must be below --tolerance).

Examples:
  usfmae export --weights runs/pretrain/checkpoints/final.pt --out export/
  usfmae export --weights USF-MAE_full_pretrain_43dataset_100epochs.pt --model mae_vit_base_patch16 \\
      --in-chans 3 --pool mean --out export_usfmae/
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="checkpoint: ours, released USF-MAE, facebookresearch MAE")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--model", help="registry name when the checkpoint does not say (e.g. mae_vit_base_patch16)")
    parser.add_argument("--in-chans", type=int, choices=[1, 3], help="input channels when the checkpoint does not say")
    parser.add_argument("--pool", choices=["cls", "mean"], default="cls", help="pooled ONNX output (default: cls)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or newer (default: 17)")
    parser.add_argument("--no-onnx", action="store_true", help="write safetensors and the model card only")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted ONNX-vs-PyTorch difference")


def run(args: argparse.Namespace) -> int:
    from usfmae.downstream.export import export

    overrides = {"in_chans": args.in_chans} if args.in_chans else {}
    summary = export(args.weights, args.out, model_name=args.model, pool=args.pool, onnx=not args.no_onnx,
                     opset=args.opset, tolerance=args.tolerance, overrides=overrides)
    print(f"wrote {summary['safetensors']} and {args.out}/README.md")
    if "onnx" in summary:
        print(f"wrote {summary['onnx']} (opset {summary['opset']}); onnxruntime vs PyTorch max abs diff "
              f"{summary['onnx_max_abs_diff']:.2e}")
    return 0
