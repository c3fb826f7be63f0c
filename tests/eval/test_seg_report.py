"""Segmentation tables (mean ± std over runs, CIs), best/median/worst overlays and Dice vs label fraction."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from usfmae import cli
from usfmae.eval import report
from usfmae.eval.seg_report import overlay, seg_markdown, seg_table


def _result(tmp: Path, model: str, fold: int, fraction: float, dice: list[float]) -> dict:
    ids, truths, preds = [], [], []
    for i in range(len(dice)):
        image, mask = np.full((20, 30), 60, np.uint8), np.zeros((20, 30), np.uint8)
        mask[5:15, 5:20] = 1
        for name, arr, bucket in (("img", image, ids), ("true", mask * 255, truths), ("pred", mask, preds)):
            path = tmp / f"{model[:3]}{fold}{fraction}_{i}_{name}.png"
            cv2.imwrite(str(path), arr)
            bucket.append(str(path))
    metrics = {"n": len(dice), "dice": float(np.mean(dice)), "iou": float(np.mean(dice)) / 2, "hd95": 3.0 + fold,
               "per_image": {"dice": dice, "iou": [d / 2 for d in dice], "hd95": [3.0 + fold] * len(dice)}}
    return report.make_result(model=model, dataset="phantom", fold=fold, seed=0, metrics=metrics,
                              protocol={"task": "segmentation", "label_fraction": fraction},
                              predictions={"id": ids, "mask_true": truths, "mask_pred": preds, "dice": dice})


def test_table_means_stds_and_cis(tmp_path: Path) -> None:
    results = [_result(tmp_path, "enc", 0, 1.0, [0.8, 0.6]), _result(tmp_path, "enc", 1, 1.0, [0.9, 0.5]),
               _result(tmp_path, "enc", 0, 0.5, [0.4, 0.4])]
    table = seg_table(results, n_boot=200)
    assert table["label_fraction"] == 1.0 and table["datasets"] == ["phantom"]
    dice = table["rows"][0]["cells"]["phantom"]["dice"]
    assert dice["mean"] == pytest.approx(70.0) and dice["std"] == 0.0 and dice["runs"] == 2
    assert 50.0 <= dice["ci"][0] <= 70.0 <= dice["ci"][1] <= 90.0
    hd = table["rows"][0]["cells"]["phantom"]["hd95"]
    assert hd["mean"] == 3.5 and hd["std"] == pytest.approx(np.std([3, 4], ddof=1))
    assert "70.0 ± 0.0" in seg_markdown(table)
    single = seg_table(results, label_fraction=0.5, n_boot=0)
    assert single["rows"][0]["cells"]["phantom"]["dice"]["mean"] == 40.0
    # one run has no spread: "n/a", never a 0.0 that would read as a perfectly stable result
    assert single["rows"][0]["cells"]["phantom"]["dice"]["std"] is None
    assert "40.0 ± n/a" in seg_markdown(single)


def test_report_writes_segmentation_tables_and_figures(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    for r in (_result(tmp_path, "enc", 0, 1.0, [0.8, 0.6, 0.7]), _result(tmp_path, "enc", 0, 0.5, [0.4, 0.5]),
              _result(tmp_path, "unet", 0, 1.0, [0.5, 0.6])):
        report.save_result(runs, r)
    assert cli.main(["report", str(runs), "--out", str(tmp_path / "rep")]) == 0
    printed = capsys.readouterr().out
    assert "| Model | phantom Dice |" in printed and "| enc |" in printed
    rep = tmp_path / "rep"
    assert (rep / "seg_table.csv").is_file()
    assert cv2.imread(str(rep / "seg_cases" / "phantom__enc.png")).shape[0] > 300  # 3 rows of cases
    assert (rep / "seg_label_efficiency_phantom.png").is_file()


def test_overlay_tints_and_outlines_only_the_classes() -> None:
    image = np.full((10, 10), 100, np.uint8)
    mask = np.zeros((10, 10), np.uint8)
    mask[3:7, 3:7] = 1
    out = overlay(image, mask)
    assert out.shape == (10, 10, 3) and (out[0, 0] == 100).all() and out[5, 5, 0] > out[5, 5, 1]
