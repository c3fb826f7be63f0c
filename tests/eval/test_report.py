"""Results files, the Table 2 renderer (exact Markdown/CSV), figures and the ``usfmae report`` verb."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from usfmae.cli import main
from usfmae.errors import DataError
from usfmae.eval.metrics import bootstrap_cis, classification_metrics
from usfmae.eval.report import (
    load_paper_table,
    load_results,
    make_result,
    render_table,
    result_filename,
    save_result,
)
from usfmae.fileio import read_jsonl

# (model, dataset, fold, label fraction, P, R, F1) with round numbers so the table is known exactly.
CELLS = [
    ("resnet50", "busbra", 0, 1.0, 0.70, 0.80, 0.74),
    ("resnet50", "busbra", 1, 1.0, 0.80, 0.70, 0.76),
    ("usf-mae", "busbra", 0, 1.0, 0.82, 0.84, 0.83),
    ("usf-mae", "busbra", 1, 1.0, 0.84, 0.82, 0.81),
    ("usf-mae", "mmotu", 0, 1.0, 0.796, 0.796, 0.796),
    ("resnet50", "busbra", 0, 0.1, 0.50, 0.50, 0.50),
    ("usf-mae", "busbra", 0, 0.1, 0.70, 0.70, 0.70),
]

EXPECTED_MD = """\
| model | BUS-BRA P | BUS-BRA R | BUS-BRA F1 | MMOTU-2D P | MMOTU-2D R | MMOTU-2D F1 |
|---|---:|---:|---:|---:|---:|---:|
| resnet50 | 75.0 ± 7.1 | 75.0 ± 7.1 | 75.0 ± 1.4 | – | – | – |
| usf-mae | 83.0 ± 1.4 | 83.0 ± 1.4 | 82.0 ± 1.4 | 79.6 ± n/a | 79.6 ± n/a | 79.6 ± n/a |

