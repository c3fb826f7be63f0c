"""usfmae segment: a tiny fine-tune learns an easy phantom task; results, masks and the saved model; resume."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from usfmae import cli
from usfmae.data.seg_datasets import load_seg_dataset, read_mask
from usfmae.eval import seg_metrics
from usfmae.fileio import read_json
from usfmae.models.saved import load_task_model
from usfmae.phantom.generate import PhantomConfig, write_phantom_dataset
from usfmae.train.segment import (
    SegmentConfig,
    build_segmenter,
    dice_ce_loss,
    predict_masks,
    run,
    train_segmenter,
)

EASY = PhantomConfig(size=64, overlays=False, lesion_size=2.0, contrast=2.0)


@pytest.fixture(scope="module")
def easy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SegmentConfig, dict]:
    root = tmp_path_factory.mktemp("seg")
    write_phantom_dataset(root / "phantom", n=32, seed=0, cfg=EASY, progress=False)
    cfg = SegmentConfig(data=f"phantom:{root / 'phantom'}", out=str(root / "out"), model="mae_vit_micro_patch8_64",
                        head="linear", epochs=10, batch_size=8, lr=2e-3, split="kfold", k=2, folds=[0],
                        bootstrap=200)
    return root, cfg, run(cfg)


@pytest.mark.slow
def test_tiny_finetune_beats_empty_and_all_foreground(easy_run) -> None:
    root, cfg, summary = easy_run
    result = read_json(summary["cells"][0])
    ds = load_seg_dataset(cfg.data)
    truths = [read_mask(r, ds) for r in ds.records if str(r.image) in set(result["predictions"]["id"])]
    everything = seg_metrics.segmentation_metrics([np.ones_like(t) for t in truths], truths, 2, n_boot=0)["dice"]
    assert result["metrics"]["dice"] > max(0.4, everything + 0.25)   # empty scores 0
    low, high = result["metrics"]["ci"]["dice"]
    assert low < result["metrics"]["dice"] < high
    assert result["protocol"]["task"] == "segmentation" and result["protocol"]["n_labels"] == 16
    assert len(result["metrics"]["per_image"]["dice"]) == result["training"]["n_test"] == 16


@pytest.mark.slow
def test_masks_and_saved_model_reproduce_the_end_of_training(easy_run) -> None:
    root, cfg, summary = easy_run
    result = read_json(summary["cells"][0])
    model, card = load_task_model(result["training"]["model"])
    assert card["kind"] == "segmenter" and card["classes"] == ["background", "lesion"]
    assert card["data_contract"].img_size == 64 and card["protocol"]["fold"] == 0
    ds = load_seg_dataset(cfg.data)
    by_path = {str(r.image): r for r in ds.records}
    from usfmae.data.seg_datasets import load_pairs

    rows = [ds.records.index(by_path[p]) for p in result["predictions"]["id"]]
    images, _, _ = load_pairs(ds, rows, 64, 1)
    again = predict_masks(model, torch.from_numpy(images), card["data_contract"], torch.device("cpu"), False)
    for path, mask in zip(result["predictions"]["mask_pred"], again.numpy(), strict=True):
        assert np.array_equal(cv2.imread(path, cv2.IMREAD_UNCHANGED), mask)  # 64x64 phantom: no resize


@pytest.mark.slow
def test_finished_cells_are_skipped(easy_run, capsys) -> None:
    root, cfg, summary = easy_run
    mtime = Path(summary["cells"][0]).stat().st_mtime_ns
    code = cli.main(["segment", "--data", cfg.data, "--out", cfg.out, "--model", cfg.model, "--head", "linear",
                     "--epochs", "10", "--batch-size", "8", "--lr", "2e-3", "--split", "kfold", "--k", "2",
                     "--folds", "0", "--bootstrap", "200"])
    assert code == 0 and '"skipped": 1' in capsys.readouterr().out
    assert Path(summary["cells"][0]).stat().st_mtime_ns == mtime


def test_frozen_encoder_stays_fixed_and_head_learns() -> None:
    cfg = SegmentConfig(data="x", model="mae_vit_micro_patch8_64", head="pyramid", freeze=True, epochs=1,
                        batch_size=4, augment=False)
    model, contract, _, _ = build_segmenter(cfg, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randint(0, 255, (4, 1, 64, 64), dtype=torch.uint8)
    masks = (images[:, 0] > 127).to(torch.uint8)
    train_segmenter(model, contract, cfg, images, masks, images[:0], masks[:0], 2, 0, torch.device("cpu"))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])


def test_dice_ce_loss() -> None:
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 2:5, 2:5] = 1
    perfect = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float() * 20 - 10
    assert dice_ce_loss(perfect, target).item() < 1e-3
    assert dice_ce_loss(-perfect, target).item() > 10  # wrong everywhere: CE ~20, Dice loss ~1
    assert dice_ce_loss(perfect, target, 0.0) == torch.nn.functional.cross_entropy(perfect, target)
