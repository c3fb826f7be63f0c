"""Results files and the report: the paper's Table 2 layout in Markdown and CSV, plus figures.

One JSON file per run cell (model x dataset x fold x seed x protocol), written by ``finetune``,
``probe`` and ``benchmark`` with :func:`make_result` + :func:`save_result`::

    {"schema": "usfmae.result/1",
     "model": "usf-mae",                      # row label in the table (put the method in it:
     "dataset": "busbra",                     #   "usf-mae (linear probe)")
     "fold": 0, "seed": 0,
     "protocol": {"input_size": 224, "pretraining": "usf-mae openus46 100ep",
                  "label_fraction": 1.0, ...},      # any further keys are kept
     "metrics": {...classification_metrics()...},  # optionally "ci": {"f1_macro": [lo, hi]}
     "predictions": {"y_true": [...], "y_pred": [...], "y_score": [[...]]}}   # optional

:func:`render_table` averages each (model, dataset) cell over folds and seeds (mean ± sample std,
in %), optionally with a 95% bootstrap interval from the pooled predictions, and can add the
paper's published rows (``resources/paper_table2.csv``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from usfmae.config import check, opt
from usfmae.errors import DataError
from usfmae.eval.metrics import aggregate, bootstrap_cis, metrics_from_confusion
from usfmae.fileio import RejectLog, atomic_open, ensure_output_dir, read_json, write_json

log = logging.getLogger(__name__)

SCHEMA = "usfmae.result/1"
AVERAGES = ("macro", "weighted", "micro", "binary")
METRICS = ("precision", "recall", "f1")
# Protocol fields that must agree within one table cell (fold, seed, timings may differ).
PROTOCOL_KEYS = ("input_size", "in_chans", "pretraining", "pretraining_source", "pretraining_mask_ratio",
                 "weights", "mode", "pool", "model")
SHORT = {"precision": "P", "recall": "R", "f1": "F1"}
DATASET_TITLES = {"busbra": "BUS-BRA", "mmotu": "MMOTU-2D", "gist514": "GIST514-DB", "phantom": "Phantom"}
PAPER_NOTE = ("Rows marked (paper) are published numbers from the USF-MAE paper's Table 2 (averaging not "
              "stated; single numbers), not measured here; every other row was measured by these runs. "
              "UltraSam's pretraining included the training splits of all three benchmarks.")


@dataclass
class ReportConfig:
    """Settings of ``usfmae report``."""

    out: str = opt("", "output folder; empty means RESULTS_DIR/report")
    average: str = opt("macro", "how P/R/F1 average over classes", choices=AVERAGES)
    with_paper: bool = opt(False, "add the paper's published Table 2 rows")
    ci: bool = opt(False, "add 95% bootstrap intervals from the saved predictions")
    label_fraction: float | None = opt(None, "label fraction for the main table; None means the largest present")
    n_boot: int = opt(1000, "bootstrap resamples for --ci")
    seed: int = opt(0, "bootstrap seed")
    models: list[str] = opt([], "row order: these models first, the others after")

    def __post_init__(self) -> None:
        check(self.average in AVERAGES, f"average must be one of {', '.join(AVERAGES)}")
        check(self.n_boot >= 10, "n_boot must be at least 10")
        check(self.label_fraction is None or 0 < self.label_fraction <= 1, "label_fraction must be in (0, 1]")


# ------------------------------------------------------------------------------------ results files
def make_result(*, model: str, dataset: str, fold: int, seed: int, metrics: dict,
                protocol: dict | None = None, predictions: dict | None = None) -> dict:
    """One run cell as a results record (see the module docstring for the schema)."""
    proto = {"input_size": None, "pretraining": None, "label_fraction": 1.0, **(protocol or {})}
    result = {"schema": SCHEMA, "model": model, "dataset": dataset, "fold": int(fold), "seed": int(seed),
              "protocol": proto, "metrics": metrics}
    if predictions is not None:
        result["predictions"] = {k: np.asarray(v).tolist() for k, v in predictions.items() if v is not None}
    return validate_result(result, "result")


def validate_result(obj: object, source: str) -> dict:
    """Check a results record; raise DataError naming ``source`` when a field is missing or wrong."""
    if not isinstance(obj, dict) or obj.get("schema") != SCHEMA:
        raise DataError(f"{source}: not a usfmae result (schema {SCHEMA})")
    for key, kind in (("model", str), ("dataset", str), ("fold", int), ("seed", int),
                      ("protocol", dict), ("metrics", dict)):
        if not isinstance(obj.get(key), kind):
            raise DataError(f"{source}: field {key!r} missing or not {kind.__name__}")
    fraction = obj["protocol"].get("label_fraction", 1.0)
    if not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise DataError(f"{source}: protocol.label_fraction {fraction!r} not in (0, 1]")
    return obj


def _slug(text: str) -> str:
    """A file-name-safe version of a model or dataset name."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-")


