"""Saved task models: the card rebuilds the network, weights reload strictly, outputs are identical."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from usfmae.contract import imagenet_contract
from usfmae.errors import DataError, UsfmaeError
from usfmae.models.classifier import EncoderClassifier, encoder_from_mae
from usfmae.models.registry import create_model
from usfmae.models.saved import build_task_model, load_task_model, save_task_model
from usfmae.models.seg_linear import LinearSegmenter
from usfmae.models.seg_pyramid import PyramidSegmenter
from usfmae.models.seg_unet import create_unet


def _encoder():
    return encoder_from_mae(create_model("mae_vit_micro_patch8_64"))


def _cases():
    enc_cfg = _encoder().cfg.to_dict()
    return {
        "mae-classifier": (lambda: EncoderClassifier(_encoder(), 3, pool="mean"), "classifier",
                           {"family": "mae", "head": "mean", "num_classes": 3, "encoder_cfg": enc_cfg}),
        "mae-linear": (lambda: LinearSegmenter(_encoder(), 2), "segmenter",
                       {"family": "mae", "head": "linear", "num_classes": 2, "encoder_cfg": enc_cfg}),
        "mae-pyramid": (lambda: PyramidSegmenter(_encoder(), 3), "segmenter",
                        {"family": "mae", "head": "pyramid", "num_classes": 3, "encoder_cfg": enc_cfg,
                         "indices": [0, 1, 2, 3], "channels": 64}),
        "unet": (lambda: create_unet(2, 1, img_size=64), "segmenter",
                 {"family": "unet_resnet50", "num_classes": 2, "in_chans": 1, "img_size": 64}),
    }


@pytest.mark.parametrize("name", ["mae-classifier", "mae-linear", "mae-pyramid", "unet"])
def test_round_trip_gives_identical_outputs(tmp_path: Path, name: str) -> None:
    make, kind, arch = _cases()[name]
    torch.manual_seed(0)
    model = make().eval()
    with torch.no_grad():  # move BatchNorm statistics off their defaults, as training does
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
    x = torch.randn(2, 1, 64, 64)
    contract = imagenet_contract(64, 1)
    save_task_model(tmp_path / "m", model, kind=kind, arch=arch, contract=contract, classes=["a", "b", "c"][:2],
                    protocol={"dataset": "phantom"})
    loaded, card = load_task_model(tmp_path / "m")
    assert card["kind"] == kind and card["data_contract"] == contract and card["protocol"]["dataset"] == "phantom"
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert load_task_model(tmp_path / "m" / "model.safetensors")[1]["arch"] == arch


def test_wrong_arch_and_not_a_model(tmp_path: Path) -> None:
    make, kind, arch = _cases()["mae-linear"]
    with pytest.raises(UsfmaeError, match="does not describe"):
        save_task_model(tmp_path / "m", make(), kind=kind, arch={**arch, "head": "pyramid"},
                        contract=imagenet_contract(64, 1), classes=["bg", "fg"])
    with pytest.raises(DataError, match="not a saved usfmae model"):
        load_task_model(tmp_path / "nothing")
    with pytest.raises(UsfmaeError, match="unknown task-model architecture"):
        build_task_model({"family": "alexnet"})
