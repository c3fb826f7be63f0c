"""usfmae predict: a saved segmenter / classifier reloaded gives the outputs of the end of training."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from usfmae import cli
from usfmae.fileio import read_json
from usfmae.train import finetune, segment


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def segmenter(phantom_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("segrun")
    cfg = segment.SegmentConfig(data=f"phantom:{phantom_dataset}", out=str(out), model="mae_vit_micro_patch8_64",
                                head="linear", epochs=2, batch_size=8, lr=1e-3, split="kfold", k=2, folds=[0],
                                bootstrap=0)
    return read_json(segment.run(cfg)["cells"][0])


def test_saved_segmenter_reproduces_the_test_masks(segmenter: dict, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for source in segmenter["predictions"]["id"][:5]:
        (folder / Path(source).name).write_bytes(Path(source).read_bytes())
    (folder / "broken.png").write_bytes(b"not a png")
    code = cli.main(["predict", segmenter["training"]["model"], str(folder), "--out", str(tmp_path / "out")])
    assert code == 0 and '"kind": "segmenter"' in capsys.readouterr().out
    rows = _rows(tmp_path / "out" / "predictions.csv")
    assert len(rows) == 5 and set(rows[0]) >= {"source", "frame", "mask", "overlay", "pixels_background"}
    expected = dict(zip(segmenter["predictions"]["id"], segmenter["predictions"]["mask_pred"], strict=True))
    for row in rows:
        original = next(p for p in expected if Path(p).name == Path(row["source"]).name)
        assert np.array_equal(cv2.imread(row["mask"], cv2.IMREAD_UNCHANGED),
                              cv2.imread(expected[original], cv2.IMREAD_UNCHANGED))
        assert cv2.imread(row["overlay"]).shape == (64, 64, 3)
    rejects = read_rejects(tmp_path / "out" / "rejects.jsonl")
    assert [Path(r["file"]).name for r in rejects] == ["broken.png"]


def test_a_name_that_is_not_utf8_is_one_reject_and_the_rest_is_written(segmenter: dict, tmp_path: Path,
                                                                         capsys) -> None:
    """predictions.csv is UTF-8; such a name once crashed the whole run at the end (a traceback,
    every prediction lost)."""
    folder = tmp_path / "in"
    folder.mkdir()
    source = Path(segmenter["predictions"]["id"][0])
    (folder / "good.png").write_bytes(source.read_bytes())
    bad = os.fsdecode(os.fsencode(folder) + b"/\xff\xfe_latin1.png")
    Path(bad).write_bytes(source.read_bytes())
    code = cli.main(["predict", segmenter["training"]["model"], str(folder), "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    assert [Path(r["source"]).name for r in _rows(tmp_path / "out" / "predictions.csv")] == ["good.png"]
    (reject,) = read_rejects(tmp_path / "out" / "rejects.jsonl")
    assert reject["reason"] == "file name is not valid UTF-8 (rename the file)"


def read_rejects(path: Path) -> list[dict]:
    from usfmae.fileio import read_jsonl

    return read_jsonl(path)


def test_segmenter_masks_come_back_at_the_original_size_and_dicom(segmenter: dict, tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    from usfmae.downstream.predict import PredictConfig, predict

    wide = tmp_path / "wide.png"
    cv2.imwrite(str(wide), np.random.default_rng(0).integers(0, 255, (30, 70), dtype=np.uint8))
    out = predict(PredictConfig(model=segmenter["training"]["model"], input=str(wide), out=str(tmp_path / "a")))
    assert out["n"] == 1 and cv2.imread(_rows(Path(out["csv"]))[0]["mask"], cv2.IMREAD_UNCHANGED).shape == (30, 70)
    dicom = get_testdata_file("US1_UNCR.dcm")
    out = predict(PredictConfig(model=segmenter["training"]["model"], input=dicom, out=str(tmp_path / "d")))
    (row,) = _rows(Path(out["csv"]))
    assert row["frame"] == "0" and cv2.imread(row["mask"], cv2.IMREAD_UNCHANGED).shape == (480, 640)


def test_inputs_whose_names_map_to_one_stem_get_distinct_masks(segmenter: dict, tmp_path: Path) -> None:
    from usfmae.downstream.predict import PredictConfig, predict

    folder = tmp_path / "in"
    (folder / "x").mkdir(parents=True)
    sizes = {"x/y.png": (30, 40), "x__y.png": (50, 20), "img.png": (32, 32), "img.tif": (24, 36)}
    for name, shape in sizes.items():
        cv2.imwrite(str(folder / name), np.random.default_rng(len(name)).integers(0, 255, shape, dtype=np.uint8))
    out = predict(PredictConfig(model=segmenter["training"]["model"], input=str(folder), out=str(tmp_path / "o")))
    rows = _rows(Path(out["csv"]))
    assert len({r["mask"] for r in rows}) == 4  # before: x/y and x__y (and img.png / img.tif) overwrote each other
    for row in rows:  # each mask is its own input's, at that input's size
        name = Path(row["source"]).relative_to(folder).as_posix()
        assert cv2.imread(row["mask"], cv2.IMREAD_UNCHANGED).shape == sizes[name]


def test_saved_classifier_reproduces_its_probabilities(phantom_dataset: Path, tmp_path: Path) -> None:
    cfg = finetune.FinetuneConfig(data=f"phantom:{phantom_dataset}", out=str(tmp_path / "ft"),
                                  model="mae_vit_micro_patch8_64", epochs=1, batch_size=8, split="kfold", k=2,
                                  folds=[0], bootstrap=0, val_fraction=0.0)
    result = read_json(finetune.run(cfg)["cells"][0])
    manifest = tmp_path / "list.csv"
    manifest.write_text("path\n" + "".join(f"{p}\n" for p in result["predictions"]["id"]))
    code = cli.main(["predict", result["training"]["model"], str(manifest), "--out", str(tmp_path / "p")])
    assert code == 0
    rows = _rows(tmp_path / "p" / "predictions.csv")
    got = np.array([[float(r["p_benign"]), float(r["p_malignant"])] for r in rows])
    assert np.allclose(got, result["predictions"]["y_score"], atol=2e-6)
    assert [r["prediction"] for r in rows] == [("benign", "malignant")[i] for i in result["predictions"]["y_pred"]]


def test_bad_model_and_input_are_one_line_errors(tmp_path: Path, capsys) -> None:
    assert cli.main(["predict", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "not a saved usfmae model" in capsys.readouterr().err


def test_export_of_a_saved_segmenter_matches_pytorch(segmenter: dict, tmp_path: Path, capsys) -> None:
    import onnxruntime as ort
    import torch

    from usfmae.models.saved import load_task_model

    code = cli.main(["export", "--weights", segmenter["training"]["model"], "--out", str(tmp_path / "x")])
    assert code == 0 and "segmenter" in capsys.readouterr().out
    model, card = load_task_model(tmp_path / "x")  # the exported folder is itself a saved model
    x = torch.randn(5, 1, 64, 64)
    got = ort.InferenceSession(str(tmp_path / "x" / "model.onnx")).run(["logits"], {"images": x.numpy()})[0]
    with torch.no_grad():
        assert got.shape == (5, 2, 64, 64) and np.abs(got - model(x).numpy()).max() < 1e-4


@pytest.mark.parametrize("method", ["rollout", "gradcam"])
def test_predict_explain_writes_maps_on_the_original_image(phantom_dataset: Path, tmp_path: Path,
                                                           method: str) -> None:
    from usfmae.contract import normalise, prepare
    from usfmae.eval import explain as explain_lib
    from usfmae.imaging import fit_geometry, read_image, unfit
    from usfmae.models.saved import load_task_model

    cfg = finetune.FinetuneConfig(data=f"phantom:{phantom_dataset}", out=str(tmp_path / "ft"),
                                  model="mae_vit_micro_patch8_64", epochs=1, batch_size=8, split="kfold", k=2,
                                  folds=[0], bootstrap=0, val_fraction=0.0)
    saved = read_json(finetune.run(cfg)["cells"][0])["training"]["model"]
    wide = tmp_path / "wide.png"
    cv2.imwrite(str(wide), np.random.default_rng(0).integers(0, 255, (30, 70), dtype=np.uint8))
    assert cli.main(["predict", saved, str(wide), "--out", str(tmp_path / "plain")]) == 0
    assert cli.main(["predict", saved, str(wide), "--out", str(tmp_path / "x"), "--explain", method]) == 0
    plain, (row,) = _rows(tmp_path / "plain" / "predictions.csv"), _rows(tmp_path / "x" / "predictions.csv")
    assert row["p_benign"] == plain[0]["p_benign"]  # explaining does not change the prediction
    written = cv2.imread(row["explain"], cv2.IMREAD_COLOR)[..., ::-1]
    # The same map computed by hand: explain the predicted class, undo the fit, overlay on the scan.
    model, card = load_task_model(saved)
    contract = card["data_contract"]
    image = read_image(wide)
    x = normalise(prepare(image, contract)[None], contract)
    target = int(model.eval()(x).argmax(1))
    heat = explain_lib.explain(model, x, method, [target])[0].detach().numpy()
    heat = unfit(heat, fit_geometry(30, 70, contract.img_size, contract.fit), interpolation="linear")
    assert written.shape == (30, 70, 3)
    assert np.abs(written.astype(int) - explain_lib.overlay(image, heat).astype(int)).max() <= 1


def test_predict_explain_is_refused_for_a_segmenter(segmenter: dict, tmp_path: Path, capsys) -> None:
    wide = tmp_path / "wide.png"
    cv2.imwrite(str(wide), np.zeros((30, 70), dtype=np.uint8))
    code = cli.main(["predict", segmenter["training"]["model"], str(wide), "--out", str(tmp_path / "o"),
                     "--explain", "rollout"])
    assert code == 2 and "--explain applies to saved classifiers" in capsys.readouterr().err
