"""The Python API: lazy top-level names, embed / finetune / predict / explain equal to the CLI's work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import usfmae
from usfmae import api

torch.set_num_threads(1)


def test_import_usfmae_stays_light_and_names_resolve():
    code = "import sys, usfmae; print('torch' in sys.modules, usfmae.embed.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "usfmae.api"]
    assert set(usfmae._API) == set(api.__all__)
    assert usfmae.load_encoder is api.load_encoder and "finetune" in dir(usfmae)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = usfmae.nope


@pytest.fixture(scope="module")
def micro_checkpoint(tmp_path_factory) -> Path:
    from usfmae.models.checkpoint import save_model

    torch.manual_seed(0)
    return save_model(api.create_model("mae_vit_micro_patch8_64"), tmp_path_factory.mktemp("w") / "micro.pt")


def test_embed_folder_equals_the_cli_and_arrays_equal_files(phantom_dataset, micro_checkpoint, tmp_path):
    import cv2
    import pyarrow.parquet as pq

    from usfmae.cli import main

    feats, paths = usfmae.embed(phantom_dataset / "clean", micro_checkpoint)
    assert feats.shape == (32, 128) and len(paths) == 32
    assert main(["embed", "--weights", str(micro_checkpoint), str(phantom_dataset / "clean"),
                 "--out", str(tmp_path / "f.parquet")]) == 0
    table = pq.read_table(tmp_path / "f.parquet")
    assert table.column("path").to_pylist() == paths
    np.testing.assert_array_equal(np.stack(table.column("feature").to_numpy(zero_copy_only=False)), feats)
    # A uint8 array of the same pictures gives the same features (one fit policy for both).
    encoder, info = usfmae.load_encoder(micro_checkpoint)
    arrays = np.stack([cv2.imread(p, cv2.IMREAD_GRAYSCALE) for p in paths[:4]])
    from_arrays = usfmae.embed(arrays, encoder=encoder, info=info)
    assert from_arrays.paths == []
    np.testing.assert_allclose(from_arrays.features, feats[:4], rtol=0, atol=1e-6)


def test_finetune_returns_the_model_whose_predictions_are_the_saved_ones(phantom_dataset, tmp_path):
    seen = []
    result = usfmae.finetune(f"phantom:{phantom_dataset}", model="mae_vit_micro_patch8_64", out=tmp_path / "ft",
                             split="kfold", k=2, folds=[0], epochs=2, batch_size=8, bootstrap=0,
                             augment=False, val_fraction=0.0, on_epoch_end=lambda e, r: seen.append((e, r["fold"])))
    assert seen == [(0, 0), (1, 0)] and set(result.models) == {(0, 0)}
    assert 0.0 <= result.metrics["mean"]["f1_macro"] <= 1.0 and len(result.results) == 1
    saved = json.loads(Path(result.results[0]).read_text())
    ids = saved["predictions"]["id"]
    probs, paths = usfmae.predict(result.model, ids)
    assert paths == ids
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs, np.asarray(saved["predictions"]["y_score"]), rtol=0, atol=2e-6)
    maps = usfmae.explain(result.model, ids[:3])
    assert maps.shape == (3, 64, 64) and float(maps.max()) == 1.0
    again = usfmae.finetune(f"phantom:{phantom_dataset}", model="mae_vit_micro_patch8_64", out=tmp_path / "ft",
                            split="kfold", k=2, folds=[0], epochs=2, batch_size=8, bootstrap=0, augment=False,
                            val_fraction=0.0)
    for a, b in zip(again.model.state_dict().values(), result.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # retrained (not skipped), and deterministic


def test_api_errors_are_usfmae_errors(tmp_path):
    from usfmae.errors import ConfigError, DataError

    with pytest.raises(DataError, match="must be uint8"):
        usfmae.embed(np.zeros((2, 8, 8), np.float32), encoder=api.create_model())
    with pytest.raises(ConfigError):
        usfmae.finetune("phantom:x", out=tmp_path, epochs=0)


def _readme_block(needle: str) -> str:
    """The indented code block of README.md that contains ``needle``, dedented."""
    lines = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8").splitlines()
    start = end = next(i for i, line in enumerate(lines) if needle in line)
    while start > 0 and lines[start - 1].startswith("    "):
        start -= 1
    while end + 1 < len(lines) and lines[end + 1].startswith("    "):
        end += 1
    return "\n".join(line[4:] for line in lines[start:end + 1])


@pytest.mark.slow
def test_readme_api_example_runs_as_written(phantom_dataset, micro_checkpoint, tmp_path, monkeypatch):
    import shutil

    import pyarrow.parquet as pq

    from usfmae.downstream.export import export

    monkeypatch.chdir(tmp_path)
    export(micro_checkpoint, "export", onnx=False)
    shutil.copytree(phantom_dataset / "clean", "my_scans")
    shutil.copytree(phantom_dataset / "clean", "new_scans")
    for row in pq.read_table(phantom_dataset / "manifest.parquet").to_pylist():
        target = Path("my_labelled_set") / row["label"]
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(phantom_dataset / row["clean_path"], target)
    scope: dict = {}
    snippet = _readme_block('usfmae.load_encoder("export/")')
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    assert scope["features"].shape == (32, 128) and scope["probs"].shape == (32, 2)
    assert scope["maps"].shape == (32, 64, 64)


def test_segment_returns_the_saved_model_and_resumes(phantom_dataset, tmp_path):
    from usfmae.contract import normalise, prepare
    from usfmae.fileio import read_json
    from usfmae.imaging import read_image

    settings = dict(model="mae_vit_micro_patch8_64", head="linear", epochs=1, batch_size=8, split="kfold", k=2,
                    folds=[0], bootstrap=0)
    result = usfmae.segment(f"phantom:{phantom_dataset}", out=tmp_path / "seg", **settings)
    assert list(result.models) == [(0, 0)] and result.card["kind"] == "segmenter"
    cell = read_json(result.results[0])
    # The returned network predicts exactly the masks the run wrote for its test images.
    contract = result.card["data_contract"]
    first = cell["predictions"]["id"][0]
    x = normalise(prepare(read_image(first), contract)[None], contract)
    with torch.no_grad():
        mask = result.model(x).argmax(1)[0].numpy()
    saved = read_image(cell["predictions"]["mask_pred"][0])[..., 0]
    assert mask.shape == saved.shape and (mask == saved).all()
    again = usfmae.segment(f"phantom:{phantom_dataset}", out=tmp_path / "seg", **settings)
    assert again.results == result.results and again.metrics == result.metrics  # resumed, not retrained
