"""Watching fine-tuning: a line per epoch, log.jsonl, learning curves, TensorBoard events."""

from __future__ import annotations

import logging

import pytest

from usfmae.fileio import read_jsonl
from usfmae.train.watch import EpochLog, plot_learning_curves


def _record(epoch, fold=0, loss=1.0, f1=0.5):
    return {"epoch": epoch, "train_loss": loss, "val_f1": f1, "lr": 1e-3, "steps": 2 * (epoch + 1),
            "seconds": 0.1, "fold": fold, "seed": 0}


def test_epoch_log_lines_jsonl_and_curves(tmp_path, caplog):
    seen = []
    watch = EpochLog(tmp_path, then=lambda e, r: seen.append(e))
    with caplog.at_level(logging.INFO, logger="usfmae.train.watch"):
        watch(0, _record(0, loss=0.9, f1=None))
        watch(1, _record(1, loss=0.5, f1=0.75))
    assert caplog.messages == [
        "fold 0 seed 0 epoch 1: train loss 0.9000, val macro-F1 n/a, lr 1.00e-03, 0.1 s",
        "fold 0 seed 0 epoch 2: train loss 0.5000, val macro-F1 0.750, lr 1.00e-03, 0.1 s"]
    assert [r["train_loss"] for r in read_jsonl(tmp_path / "log.jsonl")] == [0.9, 0.5] and seen == [0, 1]
    assert watch.close() == tmp_path / "learning_curves.png"
    assert (tmp_path / "learning_curves.png").stat().st_size > 5000


def test_tensorboard_events_hold_the_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    watch = EpochLog(tmp_path, tensorboard=True)
    for epoch in range(3):
        watch(epoch, _record(epoch, loss=1.0 / (epoch + 1)))
    watch.close()
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert [round(e.value, 4) for e in events.Scalars("fold0_seed0/train_loss")] == [1.0, 0.5, 0.3333]
    assert len(events.Scalars("fold0_seed0/val_f1_macro")) == 3


def test_finetune_cli_prints_epochs_and_writes_curves(phantom_dataset, tmp_path, caplog):
    from usfmae.cli import main

    with caplog.at_level(logging.INFO):
        assert main(["finetune", "--data", f"phantom:{phantom_dataset}", "--model", "mae_vit_micro_patch8_64",
                     "--split", "kfold", "--k", "2", "--folds", "0", "--epochs", "2", "--batch-size", "8",
                     "--bootstrap", "0", "--no-augment", "--out", str(tmp_path / "ft")]) == 0
    assert sum("epoch" in m and "train loss" in m for m in caplog.messages) == 2
    assert [r["epoch"] for r in read_jsonl(tmp_path / "ft" / "log.jsonl")] == [0, 1]
    assert (tmp_path / "ft" / "learning_curves.png").is_file()


def test_curves_keep_the_last_run_of_an_epoch(tmp_path):
    watch = EpochLog(tmp_path)
    watch(0, _record(0, loss=2.0))
    watch(0, _record(0, loss=1.0))  # the cell ran again
    watch.close()
    assert plot_learning_curves(tmp_path / "log.jsonl", tmp_path / "c.png").is_file()


def test_pretrain_tensorboard_mirrors_log_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from usfmae.train.pretrain import PretrainConfig, run

    run(PretrainConfig(data="phantom:8", out=str(tmp_path / "pt"), steps=2, batch_size=4, log_every=1,
                       ckpt_every=2, num_workers=0, recon_images=0, progress=False, device="cpu", tensorboard=True))
    logged = [r["loss"] for r in read_jsonl(tmp_path / "pt" / "log.jsonl")]
    events = EventAccumulator(str(tmp_path / "pt" / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("pretrain/loss")] == [1, 2]
    assert [e.value for e in events.Scalars("pretrain/loss")] == pytest.approx(logged, rel=1e-6)
