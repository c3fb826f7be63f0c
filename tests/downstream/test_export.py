"""Export: timm-compatible safetensors, model card, ONNX matching PyTorch within 1e-4."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from usfmae.models import checkpoint, registry
from usfmae.models.encoder import PooledEncoder


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = registry.create_model("mae_vit_micro_patch8_64")
    return checkpoint.save_model(model, tmp_path_factory.mktemp("ckpt") / "micro.pt")


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_onnx_matches_pytorch(checkpoint_file: Path, tmp_path: Path, pool: str) -> None:
    import onnxruntime as ort

    from usfmae.downstream.export import export

    summary = export(checkpoint_file, tmp_path, pool=pool)
    assert summary["onnx_max_abs_diff"] < 1e-4 and summary["opset"] == 17
    # Independent check at another batch size (the graph's batch axis is dynamic).
    model = checkpoint.build_from_checkpoint(checkpoint_file).eval()
    x = torch.randn(5, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = PooledEncoder(model, pool)(x).numpy()
    session = ort.InferenceSession(str(tmp_path / "encoder.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["features"], {"images": x.numpy()})[0]
    assert got.shape == (5, 128)
    assert np.abs(got - expected).max() < 1e-4


def test_safetensors_load_into_timm_and_card_states_contract(checkpoint_file: Path, tmp_path: Path) -> None:
    import timm
    from safetensors.torch import load_file

    from usfmae.downstream.export import export

    export(checkpoint_file, tmp_path, onnx=False)
    config = json.loads((tmp_path / "model.json").read_text())
    vit = timm.create_model(config["architecture"], pretrained=False, num_classes=0, **config["model_args"]).eval()
    vit.load_state_dict(load_file(tmp_path / "model.safetensors"))  # strict: every key matches
    ours = checkpoint.build_from_checkpoint(checkpoint_file).eval()
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(vit(x), ours.forward_features(x)[:, 0], atol=1e-5, rtol=1e-5)
    card = (tmp_path / "README.md").read_text()
    for needle in ("license: mit", "## Data contract", "| channels (in_chans) | 1", "0.449", "## Leakage statement",
                   "usfmae audit", "mask ratio: 0.75", "## Recipe"):
        assert needle in card, needle
    assert not (tmp_path / "encoder.onnx").exists()


def test_export_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    from usfmae.cli import main

    code = main(["export", "--weights", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "missing.pt" in err[0]
