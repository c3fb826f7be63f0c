"""Evaluation grids, both resumable: the benchmark (models x datasets x sweep settings x folds x
seeds, fine-tuned) and the probe curve (linear / k-NN x label fractions x folds x seeds, frozen).

A benchmark suite is a YAML file (``configs/benchmark/paper.yaml`` is the paper's Table 2) with ``models``,
``datasets``, a shared ``recipe`` (any :class:`~usfmae.train.finetune.FinetuneConfig` field), an
optional ``sweep`` (field -> list of values) and placeholders ``{data_root}``, ``{weights}``,
``{baseline_weights}``, ``{fm_weights}`` filled from the command line (a model whose
``{fm_weights}`` file is absent is left out of the grid with one line saying where its project
publishes it; ``with_paper: true`` adds the published rows to the report). Results land in
``OUT/<dataset>/<model>/<setting>/`` (one report-schema JSON per cell); a cell whose JSON exists is
skipped, so an interrupted grid resumes where it stopped. At the end the report renderer writes
the table.
"""

from __future__ import annotations

import csv
import itertools
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from usfmae.config import build_config, check, opt, save_config
from usfmae.data import labelled
from usfmae.data.images import preload_images
from usfmae.errors import ConfigError, UsfmaeError
from usfmae.eval import report
from usfmae.eval.probes import PROBES
from usfmae.fileio import RejectLog, atomic_open, read_json, write_json
from usfmae.models.adapters import ADAPTERS, SPECS
from usfmae.models.encoder import extract_features, load_encoder, pick_device
from usfmae.train import finetune, segment
from usfmae.train.finetune import FinetuneConfig
from usfmae.train.segment import SegmentConfig

log = logging.getLogger(__name__)

# Built-in suites ship as package data (usfmae/configs/benchmark; the repository's top-level
# configs/ is a link to usfmae/configs, so presets have one home).
SUITE_DIRS = (Path(__file__).resolve().parents[1] / "configs" / "benchmark",)
PLACEHOLDERS = ("data_root", "weights", "baseline_weights", "fm_weights")


@dataclass
class Suite:
    """A parsed suite file."""

    name: str
    models: dict[str, dict[str, Any]]
    datasets: dict[str, dict[str, Any]]
    recipe: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    with_paper: bool = False  # the report adds the paper's published rows
    task: str = "classification"  # or "segmentation": cells run usfmae.train.segment (SegmentConfig)


