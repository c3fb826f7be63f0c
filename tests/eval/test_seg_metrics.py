"""Dice, IoU and HD95 against MONAI's metric functions on known masks, plus hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou

from usfmae.eval import seg_metrics


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _cases():
    shape = (40, 48)
    truth = np.zeros(shape, np.int64)
    truth[_disc(shape, 20, 20, 9)] = 1
    truth[5:12, 30:44] = 2
    pred = np.zeros(shape, np.int64)
    pred[_disc(shape, 22, 19, 8)] = 1
    pred[6:14, 28:40] = 2
    pred[35:38, 2:6] = 2  # a stray false-positive blob far away: HD95 must see it
    edge_truth = np.zeros(shape, np.int64)
    edge_truth[0:10, 0:15] = 1  # touches the image border
    edge_pred = np.zeros(shape, np.int64)
    edge_pred[0:12, 0:13] = 1
    return [(pred, truth, 3), (edge_pred, edge_truth, 2)]


def _onehot(mask, c):
    return torch.nn.functional.one_hot(torch.as_tensor(mask), c).permute(2, 0, 1)[None].float()


@pytest.mark.parametrize("case", range(2))
def test_dice_iou_hd95_equal_monai(case):
    pred, truth, c = _cases()[case]
    p, t = _onehot(pred, c), _onehot(truth, c)
    out = seg_metrics.image_metrics(pred, truth, c)
    dice = compute_dice(p, t, include_background=False, ignore_empty=False)[0].tolist()
    iou = compute_iou(p, t, include_background=False, ignore_empty=False)[0].tolist()
    hd = compute_hausdorff_distance(p, t, include_background=False, percentile=95)[0].tolist()
    assert out["dice_per_class"] == pytest.approx(dice, rel=1e-6)  # MONAI rounds to float32
    assert out["iou_per_class"] == pytest.approx(iou, rel=1e-6)  # float32 in MONAI
    assert out["hd95_per_class"] == hd  # exact: the same float32 distances and percentile
    assert out["dice"] == pytest.approx(np.mean(dice), rel=1e-6)  # float32 in MONAI


def test_hd95_in_mm_equals_monai_with_spacing():
    pred, truth, c = _cases()[0]
    spacing = (0.2, 0.35)
    hd = compute_hausdorff_distance(_onehot(pred, c), _onehot(truth, c), percentile=95, spacing=spacing)[0]
    out = seg_metrics.image_metrics(pred, truth, c, spacing=spacing)
    assert out["hd95_mm_per_class"] == pytest.approx(hd.tolist(), rel=1e-6)  # float32 in MONAI
    assert out["hd95_mm"] != pytest.approx(out["hd95"])


def test_hand_computed_squares():
    truth = np.zeros((10, 10), np.int64)
    truth[2:6, 2:6] = 1          # 16 pixels
    pred = np.zeros((10, 10), np.int64)
    pred[2:6, 4:8] = 1           # 16 pixels, 8 overlap
    out = seg_metrics.image_metrics(pred, truth, 2)
    assert out["dice"] == 0.5                   # 2*8 / 32
    assert out["iou"] == pytest.approx(8 / 24)
    assert out["hd95"] == 2.0                   # every edge shifted by two columns
    assert out["counts"] == [[76, 8, 8], [8, 8, 8]]


def test_empty_conventions():
    empty, blob = np.zeros((8, 8), np.int64), np.zeros((8, 8), np.int64)
    blob[2:4, 2:4] = 1
    both_empty = seg_metrics.image_metrics(empty, empty, 2)
    assert math.isnan(both_empty["dice"]) and math.isnan(both_empty["hd95"])
    missed = seg_metrics.image_metrics(empty, blob, 2)
    assert missed["dice"] == 0.0 and missed["hd95"] == pytest.approx(math.hypot(8, 8))
    assert seg_metrics.hausdorff95(empty == 1, blob == 1) == math.inf
    hallucinated = seg_metrics.image_metrics(blob, empty, 2)
    assert hallucinated["dice"] == 0.0


def test_dataset_metrics_means_pooled_and_ci():
    pred, truth, c = _cases()[0]
    perfect = seg_metrics.segmentation_metrics([truth, truth], [truth, truth], c, n_boot=200)
    assert perfect["dice"] == 1.0 and perfect["hd95"] == 0.0 and perfect["ci"]["dice"] == [1.0, 1.0]
    out = seg_metrics.segmentation_metrics([pred, truth], [truth, truth], c, classes=["bg", "a", "b"], n_boot=200)
    first = seg_metrics.image_metrics(pred, truth, c)
    assert out["per_image"]["dice"] == [first["dice"], 1.0]
    assert out["dice"] == pytest.approx((first["dice"] + 1.0) / 2)
    counts = np.array(first["counts"]) + np.array(seg_metrics.image_metrics(truth, truth, c)["counts"])
    pooled, _ = seg_metrics.dice_iou_from_counts(counts)
    assert out["pooled"]["dice"] == pytest.approx(pooled[1:].tolist())
    low, high = out["ci"]["dice"]
    assert first["dice"] <= low <= out["dice"] <= high <= 1.0
    with_mm = seg_metrics.segmentation_metrics([pred], [truth], c, spacings=[0.5], n_boot=0)
    assert with_mm["hd95_mm"] == pytest.approx(0.5 * with_mm["hd95"], rel=1e-6)
    assert "ci" not in with_mm