def result_filename(result: dict) -> str:
    """Canonical file name of a run cell, unique per model/dataset/label fraction/fold/seed."""
    fraction = result["protocol"].get("label_fraction", 1.0)
    return (f"{_slug(result['dataset'])}__{_slug(result['model'])}__frac{fraction:g}"
            f"__fold{result['fold']}__seed{result['seed']}.json")


def save_result(out_dir: str | Path, result: dict) -> Path:
    """Write ``result`` atomically as ``out_dir/<result_filename>``; returns the path."""
    path = Path(out_dir) / result_filename(result)
    write_json(path, validate_result(result, str(path)))
    return path


def from_cell_record(obj: dict, source: str) -> dict:
    """Convert a schema-less cell record (``{"protocol": {dataset, fold, seed, model, mode,
    pretraining_source, ...}, "metrics", "ci95"?, "predictions"?}``, as ``usfmae finetune``/``probe``
    write) into a result. The row label is ``protocol["label"]`` when given, else the model name
    with the mode (when not finetune) and pretraining source in brackets, so a scratch and a
    pretrained run of one architecture stay apart.
    """
    proto = obj["protocol"]
    label = proto.get("label")
    if not label:
        tags = [t for t in (proto.get("mode") if proto.get("mode") != "finetune" else None,
                            proto.get("pretraining_source")) if t]
        label = f"{proto.get('model')}" + (f" ({', '.join(map(str, tags))})" if tags else "")
    metrics = dict(obj["metrics"])
    if isinstance(obj.get("ci95"), dict) and "ci" not in metrics:
        metrics["ci"] = obj["ci95"]
    result = {"schema": SCHEMA, "model": label, "dataset": proto.get("dataset"), "fold": proto.get("fold"),
              "seed": proto.get("seed"), "protocol": proto, "metrics": metrics}
    if isinstance(obj.get("predictions"), dict):
        result["predictions"] = obj["predictions"]
    return validate_result(result, source)


def load_results(source: str | Path | Sequence[str | Path], rejects: RejectLog | None = None) -> list[dict]:
    """Every result JSON in a folder (recursively, sorted by path) or in a list of files.

    Files with the result schema load as they are; schema-less cell records with ``protocol`` and
    ``metrics`` (``usfmae finetune``/``probe`` output) are converted by :func:`from_cell_record`;
    other JSON files (configs, summaries) are ignored. A malformed result file is skipped and
    recorded in ``rejects`` when given, otherwise it raises DataError naming it.
    """
    if isinstance(source, (str, Path)):
        root = Path(source)
        if not root.is_dir():
            raise DataError(f"{root}: results folder not found")
        paths, where = sorted(root.rglob("*.json")), str(root)
    else:
        paths, where = [Path(p) for p in source], "the given files"
    results = []
    for path in paths:
        try:
            obj = read_json(path)
            if isinstance(obj, dict) and "schema" in obj:
                results.append(validate_result(obj, str(path)))
            elif isinstance(obj, dict) and isinstance(obj.get("protocol"), dict) and isinstance(obj.get("metrics"), dict):
                results.append(from_cell_record(obj, str(path)))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError, DataError) as exc:
            reason = str(exc).removeprefix(f"{path}: ") if isinstance(exc, DataError) else \
                "not valid JSON" if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)) else "unreadable"
            if rejects is None:
                raise DataError(f"{path}: {reason}") from exc
            rejects.reject(path, reason)
    if not results:
        raise DataError(f"{where}: no result files ({SCHEMA}) found")
    return results


