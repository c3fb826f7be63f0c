"""`finetune --weights X` without `--model` labels results with X's architecture, not a default."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from usfmae.models.checkpoint import architecture_name, save_model
from usfmae.models.registry import create_model
from usfmae.train.finetune import FinetuneConfig, row_label, run


def test_label_comes_from_the_weights(phantom_dataset, tmp_path):
    torch.manual_seed(0)
    weights = save_model(create_model("mae_vit_micro_patch8_64"), tmp_path / "micro.pt")
    cfg = FinetuneConfig(data=f"phantom:{phantom_dataset}", weights=str(weights), out=str(tmp_path / "ft"),
                         mode="linear", split="kfold", k=2, folds=[0], bootstrap=0)
    assert cfg.model is None and row_label(cfg) == "mae_vit_micro_patch8_64 (linear probe)"
    done = run(cfg)
    assert json.loads(Path(done["cells"][0]).read_text())["model"] == "mae_vit_micro_patch8_64 (linear probe)"
    assert FinetuneConfig(data="phantom:x").model == "mae_vit_base_patch16"  # no weights: the paper's, scratch


def test_architecture_of_foreign_and_unregistered_weights(tmp_path):
    torch.manual_seed(0)
    state = create_model("mae_vit_micro_patch8_64", depth=3).state_dict()
    torch.save(state, tmp_path / "foreign.pt")  # no recorded name or config: shapes decide
    assert architecture_name(tmp_path / "foreign.pt") == "vit_128x3"
