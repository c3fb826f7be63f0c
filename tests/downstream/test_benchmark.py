"""Benchmark grid: the paper suite resolves; an interrupted grid resumes and skips finished cells."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fixtures_datasets import make_busbra, make_gist514, make_mmotu

from usfmae.downstream import benchmark
from usfmae.errors import ConfigError, UsfmaeError
from usfmae.train import finetune


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three benchmark datasets laid out as downloaded (tiny fixtures)."""
    root = tmp_path_factory.mktemp("benchmarks")
    make_busbra(root), make_mmotu(root), make_gist514(root)
    return root


def _tiny_suite() -> benchmark.Suite:
    """The paper suite's datasets and recipe with a tiny encoder in place of the four models."""
    paper = benchmark.load_suite("paper")
    recipe = {**paper.recipe, "img_size": None, "in_chans": None, "epochs": 1, "batch_size": 8,
              "bootstrap": 0, "class_weighting": True}
    return dataclasses.replace(paper, models={"tiny": {"model": "mae_vit_micro_patch8_64"}}, recipe=recipe)


def test_paper_suite_resolves_every_model_and_dataset(data_root: Path, tmp_path: Path) -> None:
    weights = tmp_path / "usfmae.pt"
    weights.write_bytes(b"not read while planning")
    suite = benchmark.load_suite("paper")
    groups = benchmark.plan(suite, data_root, tmp_path / "out", weights=str(weights))
    assert [(g.dataset, g.model) for g in groups][:4] == [("busbra", m) for m in ("usfmae", "vgg19", "resnet50", "vit_b16")]
    assert len(groups) == 12
    usfmae = groups[0].cfg
    assert (usfmae.weights, usfmae.in_chans, usfmae.img_size) == (str(weights), 3, 224)
    assert groups[1].cfg.weights is None  # no --baseline-weights: random init, with a warning
    assert groups[1].cfg.data == f"busbra:{data_root}/BUSBRA"
    sweep = benchmark.plan(suite, data_root, tmp_path / "out", weights=str(weights), sweep=True)
    assert len(sweep) == 12 * 8
    assert sweep[1].cfg.label == "usfmae [lr0.0003_weight_decay0.01_batch_size64]"


def test_paper_suite_needs_weights_for_usfmae(data_root: Path, tmp_path: Path) -> None:
    suite = benchmark.load_suite("paper")
    with pytest.raises(UsfmaeError, match="--weights"):
        benchmark.plan(suite, data_root, tmp_path)
    assert len(benchmark.plan(suite, data_root, tmp_path, models=["vgg19"], datasets=["mmotu"])) == 1
    with pytest.raises(ConfigError, match="unknown model"):
        benchmark.plan(suite, data_root, tmp_path, models=["alexnet"])
    with pytest.raises(ConfigError, match="not found"):
        benchmark.load_suite(tmp_path / "missing.yaml")


class Crash(Exception):
    """Stands for a killed run (power cut, OOM, Ctrl-C) in the middle of the grid."""