def load_paper_table() -> list[dict]:
    """The published Table 2 rows: model, dataset, precision, recall, f1 (%), note."""
    text = resources.files("usfmae.resources").joinpath("paper_table2.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    return [{**r, **{m: float(r[m]) for m in METRICS}} for r in rows]


# ------------------------------------------------------------------------------------------ table
def _fraction(result: dict) -> float:
    return float(result["protocol"].get("label_fraction", 1.0))


def _ordered(values: Sequence[str], first: Sequence[str] = ()) -> list[str]:
    seen = list(dict.fromkeys(values))
    return [v for v in first if v in seen] + [v for v in seen if v not in first]


def cell_stats(results: Sequence[dict], average: str, ci: bool = False, n_boot: int = 1000,
               seed: int = 0) -> dict[str, dict]:
    """P/R/F1 of one (model, dataset) cell in %: ``{metric: {"mean", "std", "runs", "pooled", "ci"}}``.

    ``mean`` and ``std`` are over runs (folds x seeds; ``std`` None for one run, where a spread is
    undefined). ``pooled`` is the metric of all held-out predictions together and ``ci`` its 95%
    bootstrap interval: the interval belongs to ``pooled``, not to ``mean`` (it may exclude the mean).
    """
    agg = aggregate([r["metrics"] for r in results])
    names = [f"{m}_{average}" for m in METRICS]
    intervals: dict[str, tuple[float, float]] = {}
    pooled: dict[str, float] = {}
    if ci and all("predictions" in r for r in results):
        # Pool every fold's (and seed's) held-out predictions: with k folds each image is tested
        # once, so this is the interval of the whole data set. With several seeds an image appears
        # once per seed, which makes the interval somewhat too narrow.
        y_true = np.concatenate([r["predictions"]["y_true"] for r in results]).astype(np.int64)
        y_pred = np.concatenate([r["predictions"]["y_pred"] for r in results]).astype(np.int64)
        n_classes = len(results[0]["metrics"].get("classes", [])) or None
        if average != "binary" or n_classes == 2:
            intervals = bootstrap_cis(y_true, y_pred, None, names, n_boot, seed, n_classes)
            c = n_classes or int(max(y_true.max(), y_pred.max()) + 1)
            cm = np.bincount(y_true * c + y_pred, minlength=c * c).reshape(c, c)
            pooled = {name: float(metrics_from_confusion(cm, name)) for name in names}
    elif ci and len(results) == 1:
        stored = results[0]["metrics"].get("ci", {})
        intervals = {k: tuple(stored[k]) for k in names if k in stored}
        pooled = {k: results[0]["metrics"][k] for k in intervals if k in results[0]["metrics"]}
    out = {}
    for metric, name in zip(METRICS, names, strict=True):
        if name not in agg["mean"]:
            continue
        low_high = intervals.get(name)
        runs = agg["count"][name]
        out[metric] = {"mean": 100 * agg["mean"][name], "std": 100 * agg["std"][name] if runs > 1 else None,
                       "runs": runs, "pooled": 100 * pooled[name] if name in pooled else None,
                       "ci": None if low_high is None else (100 * low_high[0], 100 * low_high[1])}
    return out


def format_spread(mean: float, std: float | None, runs: int | None, digits: int = 1) -> str:
    """``mean ± std`` over runs, ``mean ± n/a`` for one run (a spread is undefined), ``mean`` alone
    for a published value (``runs`` None)."""
    text = f"{mean:.{digits}f}"
    if runs is None:
        return text
    return text + (f" ± {std:.{digits}f}" if runs > 1 and std is not None else " ± n/a")


def _format(stat: dict | None) -> str:
    if stat is None:
        return "–"
    text = format_spread(stat["mean"], stat.get("std"), stat.get("runs"))
    if stat.get("ci") is not None:
        low, high = stat["ci"]
        if (stat.get("runs") or 1) > 1 and stat.get("pooled") is not None:
            text += f"; pooled {stat['pooled']:.1f} [{low:.1f}, {high:.1f}]"
        else:  # one run: its estimate is the pooled one
            text += f" [{low:.1f}, {high:.1f}]"
    return text


def _check_cell(cell: Sequence[dict], model: str, dataset: str) -> None:
    """Refuse duplicate runs; warn when one cell mixes protocols (they would be averaged together)."""
    runs = [(r["fold"], r["seed"]) for r in cell]
    if len(set(runs)) < len(runs):
        fold, seed = next(k for k in runs if runs.count(k) > 1)
        raise DataError(f"{model} on {dataset}: fold {fold} seed {seed} has more than one result file")
    protocols = {json.dumps({k: r["protocol"].get(k) for k in PROTOCOL_KEYS}, default=str) for r in cell}
    if len(protocols) > 1:
        log.warning("%s on %s: %d different protocols averaged together; give them distinct model names",
                    model, dataset, len(protocols))


def build_table(results: Sequence[dict], average: str = "macro", with_paper: bool = False, ci: bool = False,
                label_fraction: float | None = None, n_boot: int = 1000, seed: int = 0,
                models: Sequence[str] = ()) -> dict:
    """The table as data: ``{"datasets", "rows": [{"model", "source", "cells": {ds: {metric: stat}}}],
    "label_fraction"}``; ``models`` puts those rows first, in that order."""
    if not results:
        raise DataError("no results to report")
    fraction = label_fraction if label_fraction is not None else max(_fraction(r) for r in results)
    chosen = [r for r in results if abs(_fraction(r) - fraction) < 1e-9]
    if not chosen:
        raise DataError(f"no results at label fraction {fraction:g}")
    paper = load_paper_table() if with_paper else []
    datasets = _ordered([r["dataset"] for r in chosen] + [p["dataset"] for p in paper], list(DATASET_TITLES))
    rows = []
    for model in _ordered([r["model"] for r in chosen], models):
        cells = {}
        for ds in datasets:
            cell = [r for r in chosen if r["model"] == model and r["dataset"] == ds]
            if cell:
                _check_cell(cell, model, ds)
                cells[ds] = cell_stats(cell, average, ci, n_boot, seed)
        rows.append({"model": model, "source": "ours", "cells": cells})
    for model in _ordered([p["model"] for p in paper]):
        cells = {p["dataset"]: {m: {"mean": p[m], "std": None, "runs": None, "ci": None} for m in METRICS}
                 for p in paper if p["model"] == model}
        rows.append({"model": f"{model} (paper)", "source": "paper", "cells": cells})
    return {"datasets": datasets, "rows": rows, "label_fraction": fraction, "average": average,
            "with_paper": with_paper, "ci": ci}


def _markdown(table: dict) -> str:
    datasets = table["datasets"]
    header = ["model"] + [f"{DATASET_TITLES.get(d, d)} {SHORT[m]}" for d in datasets for m in METRICS]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for row in table["rows"]:
        cells = [_format(row["cells"].get(d, {}).get(m)) for d in datasets for m in METRICS]
        lines.append("| " + " | ".join([row["model"], *cells]) + " |")
    notes = [f"P / R / F1 in %, {table['average']}-averaged over classes"
             + ("" if table["average"] != "binary" else " (positive class: index 1)")
             + "; mean ± sample std over the runs (folds x seeds; n/a for a single run, where a spread is "
               "undefined)"
             + ("; pooled X [low, high]: the metric of all held-out predictions together and its 95% bootstrap "
                "interval (the interval is the pooled estimate's, not the mean's)" if table["ci"] else "")
             + f". Label fraction: {100 * table['label_fraction']:g}%."]
    if table["with_paper"]:
        notes.append(PAPER_NOTE)
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _csv(table: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    fields = ["mean", "std", "pooled", "ci_low", "ci_high"]
    writer.writerow(["model", "source"] + [f"{d}_{m}_{f}" for d in table["datasets"] for m in METRICS
                                           for f in fields] + [f"{d}_runs" for d in table["datasets"]])
    for row in table["rows"]:
        values: list[object] = [row["model"], row["source"]]
        runs = []
        for d in table["datasets"]:
            cell = row["cells"].get(d, {})
            for m in METRICS:
                stat = cell.get(m) or {}
                low, high = stat.get("ci") or (None, None)
                single = stat.get("runs") == 1  # a spread of one run is undefined, not zero
                values += [_number(stat.get("mean")), "n/a" if single else _number(stat.get("std")),
                           _number(stat.get("pooled")), _number(low), _number(high)]
            runs.append(max((s["runs"] or 0 for s in cell.values()), default=0) or "")
        writer.writerow(values + runs)
    return buffer.getvalue()


def render_table(results: Sequence[dict], average: str = "macro", with_paper: bool = False, ci: bool = False,
                 label_fraction: float | None = None, n_boot: int = 1000, seed: int = 0,
                 models: Sequence[str] = ()) -> tuple[str, str]:
    """Render results in the Table 2 layout (rows models, P/R/F1 per dataset).

    Args:
        results: records from :func:`load_results` / :func:`make_result`.
        average: ``macro``, ``weighted``, ``micro`` or ``binary`` (two-class sets only).
        with_paper: append the paper's published rows (and its datasets' columns).
        ci: add bootstrap intervals (needs saved predictions, or a stored ``metrics["ci"]``).
        label_fraction: which runs make the table (default: the largest fraction present).
        n_boot, seed: bootstrap settings.
        models: row order (these first; the others follow in order of appearance).

    Returns:
        (markdown, csv) text.
    """
    table = build_table(results, average, with_paper, ci, label_fraction, n_boot, seed, models)
    return _markdown(table), _csv(table)


def label_efficiency(results: Sequence[dict], average: str = "macro",
                     metric: str = "f1") -> dict[str, dict[str, list[tuple[float, float, float | None]]]]:
    """``{dataset: {model: [(fraction, mean %, std % or None for one run), ...]}}`` for datasets with
    several fractions."""
    curves: dict[str, dict[str, list[tuple[float, float, float | None]]]] = {}
    for ds in _ordered([r["dataset"] for r in results], list(DATASET_TITLES)):
        subset = [r for r in results if r["dataset"] == ds]
        if len({_fraction(r) for r in subset}) < 2:
            continue
        for model in _ordered([r["model"] for r in subset]):
            points = []
            for fraction in sorted({_fraction(r) for r in subset if r["model"] == model}):
                cell = [r for r in subset if r["model"] == model and _fraction(r) == fraction]
                stat = cell_stats(cell, average).get(metric)
                if stat:
                    points.append((fraction, stat["mean"], stat["std"]))
            curves.setdefault(ds, {})[model] = points
    return curves


def write_report(results_dir: str | Path, cfg: ReportConfig) -> dict[str, list[Path]]:
    """Write table.md, table.csv, confusion matrices and label-efficiency plots/CSV to ``cfg.out``."""
    from usfmae.eval.plots import plot_confusion_matrix, plot_label_efficiency

    if not Path(results_dir).is_dir():
        raise DataError(f"{results_dir}: results folder not found")
    out = Path(cfg.out) if cfg.out else Path(results_dir) / "report"
    ensure_output_dir(out)
    results = load_results(results_dir, RejectLog(out / "rejects.jsonl", log))
    segmentation = [r for r in results if r["protocol"].get("task") == "segmentation"]
    seg_written: dict[str, list[Path]] = {}
    if segmentation:  # segmentation results have their own tables and figures (eval/seg_report.py)
        from usfmae.eval.seg_report import write_seg_report

        seg_written = write_seg_report(segmentation, out, cfg.label_fraction, cfg.n_boot, cfg.seed, cfg.models)
        results = [r for r in results if r["protocol"].get("task") != "segmentation"]
        if not results:
            return seg_written
    table = build_table(results, cfg.average, cfg.with_paper, cfg.ci, cfg.label_fraction, cfg.n_boot, cfg.seed,
                        cfg.models)
    written: dict[str, list[Path]] = {"tables": [], "confusion": [], "label_efficiency": []}
    for name, text in (("table.md", _markdown(table)), ("table.csv", _csv(table))):
        with atomic_open(out / name, "w", encoding="utf-8") as handle:
            handle.write(text)
        written["tables"].append(out / name)
    chosen = [r for r in results if abs(_fraction(r) - table["label_fraction"]) < 1e-9]
    for row in (r for r in table["rows"] if r["source"] == "ours"):
        for ds in row["cells"]:
            cell = [r for r in chosen if r["model"] == row["model"] and r["dataset"] == ds]
            cm = aggregate([r["metrics"] for r in cell])["confusion_matrix"]
            if cm is None:
                continue
            classes = cell[0]["metrics"].get("classes") or [str(i) for i in range(len(cm))]
            slug = f"{_slug(ds)}__{_slug(row['model'])}"
            written["confusion"].append(plot_confusion_matrix(
                cm, classes, out / "confusion" / f"{slug}.png",
                title=f"{row['model']} on {DATASET_TITLES.get(ds, ds)} ({len(cell)} run(s) summed)"))
    curves = label_efficiency(results, cfg.average)
    if curves:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["dataset", "model", "label_fraction", f"f1_{cfg.average}_mean", f"f1_{cfg.average}_std"])
        for ds, by_model in curves.items():
            writer.writerows([ds, m, f"{f:g}", f"{mu:.2f}", "n/a" if sd is None else f"{sd:.2f}"]
                             for m, pts in by_model.items() for f, mu, sd in pts)
            bars = {m: [(f, mu, sd or 0.0) for f, mu, sd in pts] for m, pts in by_model.items()}  # one run: no bar
            written["label_efficiency"].append(plot_label_efficiency(
                bars, out / f"label_efficiency_{ds}.png", ylabel=f"F1 {cfg.average} (%)",
                title=DATASET_TITLES.get(ds, ds)))
        with atomic_open(out / "label_efficiency.csv", "w", encoding="utf-8") as handle:
            handle.write(buffer.getvalue())
        written["label_efficiency"].append(out / "label_efficiency.csv")
    return {**written, **seg_written}