def load_suite(name_or_path: str | Path) -> Suite:
    """A suite by name (``paper`` -> ``configs/benchmark/paper.yaml``) or by YAML path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = next((d / f"{name_or_path}.yaml" for d in SUITE_DIRS if (d / f"{name_or_path}.yaml").is_file()),
                    SUITE_DIRS[0] / f"{name_or_path}.yaml")
    if not path.is_file():
        known = ", ".join(sorted({p.stem for d in SUITE_DIRS if d.is_dir() for p in d.glob("*.yaml")})) or "none"
        raise ConfigError(f"{path}: benchmark suite not found (built-in suites: {known})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__})") from exc
    unknown = sorted(set(raw) - {"name", "task", "models", "datasets", "recipe", "sweep", "with_paper"})
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)}")
    for section in ("models", "datasets"):
        if not isinstance(raw.get(section), dict) or not raw[section]:
            raise ConfigError(f"{path}: '{section}' must be a non-empty mapping")
    recipe = {k: as_number(v) for k, v in (raw.get("recipe") or {}).items()}
    sweep = {k: [as_number(x) for x in (v if isinstance(v, list) else [v])] for k, v in (raw.get("sweep") or {}).items()}
    task = str(raw.get("task", "classification"))
    if task not in ("classification", "segmentation"):
        raise ConfigError(f"{path}: task must be classification or segmentation, got {task!r}")
    return Suite(str(raw.get("name", path.stem)), raw["models"], raw["datasets"], recipe, sweep,
                 bool(raw.get("with_paper", False)), task)


def as_number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; turn such strings into the float meant."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["epochs=5", "seeds=[0,1]"]`` -> ``{"epochs": 5, "seeds": [0, 1]}`` (values read as YAML)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key.replace("-", "_")] = as_number(yaml.safe_load(value))
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc.__class__.__name__})") from exc
    return out


@dataclass
class BenchmarkConfig:
    """Settings of ``usfmae benchmark``."""

    suite: str = opt("paper", "built-in suite name or a YAML path")
    data_root: str = opt("", "folder holding the downloaded datasets")
    out: str = opt("", "output folder (results per cell, table.md, table.csv)")
    weights: str | None = opt(None, "checkpoint for the suite's {weights} model (USF-MAE)")
    baseline_weights: str | None = opt(None, "folder of local ImageNet weight files (vgg19.pth, ...)")
    fm_weights: str | None = opt(None, "folder of foundation-model weight files under their published names "
                                       "(UltraSam.pth, USFM_latest.pth, ...); models without theirs are left out")
    models: list[str] = opt([], "run only these models of the suite (none: all)")
    datasets: list[str] = opt([], "run only these datasets of the suite (none: all)")
    sweep: bool = opt(False, "run the suite's hyper-parameter sweep")
    set: list[str] = opt([], "override recipe settings for every cell as KEY=VALUE, e.g. epochs=5 device=cuda")

    def __post_init__(self) -> None:
        parse_overrides(self.set)  # a malformed KEY=VALUE is one line now, not after the first cells ran


def run_benchmark(cfg: BenchmarkConfig) -> dict[str, Any]:
    """:func:`run` with the settings of ``usfmae benchmark``; returns its summary."""
    return run(cfg.suite, cfg.data_root, cfg.out, weights=cfg.weights, baseline_weights=cfg.baseline_weights,
               sweep=cfg.sweep, models=cfg.models or None, datasets=cfg.datasets or None,
               overrides=parse_overrides(cfg.set), fm_weights=cfg.fm_weights)


def _fill(value: Any, values: dict[str, str | None]) -> Any:
    """Substitute ``{placeholder}``; a string whose placeholder is unset becomes None."""
    if not isinstance(value, str):
        return value
    for key in PLACEHOLDERS:
        token = "{" + key + "}"
        if token in value:
            if values.get(key) is None:
                return None
            value = value.replace(token, str(values[key]))
    return value


def settings(suite: Suite, sweep: bool) -> list[dict[str, Any]]:
    """Hyper-parameter settings: just the recipe, or the recipe x every sweep combination."""
    if not sweep or not suite.sweep:
        return [{}]
    keys = list(suite.sweep)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(suite.sweep[k] for k in keys))]


def setting_name(setting: dict[str, Any]) -> str:
    """Folder name of a sweep setting, e.g. ``lr0.001_weight_decay0.01`` (``default`` for the recipe)."""
    return "_".join(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in setting.items()) or "default"


def checked_settings(values: dict[str, Any], where: str, cls: type = FinetuneConfig) -> dict[str, Any]:
    """Type-check suite / ``--set`` values against ``cls`` (:class:`FinetuneConfig`; YAML gives any type).

    Raises:
        ConfigError: naming the setting, e.g. ``vgg19 on busbra: epochs must be int, got 'abc'``.
    """
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in values.items():
        tp = hints.get(key)
        if tp is None:
            out[key] = value  # unknown names are reported by build_config
            continue
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = typing.get_origin(tp) in (typing.Union, types.UnionType)
        base = args[0] if optional else tp
        if value is None and optional:
            out[key] = None
            continue
        if typing.get_origin(base) is list:
            item = typing.get_args(base)[0]
            value = value if isinstance(value, list) else [value]
            out[key] = [_checked(item, v, f"{where}: {key}") for v in value]
        else:
            out[key] = _checked(base, value, f"{where}: {key}")
    return out


def _checked(tp: type, value: Any, name: str) -> Any:
    value = as_number(value) if tp in (int, float) else value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, tp) or (tp is not bool and isinstance(value, bool)):
        raise ConfigError(f"{name} must be {tp.__name__}, got {value!r}")
    return value


@dataclass
class Group:
    """All folds x seeds of one (model, dataset, setting): one ``finetune.run``."""

    model: str
    dataset: str
    setting: str
    cfg: FinetuneConfig | SegmentConfig


def left_out(suite: Suite, fm_weights: str | None, models: list[str] | None = None) -> dict[str, str]:
    """Models whose ``{fm_weights}`` file is absent: ``{name: one line saying where to get it}``."""
    out = {}
    for name, mspec in suite.models.items():
        template = str(mspec.get("weights", ""))
        if "{fm_weights}" not in template or (models and name not in models):
            continue
        path = _fill(template, {"fm_weights": fm_weights})
        if path is not None and Path(path).is_file():
            continue
        spec = SPECS.get(str(mspec.get("model")))
        where = spec.weights if spec else "see the README, Foundation models"
        out[name] = f"{path + ' not found' if path else 'no --fm-weights folder given'}; {where}"
    return out


def plan(suite: Suite, data_root: str | Path, out: str | Path, weights: str | None = None,
         baseline_weights: str | None = None, sweep: bool = False, models: list[str] | None = None,
         datasets: list[str] | None = None, overrides: dict[str, Any] | None = None,
         fm_weights: str | None = None) -> list[Group]:
    """Resolve the suite into runnable groups (validating every config before anything runs)."""
    values = {"data_root": str(data_root), "weights": weights, "baseline_weights": baseline_weights,
              "fm_weights": fm_weights}
    for wanted, have, what in ((models, suite.models, "model"), (datasets, suite.datasets, "dataset")):
        missing = sorted(set(wanted or []) - set(have))
        if missing:
            raise ConfigError(f"unknown {what}(s) {', '.join(missing)}; suite {suite.name} has {', '.join(have)}")
    absent = left_out(suite, fm_weights, models)
    groups = []
    cls = SegmentConfig if suite.task == "segmentation" else FinetuneConfig
    for dname, dspec in suite.datasets.items():
        if datasets and dname not in datasets:
            continue
        for mname, mspec in suite.models.items():
            if (models and mname not in models) or mname in absent:
                continue
            mspec = {k: _fill(v, values) for k, v in mspec.items()}
            if "{weights}" in str(suite.models[mname].get("weights", "")) and mspec.get("weights") is None:
                raise UsfmaeError(f"model {mname} of suite {suite.name} needs --weights "
                                  f"(or leave it out with --models)")
            if mspec.get("weights") and not Path(mspec["weights"]).is_file():
                if "{baseline_weights}" in str(suite.models[mname].get("weights", "")):
                    log.warning("%s: %s not found, training from random init", mname, mspec["weights"])
                    mspec["weights"] = None
                else:
                    raise UsfmaeError(f"{mspec['weights']}: weights file for model {mname} not found")
            for setting in settings(suite, sweep):
                sname = setting_name(setting)
                # Each sweep setting is its own report row, so settings are never averaged together.
                label = mname if sname == "default" else f"{mname} [{sname}]"
                values_cfg = {**suite.recipe, **{k: _fill(v, values) for k, v in dspec.items()}, **mspec,
                              **setting, **(overrides or {}),
                              "out": str(Path(out) / dname / mname / sname), "label": label}
                if values_cfg.get("weights") is None:
                    values_cfg.pop("weights", None)
                cfg = build_config(cls, None, checked_settings(values_cfg, f"{mname} on {dname}", cls))
                groups.append(Group(mname, dname, sname, cfg))
    return groups


def run(suite: Suite | str | Path, data_root: str | Path, out: str | Path, weights: str | None = None,
        baseline_weights: str | None = None, sweep: bool = False, models: list[str] | None = None,
        datasets: list[str] | None = None, overrides: dict[str, Any] | None = None,
        render: bool = True, fm_weights: str | None = None) -> dict[str, Any]:
    """Run (or resume) the grid and render the report.

    Returns:
        ``{"cells_run", "cells_skipped", "groups", "left_out": {model: reason}, "results": [paths],
        "table": path or None}``; also written to ``OUT/benchmark.json``.
    """
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    out = Path(out)
    absent = left_out(suite, fm_weights, models)
    for name, reason in absent.items():
        log.warning("%s left out: %s", name, reason)
    groups = plan(suite, data_root, out, weights, baseline_weights, sweep, models, datasets, overrides, fm_weights)
    ran = skipped = 0
    results: list[str] = []
    for i, group in enumerate(groups, 1):
        log.info("[%d/%d] %s on %s (%s)", i, len(groups), group.model, group.dataset, group.setting)
        summary = (segment.run if suite.task == "segmentation" else finetune.run)(group.cfg)
        skipped += summary["skipped"]
        ran += len(summary["cells"]) - summary["skipped"]
        results += summary["cells"]
    summary_out: dict[str, Any] = {"suite": suite.name, "cells_run": ran, "cells_skipped": skipped,
                                   "groups": [{"model": g.model, "dataset": g.dataset, "setting": g.setting,
                                               "out": g.cfg.out} for g in groups],
                                   "left_out": absent, "results": results, "table": None}
    if render and results:
        summary_out["table"] = str(render_report(out, list(suite.models), suite.with_paper))
    write_json(out / "benchmark.json", summary_out)
    return summary_out


def render_report(out: Path, models: list[str], with_paper: bool = False) -> Path:
    """Table 2 layout (models x datasets, P/R/F1) in Markdown and CSV, plus confusion matrices;
    ``with_paper`` adds the published rows, marked as such."""
    written = report.write_report(out, report.ReportConfig(out=str(out / "report"), models=models,
                                                            with_paper=with_paper))
    return next(p for p in written.get("tables", []) + written.get("seg_tables", []) if p.suffix == ".md")


# ------------------------------------------------------------------------------ probe label curves
@dataclass
class ProbeConfig:
    """Settings of ``usfmae probe``: frozen features, linear and k-NN probes, label-fraction curves."""

    data: str = opt("", "labelled data KIND:PATH (see usfmae finetune --help)")
    weights: str | None = opt(None, "encoder checkpoint; none = --model from scratch (the control)")
    model: str = opt("mae_vit_base_patch16", "encoder registry name (architecture hint for --weights), or a "
                     f"foundation model with its published --weights: {', '.join(ADAPTERS)}")
    out: str = opt("probe_out", "output folder")
    pool: str = opt("cls", "pooled feature", choices=["cls", "mean"])
    fit: str | None = opt(None, "how images become square: pad or stretch (default: the encoder's pretraining fit)",
                          choices=["pad", "stretch"])
    methods: list[str] = opt(["linear", "knn"], "probes to fit: linear (logistic regression), knn")
    fractions: list[float] = opt([0.01, 0.05, 0.1, 0.25, 0.5, 1.0], "label fractions of each training fold")
    seeds: list[int] = opt([0, 1, 2], "seeds (label subsets and logistic regression)")
    knn_k: int = opt(20, "neighbours of the k-NN probe (cosine)")
    split: str = opt("auto", "auto, official or kfold", choices=["auto", "official", "kfold"])
    k: int = opt(5, "folds for --split kfold")
    folds: list[int] = opt([], "run only these fold indices (default: all)")
    batch_size: int = opt(64, "images per forward pass")
    bootstrap: int = opt(200, "bootstrap resamples for the CIs of each cell (0 = none)")
    device: str | None = opt(None, "cuda, cpu, ... (default: cuda when available)")
    num_workers: int = opt(0, "image decoding workers")
    label: str | None = opt(None, "row label in the report (default: model name, '(scratch)' without weights)")
    report: bool = opt(True, "render the table and label-efficiency plots to OUT/report")

    def __post_init__(self) -> None:
        check(bool(self.data), "give --data KIND:PATH")
        check(bool(self.methods) and set(self.methods) <= set(PROBES), "methods must be linear and/or knn")
        check(bool(self.fractions) and all(0 < f <= 1 for f in self.fractions), "fractions must be in (0, 1]")
        check(len(self.seeds) > 0, "give at least one seed")
        check(self.knn_k >= 1 and self.batch_size >= 1, "knn-k and batch-size must be positive")


def run_probe(cfg: ProbeConfig) -> dict[str, Any]:
    """Extract frozen features once, then fit every (method, fraction, fold, seed) cell.

    Writes one results JSON per cell under ``results/`` (skipped when present), ``curve.csv``
    (one row per cell), ``curve.json`` (mean/std of macro-F1 and accuracy per method and fraction)
    and, with ``cfg.report``, ``report/`` (table and label-efficiency plots).
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    ds = labelled.load_dataset(cfg.data)
    folds = [f for f in finetune.dataset_folds(ds, cfg.split, cfg.k, cfg.seeds[0]) if not cfg.folds or f.index in cfg.folds]
    check(bool(folds), f"none of folds {cfg.folds} exist in {ds.name}")
    model, info = load_encoder(cfg.weights, cfg.model, **({"fit": cfg.fit} if cfg.fit else {}))
    device = pick_device(cfg.device)
    images, kept = preload_images([r.path for r in ds.records], info.img_size, info.in_chans, cfg.num_workers,
                                  RejectLog(out / "rejects.jsonl"), progress=True, fit=info.fit)
    feats = extract_features(model, images, info.mean, info.std, cfg.pool, cfg.batch_size, device)
    row = np.full(len(ds), -1, dtype=np.int64)
    row[kept] = np.arange(len(kept))
    base = cfg.label or f"{info.name}{' (scratch)' if cfg.weights is None else ''}"
    rows = []
    for method, fraction, fold, seed in itertools.product(cfg.methods, sorted(cfg.fractions), folds, cfg.seeds):
        label = f"{base}{finetune.MODE_TITLES[method]}"
        path = finetune.cell_path(out / "results", ds.name, label, fold.index, seed, fraction)
        if path.is_file():
            result = read_json(path)
        else:
            result = finetune.probe_cell(label, ds, fold, seed, fraction, feats, row, method=method, knn_k=cfg.knn_k,
                                         info=info, pool=cfg.pool, weights=cfg.weights, bootstrap=cfg.bootstrap)
            report.save_result(out / "results", result)
        m = result["metrics"]
        rows.append({"method": method, "fraction": fraction, "fold": fold.index, "seed": seed,
                     "n_train": result["training"]["n_train"], "accuracy": m["accuracy"],
                     "balanced_accuracy": m["balanced_accuracy"], "f1_macro": m["f1_macro"]})
    with atomic_open(out / "curve.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    curve = []
    for method, fraction in itertools.product(cfg.methods, sorted(cfg.fractions)):
        sel = [r for r in rows if r["method"] == method and r["fraction"] == fraction]
        f1 = np.array([r["f1_macro"] for r in sel])
        acc = np.array([r["accuracy"] for r in sel])
        curve.append({"method": method, "fraction": fraction, "cells": len(sel),
                      "n_train_mean": float(np.mean([r["n_train"] for r in sel])),
                      "f1_macro_mean": float(f1.mean()), "f1_macro_std": float(f1.std(ddof=1)) if len(sel) > 1 else 0.0,
                      "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std(ddof=1)) if len(sel) > 1 else 0.0})
    summary = {"dataset": ds.name, "model": info.name, "source": info.source, "n_images": int(len(kept)),
               "feature_dim": int(feats.shape[1]), "curve": curve}
    write_json(out / "curve.json", summary)
    if cfg.report:
        # Label-efficiency plots and the table at 100% labels, by the report module.
        summary["report"] = {k: [str(p) for p in v] for k, v in
                             report.write_report(out / "results", report.ReportConfig(out=str(out / "report"))).items()}
    return summary