@pytest.mark.slow
def test_interrupted_grid_resumes_and_skips_finished_cells(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    suite = _tiny_suite()
    calls, crash_at = [], [4]
    real = finetune.run_cell

    def interrupt_at_fourth(*args, **kwargs):
        calls.append(args[2].index)
        if crash_at and len(calls) == crash_at[0]:
            raise Crash
        return real(*args, **kwargs)

    monkeypatch.setattr(finetune, "run_cell", interrupt_at_fourth)
    with pytest.raises(Crash):
        benchmark.run(suite, data_root, tmp_path)
    assert len(list(tmp_path.rglob("*__seed0.json"))) == 3  # BUS-BRA folds 0-2 were finished

    calls.clear()
    crash_at.clear()
    summary = benchmark.run(suite, data_root, tmp_path)
    # 9 cells: BUS-BRA official 5 folds + MMOTU official split + GIST514 3 shipped splits.
    assert (summary["cells_run"], summary["cells_skipped"]) == (6, 3)
    assert len(calls) == 6 and len(summary["results"]) == 9
    table = Path(summary["table"]).read_text(encoding="utf-8")
    assert "BUS-BRA" in table and "MMOTU-2D" in table and "GIST514-DB" in table and "tiny" in table

    calls.clear()
    again = benchmark.run(suite, data_root, tmp_path, render=False)
    assert (again["cells_run"], again["cells_skipped"], len(calls)) == (0, 9, 0)


def test_set_overrides_parse_as_yaml() -> None:
    parse_overrides = benchmark.parse_overrides
    assert parse_overrides(["epochs=5", "seeds=[0, 1]", "device=cuda", "lr=1e-3"]) == {
        "epochs": 5, "seeds": [0, 1], "device": "cuda", "lr": 1e-3}
    with pytest.raises(ConfigError):
        parse_overrides(["epochs"])


def test_suite_values_are_type_checked(data_root: Path, tmp_path: Path) -> None:
    suite = benchmark.load_suite("paper")
    with pytest.raises(ConfigError, match="epochs must be int, got 'abc'"):
        benchmark.plan(suite, data_root, tmp_path, models=["vgg19"], overrides={"epochs": "abc"})
    groups = benchmark.plan(suite, data_root, tmp_path, models=["vgg19"], datasets=["busbra"],
                            overrides={"lr": "1e-3", "seeds": 3, "epochs": 2.0})
    assert (groups[0].cfg.lr, groups[0].cfg.seeds, groups[0].cfg.epochs) == (1e-3, [3], 2)


def test_paper_suite_gains_the_ultrasam_row(data_root: Path, tmp_path: Path) -> None:
    weights = tmp_path / "usfmae.pt"
    weights.write_bytes(b"not read while planning")
    suite = benchmark.load_suite("paper")
    assert "ultrasam" in benchmark.left_out(suite, None)  # no --fm-weights: left out, with where to get it
    assert "s3.unistra.fr" in benchmark.left_out(suite, str(tmp_path))["ultrasam"]
    (tmp_path / "UltraSam.pth").write_bytes(b"not read while planning")
    groups = benchmark.plan(suite, data_root, tmp_path / "out", weights=str(weights), fm_weights=str(tmp_path))
    ultrasam = [g.cfg for g in groups if g.model == "ultrasam"]
    assert len(groups) == 15 and [c.data.split(":")[0] for c in ultrasam] == ["busbra", "mmotu", "gist514"]
    assert (ultrasam[0].weights, ultrasam[0].img_size, ultrasam[0].in_chans) == (str(tmp_path / "UltraSam.pth"), 224, 3)
    assert suite.with_paper


def test_fm_zoo_runs_the_available_models_resumes_and_marks_published_rows(data_root: Path, tmp_path: Path) -> None:
    import torch
    from fixtures_checkpoints import sam_image_encoder, sam_to_ultrasam, tinyusfm

    fm = tmp_path / "weights"
    fm.mkdir()
    torch.save(sam_to_ultrasam(sam_image_encoder()), fm / "UltraSam.pth")
    torch.save(tinyusfm(), fm / "TinyUSFM.pth")
    zoo = benchmark.load_suite("fm-zoo")
    suite = dataclasses.replace(zoo, recipe={**zoo.recipe, "epochs": 1, "batch_size": 8, "bootstrap": 0})
    kwargs = dict(fm_weights=str(fm), datasets=["mmotu", "gist514"], overrides={"img_size": 64})
    first = benchmark.run(suite, data_root, tmp_path / "out", **kwargs)
    assert sorted({g["model"] for g in first["groups"]}) == ["tinyusfm", "ultrasam", "ultrasam_224"]
    assert "drive.google.com" in first["left_out"]["usfm"] and "usfmae" in first["left_out"]
    assert (first["cells_run"], first["cells_skipped"]) == (12, 0)  # 3 models x (1 MMOTU + 3 GIST514 splits)
    again = benchmark.run(suite, data_root, tmp_path / "out", **kwargs)
    assert (again["cells_run"], again["cells_skipped"]) == (0, 12)
    rows = [line.split(" | ")[0][2:] for line in Path(again["table"]).read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and not line.startswith("| model")]
    assert rows[:3] == ["ultrasam", "ultrasam_224", "tinyusfm"]  # measured, in suite order
    assert "UltraSam (paper)" in rows and "USF-MAE (paper)" in rows
    assert "not measured here" in Path(again["table"]).read_text(encoding="utf-8")
