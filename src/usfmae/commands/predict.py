"""Apply a saved classifier or segmenter to new images: a file, a folder, a manifest or a DICOM.

MODEL is a folder written by `usfmae segment` or `usfmae finetune` (OUT/<cell>/model, holding
model.safetensors + model.json). A classifier writes OUT/predictions.csv with the class
probabilities; a segmenter writes label-index mask PNGs at each image's original size
(OUT/masks), overlays (OUT/overlays) and OUT/predictions.csv with class pixel counts.

Examples:
  usfmae predict runs/busbra_seg/busbra__..._fold0__seed0/model ~/scans --out busbra_masks
  usfmae predict runs/busbra_cls/.../model study.dcm --out study_predictions --fps 3
"""

from __future__ import annotations

import argparse
import json

from usfmae.config import add_dataclass_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from usfmae.downstream.predict import PredictConfig

    parser.add_argument("model", help="saved model folder (or its model.json)")
    parser.add_argument("input", help="image, folder, manifest (.parquet/.csv) or DICOM file")
    add_dataclass_arguments(parser, PredictConfig, skip=("model", "input"))


def run(args: argparse.Namespace) -> int:
    from usfmae.config import config_from_args
    from usfmae.downstream.predict import PredictConfig, predict

    cfg = config_from_args(PredictConfig, args)
    print(json.dumps({"out": cfg.out, **predict(cfg)}))
    return 0
