"""The end-to-end demo, at toy sizes: every stage runs, the report has every row, re-runs resume."""

from __future__ import annotations

from pathlib import Path

from usfmae.demo import SEG_ROWS, DemoConfig, run_demo

ROWS = ["USF-MAE demo encoder (linear probe)", "ViT from scratch (linear probe)",
        "USF-MAE demo encoder (fine-tune)", "ViT from scratch (fine-tune)", "ResNet-50 from scratch (fine-tune)"]


def test_demo_runs_every_stage_and_resumes(tmp_path: Path) -> None:
    cfg = DemoConfig(out=str(tmp_path / "demo"), n_pretrain=32, raw_size=96, pretrain_steps=4, batch_size=16, n_task=40,
                     labels_per_class=4, folds=2, finetune_epochs=1, figures=str(tmp_path / "figures"),
                     seg_labels=6, seg_epochs=1)
    summary = run_demo(cfg)
    out = Path(cfg.out)
    table_rows = [line.split("|")[1].strip() for line in summary["table"].splitlines()
                  if line.startswith("| ") and not line.startswith("| model")]
    assert table_rows == ROWS  # the demo's row order, one row per compared model
    assert len(list((out / "3_shards").glob("*.npy"))) == 1
    assert (out / "4_pretrain" / "checkpoints" / "final.pt").is_file()
    assert len(list((out / "5_eval").glob("*.json"))) == len(ROWS) * cfg.folds
    assert len(list((out / "5_segment").glob("*.json"))) == len(SEG_ROWS) * cfg.seg_folds
    assert [line.split("|")[1].strip() for line in summary["seg_table"].splitlines()[2:2 + len(SEG_ROWS)]] \
        == list(SEG_ROWS)
    for name in ("demo_loss_curve.png", "demo_reconstruction.png", "demo_clean_sheet.png", "demo_table.md",
                 "demo_seg_table.md", "demo_seg_cases.png"):
        assert (tmp_path / "figures" / name).is_file(), name

    final = out / "4_pretrain" / "checkpoints" / "final.pt"
    stamp = final.stat().st_mtime_ns
    again = run_demo(cfg)  # everything is finished: nothing is redone, same table
    assert final.stat().st_mtime_ns == stamp
    assert again["table"] == summary["table"]
