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
from pathlib import Path

from usfmae.config import add_dataclass_arguments, config_from_args
from usfmae.downstream.export import ExportConfig, run_export


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="checkpoint: ours, released USF-MAE, facebookresearch MAE; "
                                                         "or a model folder saved by segment / finetune")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--config", help="YAML preset with any of the settings below")
    add_dataclass_arguments(parser, ExportConfig, skip=("weights", "out"))


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(ExportConfig, args)
    summary = run_export(cfg)
    if "kind" in summary:  # a saved classifier / segmenter
        print(f"wrote {summary['onnx']} ({summary['kind']}, opset {summary['opset']}); onnxruntime vs PyTorch "
              f"max abs diff {summary['onnx_max_abs_diff']:.2e}")
        return 0
    print(f"wrote {summary['safetensors']}, {summary.get('hub_config', summary['config'])} and {Path(cfg.out) / 'README.md'} "
          f"(licence: {summary['license']})")
    if "onnx" in summary:
        print(f"wrote {summary['onnx']} (opset {summary['opset']}); onnxruntime vs PyTorch max abs diff "
              f"{summary['onnx_max_abs_diff']:.2e}")
    return 0
