"""Export an encoder: a folder timm and the Hugging Face hub understand, a model card, and ONNX.

--format hub (default) writes OUT/config.json (timm hub config: architecture, model_args and the data
contract as pretrained_cfg: input size with channels, mean, std, num_classes 0), OUT/model.safetensors
(timm VisionTransformer keys, no decoder), OUT/README.md (model card: data, recipe, leakage audit,
licence) and OUT/encoder.onnx (images -> pooled features, dynamic batch, checked against PyTorch with
onnxruntime: max abs difference below --tolerance). timm loads the folder with
timm.create_model("local-dir:OUT", pretrained=True), every usfmae verb with --weights OUT, and after
huggingface_hub's upload_folder both take hf-hub:ORG/NAME. --format hf writes a transformers
ViTMAEForPreTraining folder (encoder and decoder) instead.

The licence in the card is the one --license states; without it, only weights pretrained on phantom
data are MIT (synthetic, made by usfmae); others are "other", with a note to check the data's terms.

Examples:
  usfmae pretrain --data phantom:64 --steps 5 --out runs/tiny
  usfmae export --weights runs/tiny/checkpoints/final.pt --out export/
  usfmae export --weights USF-MAE_full_pretrain_43dataset_100epochs.pt --in-chans 3 --pool mean \\
      --license other --audit audit/ --out export_usfmae/
  usfmae export --weights runs/tiny/checkpoints/final.pt --format hf --no-onnx --out export_hf/
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="checkpoint: ours, released USF-MAE, facebookresearch MAE; "
                                                         "or a model folder saved by segment / finetune")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--model", help="registry name when the checkpoint does not say (e.g. mae_vit_base_patch16)")
    parser.add_argument("--in-chans", type=int, choices=[1, 3], help="input channels when the checkpoint does not say")
    parser.add_argument("--pool", choices=["cls", "mean"], default="cls", help="pooled ONNX output (default: cls)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or newer (default: 17)")
    parser.add_argument("--no-onnx", action="store_true", help="write safetensors and the model card only")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted ONNX-vs-PyTorch difference")
    parser.add_argument("--format", choices=["hub", "hf"], default="hub",
                        help="hub: timm / huggingface_hub folder (default); hf: transformers ViTMAE folder")
    parser.add_argument("--license", help="licence of the weights as a hub id (e.g. cc-by-nc-4.0, mit, other); "
                                          "default: what the pretraining data implies")
    parser.add_argument("--audit", help="a `usfmae audit` output folder to summarise in the model card")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from usfmae.downstream.export import export, export_task_model

    if (Path(args.weights) / "model.json").is_file() or Path(args.weights).name == "model.json":
        # a model saved by `usfmae segment` / `usfmae finetune`: its files plus model.onnx (logits)
        summary = export_task_model(args.weights, args.out, opset=args.opset, tolerance=args.tolerance)
        print(f"wrote {summary['onnx']} ({summary['kind']}, opset {summary['opset']}); onnxruntime vs PyTorch "
              f"max abs diff {summary['onnx_max_abs_diff']:.2e}")
        return 0

    overrides = {"in_chans": args.in_chans} if args.in_chans else {}
    summary = export(args.weights, args.out, model_name=args.model, pool=args.pool, onnx=not args.no_onnx,
                     opset=args.opset, tolerance=args.tolerance, overrides=overrides, format=args.format,
                     license=args.license, audit=args.audit)
    print(f"wrote {summary['safetensors']}, {summary.get('hub_config', summary['config'])} and {args.out}/README.md "
          f"(licence: {summary['license']})")
    if "onnx" in summary:
        print(f"wrote {summary['onnx']} (opset {summary['opset']}); onnxruntime vs PyTorch max abs diff "
              f"{summary['onnx_max_abs_diff']:.2e}")
    return 0