P / R / F1 in %, macro-averaged over classes; mean ± sample std over the runs (folds x seeds; n/a for a \
single run, where a spread is undefined). Label fraction: 100%.
"""


def _metrics(p: float, r: float, f: float, dataset: str) -> dict:
    classes = ["benign", "malignant"] if dataset == "busbra" else [str(i) for i in range(8)]
    cm = np.eye(len(classes), dtype=int) * 5
    cm[0, 1] = 2
    return {"n": int(cm.sum()), "classes": classes, "precision_macro": p, "recall_macro": r, "f1_macro": f,
            "accuracy": 0.8, "auroc": None, "confusion_matrix": cm.tolist()}


@pytest.fixture()
def results_dir(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    for model, dataset, fold, fraction, p, r, f in CELLS:
        save_result(root / dataset, make_result(model=model, dataset=dataset, fold=fold, seed=0,
                                                metrics=_metrics(p, r, f, dataset),
                                                protocol={"input_size": 224, "pretraining": "demo",
                                                          "label_fraction": fraction}))
    (root / "config.json").write_text(json.dumps({"lr": 0.001}))  # not a result: ignored
    return root


def test_render_known_table_exactly(results_dir: Path) -> None:
    results = load_results(results_dir)
    assert len(results) == len(CELLS)
    markdown, table_csv = render_table(results)
    assert markdown == EXPECTED_MD
    lines = table_csv.splitlines()
    assert lines[0].startswith("model,source,busbra_precision_mean,busbra_precision_std,busbra_precision_pooled,"
                               "busbra_precision_ci_low,")
    assert lines[0].endswith(",busbra_runs,mmotu_runs")
    assert lines[1] == ("resnet50,ours,75.00,7.07,,,,75.00,7.07,,,,75.00,1.41,,,,"
                        + ",,,,," * 3 + "2,")
    assert lines[2].endswith("79.60,n/a,,,,2,1")  # one run: the spread is undefined, not 0


def test_label_fraction_table_and_paper_rows(results_dir: Path) -> None:
    results = load_results(results_dir)
    markdown, _ = render_table(results, label_fraction=0.1)
    assert "| resnet50 | 50.0 ± n/a | 50.0 ± n/a | 50.0 ± n/a |" in markdown and "Label fraction: 10%." in markdown
    markdown, table_csv = render_table(results, with_paper=True)
    assert "GIST514-DB F1 |" in markdown.splitlines()[0]
    assert "| USF-MAE (paper) | 81.3 | 82.0 | 81.6 | 79.6 | 79.6 | 79.6 | 75.1 | 91.3 | 82.4 |" in markdown
    assert "| usf-mae | 83.0 ± 1.4 | 83.0 ± 1.4 | 82.0 ± 1.4 | 79.6 ± n/a | 79.6 ± n/a | 79.6 ± n/a | – | – | – |" in markdown
    assert "UltraSam's pretraining included the training splits" in markdown
    assert "VGG-19 (paper),paper,60.80,,,," in table_csv
    assert len(load_paper_table()) == 15
    with pytest.raises(DataError, match="no results at label fraction 0.5"):
        render_table(results, label_fraction=0.5)


def test_row_order_and_duplicate_runs(results_dir: Path) -> None:
    results = load_results(results_dir)
    markdown, _ = render_table(results, models=["usf-mae"])
    assert [line.split(" | ")[0] for line in markdown.splitlines()[2:4]] == ["| usf-mae", "| resnet50"]
    with pytest.raises(DataError, match="resnet50 on busbra: fold 0 seed 0 has more than one result file"):
        render_table(results + [r for r in results if r["protocol"]["label_fraction"] == 1.0][:1])


def test_weighted_average_missing_keys_show_dash(results_dir: Path) -> None:
    markdown, _ = render_table(load_results(results_dir), average="weighted")
    assert "| resnet50 | – | – | – | – | – | – |" in markdown


def test_ci_from_pooled_predictions(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    results = []
    for fold in range(2):
        y_true = rng.integers(0, 2, 60)
        y_pred = np.where(rng.random(60) < 0.8, y_true, 1 - y_true)
        results.append(make_result(model="m", dataset="busbra", fold=fold, seed=0,
                                   metrics=classification_metrics(y_true, y_pred, classes=["b", "m"]),
                                   predictions={"y_true": y_true, "y_pred": y_pred}))
    markdown, _ = render_table(results, average="binary", ci=True, n_boot=200, seed=1)
    y_true = np.concatenate([r["predictions"]["y_true"] for r in results])
    y_pred = np.concatenate([r["predictions"]["y_pred"] for r in results])
    low, high = bootstrap_cis(y_true, y_pred, None, ["f1_binary"], 200, 1, 2)["f1_binary"]
    row = markdown.splitlines()[2]
    assert row.removesuffix(" |").split(" | ")[3].endswith(f"[{100 * low:.1f}, {100 * high:.1f}]")
    assert re.fullmatch(r"\| m( \| \d+\.\d ± \d+\.\d; pooled \d+\.\d \[\d+\.\d, \d+\.\d\]){3} \|", row)
    assert render_table(results, average="binary", ci=True, n_boot=200, seed=1)[0] == markdown


def test_results_files_roundtrip_and_errors(tmp_path: Path) -> None:
    result = make_result(model="ViT B/16", dataset="gist514", fold=3, seed=2, metrics={"f1_macro": 0.5},
                         protocol={"label_fraction": 0.25})
    assert result_filename(result) == "gist514__ViT-B-16__frac0.25__fold3__seed2.json"
    path = save_result(tmp_path, result)
    assert load_results(tmp_path) == [json.loads(path.read_text())]
    bad = tmp_path / "sub" / "broken.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps({"schema": "usfmae.result/1", "model": "x"}))
    with pytest.raises(DataError, match=r"broken.json: field 'dataset' missing"):
        load_results(tmp_path)
    with pytest.raises(DataError, match="results folder not found"):
        load_results(tmp_path / "nowhere")


def test_report_cli_writes_tables_and_figures(results_dir: Path, tmp_path: Path, capsys) -> None:
    (results_dir / "torn.json").write_text('{"schema": "usfmae.result/1", "mod')
    out = tmp_path / "report"
    assert main(["report", str(results_dir), "--out", str(out)]) == 0
    assert (out / "table.md").read_text(encoding="utf-8") == EXPECTED_MD
    assert EXPECTED_MD.splitlines()[2] in capsys.readouterr().out
    assert sorted(p.name for p in (out / "confusion").iterdir()) == [
        "busbra__resnet50.png", "busbra__usf-mae.png", "mmotu__usf-mae.png"]
    assert (out / "label_efficiency_busbra.png").stat().st_size > 1000
    assert (out / "label_efficiency.csv").read_text().splitlines() == [
        "dataset,model,label_fraction,f1_macro_mean,f1_macro_std",
        "busbra,resnet50,0.1,50.00,n/a", "busbra,resnet50,1,75.00,1.41",
        "busbra,usf-mae,0.1,70.00,n/a", "busbra,usf-mae,1,82.00,1.41"]
    assert [Path(r["file"]).name for r in read_jsonl(out / "rejects.jsonl")] == ["torn.json"]


def test_report_cli_user_errors(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"usfmae report: error: {tmp_path}: no result files (usfmae.result/1) found"
    assert main(["report", str(tmp_path), "--n-boot", "1"]) == 2
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["report", str(tmp_path), "--out", str(blocker / "sub")]) == 2
    assert "cannot create the output folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "typo")]) == 2
    assert not (tmp_path / "typo").exists()


def test_cell_records_from_finetune_and_file_lists(tmp_path: Path) -> None:
    y_true, y_pred = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])
    paths = []
    for source, fold in (("scratch", 0), ("scratch", 1), ("usfmae-pretrain", 0)):
        record = {"protocol": {"dataset": "phantom", "fold": fold, "seed": 0, "mode": "linear",
                               "model": "mae_vit_micro_patch8_64", "pretraining_source": source,
                               "input_size": 64, "label_fraction": 0.5},
                  "metrics": classification_metrics(y_true, y_pred, classes=["b", "m"]),
                  "ci95": {"f1_macro": [0.1, 0.9]},
                  "predictions": {"y_true": y_true.tolist(), "y_pred": y_pred.tolist()}}
        if source != "scratch":  # no predictions: the stored interval is shown
            del record["predictions"]
        paths.append(tmp_path / f"{source}_fold{fold}.json")
        paths[-1].write_text(json.dumps(record))
    results = load_results(paths)
    assert [r["model"] for r in results] == ["mae_vit_micro_patch8_64 (linear, scratch)"] * 2 + [
        "mae_vit_micro_patch8_64 (linear, usfmae-pretrain)"]
    assert results[2]["metrics"]["ci"] == {"f1_macro": [0.1, 0.9]}
    markdown, _ = render_table(results, ci=True, n_boot=50)
    assert markdown.splitlines()[3] == \
        "| mae_vit_micro_patch8_64 (linear, usfmae-pretrain) | 83.3 ± n/a | 75.0 ± n/a | 73.3 ± n/a [10.0, 90.0] |"
    assert re.fullmatch(r"\| mae_vit_micro_patch8_64 \(linear, scratch\)( \| [\d.]+ ± 0\.0; pooled [\d.]+ \[[\d.]+, [\d.]+\]){3} \|",
                        markdown.splitlines()[2])
    assert load_results(tmp_path) == results


def test_ci_rows_say_which_number_the_interval_belongs_to(tmp_path: Path) -> None:
    """Fold mean ± std, then the pooled estimate with its own interval (which may exclude the mean)."""
    # Fold 0: 4 of 4 right; fold 1: 1 of 8 right. Fold-mean accuracy-like F1 differs from the pooled one.
    folds = [(np.array([0, 1, 0, 1]), np.array([0, 1, 0, 1])),
             (np.array([0, 0, 0, 0, 1, 1, 1, 1]), np.array([1, 1, 1, 0, 0, 0, 0, 1]))]
    results = []
    for fold, (y_true, y_pred) in enumerate(folds):
        m = classification_metrics(y_true, y_pred, None, ["benign", "malignant"])
        results.append(make_result(model="m", dataset="busbra", fold=fold, seed=0, metrics=m,
                                   protocol={"input_size": 64, "pretraining": "x", "label_fraction": 1.0},
                                   predictions={"id": [str(i) for i in range(len(y_true))], "group": ["g"] * len(y_true),
                                                "y_true": y_true, "y_pred": y_pred,
                                                "y_score": np.eye(2)[y_pred]}))
    markdown, table_csv = render_table(results, ci=True, n_boot=200)
    pooled_true = np.concatenate([f[0] for f in folds])
    pooled_pred = np.concatenate([f[1] for f in folds])
    pooled_f1 = 100 * classification_metrics(pooled_true, pooled_pred, None, ["b", "m"])["f1_macro"]
    fold_f1 = [100 * classification_metrics(t, p, None, ["b", "m"])["f1_macro"] for t, p in folds]
    low, high = (100 * v for v in bootstrap_cis(pooled_true, pooled_pred, None, ["f1_macro"], 200, 0, 2)["f1_macro"])
    cell = f"{np.mean(fold_f1):.1f} ± {np.std(fold_f1, ddof=1):.1f}; pooled {pooled_f1:.1f} [{low:.1f}, {high:.1f}]"
    assert f"| {cell} |" in markdown
    assert "the interval is the pooled estimate's, not the mean's" in markdown
    assert f",{pooled_f1:.2f},{low:.2f},{high:.2f}," in table_csv.splitlines()[1]
