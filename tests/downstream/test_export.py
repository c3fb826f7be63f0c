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
    for needle in ("license: other", "## Data contract", "| channels (in_chans) | 1", "0.449", "## Leakage audit",
                   "usfmae audit", "mask ratio: 0.75", "## Recipe"):
        assert needle in card, needle
    assert not (tmp_path / "encoder.onnx").exists()


def test_export_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    from usfmae.cli import main

    code = main(["export", "--weights", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "missing.pt" in err[0]


# ----------------------------------------------------------------------------------------------------
# Hub-ready folders


@pytest.fixture(scope="module")
def phantom_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint that records phantom pretraining data, as `usfmae pretrain --data phantom:N` writes."""
    torch.manual_seed(1)
    model = registry.create_model("mae_vit_micro_patch8_64")
    return checkpoint.save_model(model, tmp_path_factory.mktemp("ph") / "final.pt",
                                 config={"data": "phantom:64", "steps": 5}, step=5)


def test_hub_folder_loads_in_plain_timm_with_the_contract(phantom_checkpoint: Path, tmp_path: Path,
                                                          caplog) -> None:
    import logging

    import timm

    from usfmae.contract import resolve_contract
    from usfmae.downstream.export import export
    from usfmae.models.encoder import load_encoder

    export(phantom_checkpoint, tmp_path, onnx=False)
    with caplog.at_level(logging.WARNING, logger="timm"):
        vit = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert [r.message for r in caplog.records if r.name.startswith("timm")] == []  # no channel warning
    ours, info = load_encoder(tmp_path)  # the folder is --weights for every verb
    contract = resolve_contract(registry.create_model("mae_vit_micro_patch8_64"))
    data_cfg = timm.data.resolve_model_data_config(vit)
    assert (tuple(data_cfg["input_size"]), tuple(data_cfg["mean"]), tuple(data_cfg["std"])) == (
        (contract.in_chans, contract.img_size, contract.img_size), contract.mean, contract.std)
    assert (info.img_size, info.in_chans, info.mean, info.std) == (64, 1, contract.mean, contract.std)
    x = torch.randn(3, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    original = checkpoint.build_from_checkpoint(phantom_checkpoint).eval()
    with torch.no_grad():
        assert vit(x).shape == (3, 128)  # num_classes 0: pooled CLS features
        assert torch.equal(vit.forward_features(x), ours.eval().forward_features(x))
        assert torch.equal(ours.forward_features(x), original.forward_features(x))


def test_hub_card_licence_is_stated_or_implied_never_mit_by_default(checkpoint_file: Path,
                                                                    phantom_checkpoint: Path, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    from usfmae.downstream.export import export

    licences = {}
    for name, weights, stated in (("unknown", checkpoint_file, None), ("phantom", phantom_checkpoint, None),
                                  ("stated", checkpoint_file, "cc-by-nc-4.0")):
        summary = export(weights, tmp_path / name, onnx=False, license=stated)
        card = ModelCard.load(tmp_path / name / "README.md")  # huggingface_hub parses the front matter
        licences[name] = (summary["license"], card.data.license)
        assert "MIT (code and these weights)" not in card.text
    assert licences == {"unknown": ("other", "other"), "phantom": ("mit", "mit"),
                        "stated": ("cc-by-nc-4.0", "cc-by-nc-4.0")}
    assert "No licence was stated" in (tmp_path / "unknown" / "README.md").read_text()
    assert "synthetic phantom images (`phantom:64`)" in (tmp_path / "phantom" / "README.md").read_text()


def test_hub_card_carries_the_audit_summary(checkpoint_file: Path, tmp_path: Path) -> None:
    from usfmae.downstream.export import export
    from usfmae.errors import UsfmaeError

    audit = tmp_path / "audit"
    audit.mkdir()
    (audit / "summary.md").write_text("# Leakage audit\n\n3 of 40 evaluation frames overlap 2 pretraining frames.\n")
    export(checkpoint_file, tmp_path / "out", onnx=False, audit=audit)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "## Leakage audit\nResult of `usfmae audit` (summary.md):\n\n\n3 of 40 evaluation frames overlap" in card
    with pytest.raises(UsfmaeError, match="no usfmae audit summary"):
        export(checkpoint_file, tmp_path / "out2", onnx=False, audit=tmp_path / "nothing")


def test_hf_format_loads_in_transformers(checkpoint_file: Path, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from usfmae.downstream.export import export

    summary = export(checkpoint_file, tmp_path, onnx=False, format="hf")
    assert summary["config"] == str(tmp_path / "config.json")
    mae = transformers.ViTMAEForPreTraining.from_pretrained(tmp_path).eval()
    ours = checkpoint.build_from_checkpoint(checkpoint_file).eval()
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(4))
    noise = torch.rand(2, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        theirs = mae(pixel_values=x, noise=noise)
        loss, pred, _ = ours(x, generator=torch.Generator().manual_seed(5))
    assert (theirs.logits - pred).abs().max().item() == 0.0 and (theirs.loss - loss).abs().item() == 0.0
    assert "library_name: transformers" in (tmp_path / "README.md").read_text()


def _readme_block(needle: str) -> str:
    """The indented code block of README.md that contains ``needle``, dedented."""
    lines = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8").splitlines()
    hit = next(i for i, line in enumerate(lines) if needle in line)
    start = hit
    while start > 0 and lines[start - 1].startswith("    "):
        start -= 1
    end = hit
    while end + 1 < len(lines) and lines[end + 1].startswith("    "):
        end += 1
    return "\n".join(line[4:] for line in lines[start:end + 1])


def test_readme_timm_snippet_runs_as_written(phantom_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    from usfmae.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["export", "--weights", str(phantom_checkpoint), "--out", "export/", "--no-onnx"]) == 0
    snippet = _readme_block('timm.create_model("local-dir:export/"')
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    assert tuple(scope["config"]["input_size"]) == (1, 64, 64) and scope["features"].shape == (1, 128)
