"""usfmae benchmark --suite paper-seg: the segmentation grid resolves to segment runs and runs end to end."""

from __future__ import annotations

from pathlib import Path

from usfmae.downstream import benchmark
from usfmae.train.segment import SegmentConfig


def test_paper_seg_suite_plans_every_model_on_both_datasets(tmp_path: Path) -> None:
    weights = tmp_path / "usfmae.pt"
    weights.write_bytes(b"placeholder")  # plan() only checks that the file exists
    groups = benchmark.plan(benchmark.load_suite("paper-seg"), tmp_path / "data", tmp_path / "out",
                            weights=str(weights))
    assert {(g.dataset, g.model) for g in groups} == {
        (d, m) for d in ("busbra", "mmotu") for m in ("usfmae_pyramid", "usfmae_pyramid_frozen", "usfmae_linear",
                                                       "usfmae_linear_frozen", "vit_b16_pyramid", "unet_resnet50")}
    by_name = {(g.dataset, g.model): g.cfg for g in groups}
    frozen = by_name[("busbra", "usfmae_linear_frozen")]
    assert isinstance(frozen, SegmentConfig) and frozen.freeze and frozen.head == "linear"
    assert frozen.data == f"busbra:{tmp_path / 'data'}/BUSBRA" and frozen.img_size == 224
    assert by_name[("mmotu", "unet_resnet50")].weights is None  # no local ImageNet file: random init


def test_a_segmentation_suite_runs_and_reports(phantom_dataset: Path, tmp_path: Path) -> None:
    suite = tmp_path / "tiny.yaml"
    suite.write_text(f"""name: tiny
task: segmentation
models:
  micro:
    model: mae_vit_micro_patch8_64
    head: linear
datasets:
  phantom:
    data: "phantom:{phantom_dataset}"
recipe: {{epochs: 1, batch_size: 8, split: kfold, k: 2, folds: [0], bootstrap: 0, save_model: false}}
""")
    summary = benchmark.run(suite, tmp_path, tmp_path / "out")
    assert summary["cells_run"] == 1 and summary["table"].endswith("seg_table.md")
    assert "| micro |" in Path(summary["table"]).read_text()
    assert benchmark.run(suite, tmp_path, tmp_path / "out")["cells_skipped"] == 1
