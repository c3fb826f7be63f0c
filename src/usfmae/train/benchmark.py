"""The benchmark grid: models x datasets x (sweep settings) x folds x seeds, resumable.

A suite is a YAML file (``configs/benchmark/paper.yaml`` is the paper's Table 2) with ``models``,
``datasets``, a shared ``recipe`` (any :class:`~usfmae.train.finetune.FinetuneConfig` field), an
optional ``sweep`` (field -> list of values) and placeholders ``{data_root}``, ``{weights}``,
``{baseline_weights}`` filled from the command line. Results land in
``OUT/<dataset>/<model>/<setting>/fold<F>_seed<S>.json``; a cell whose JSON exists is skipped, so
an interrupted grid resumes where it stopped. At the end the report renderer writes the table.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from usfmae.config import build_config
from usfmae.errors import ConfigError, UsfmaeError
from usfmae.fileio import write_json
from usfmae.train import finetune
from usfmae.train.finetune import FinetuneConfig

log = logging.getLogger(__name__)

# Built-in suites: the repository's configs/benchmark (editable installs), else a copy shipped as
# package data under usfmae/configs/benchmark.
SUITE_DIRS = (Path(__file__).resolve().parents[3] / "configs" / "benchmark",
              Path(__file__).resolve().parents[1] / "configs" / "benchmark")
PLACEHOLDERS = ("data_root", "weights", "baseline_weights")


@dataclass
class Suite:
    """A parsed suite file."""

    name: str
    models: dict[str, dict[str, Any]]
    datasets: dict[str, dict[str, Any]]
    recipe: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, list[Any]] = field(default_factory=dict)


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
    unknown = sorted(set(raw) - {"name", "models", "datasets", "recipe", "sweep"})
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)}")
    for section in ("models", "datasets"):
        if not isinstance(raw.get(section), dict) or not raw[section]:
            raise ConfigError(f"{path}: '{section}' must be a non-empty mapping")
    recipe = {k: as_number(v) for k, v in (raw.get("recipe") or {}).items()}
    sweep = {k: [as_number(x) for x in (v if isinstance(v, list) else [v])] for k, v in (raw.get("sweep") or {}).items()}
    return Suite(str(raw.get("name", path.stem)), raw["models"], raw["datasets"], recipe, sweep)


def as_number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; turn such strings into the float meant."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


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


@dataclass
class Group:
    """All folds x seeds of one (model, dataset, setting): one ``finetune.run``."""

    model: str
    dataset: str
    setting: str
    cfg: FinetuneConfig


def plan(suite: Suite, data_root: str | Path, out: str | Path, weights: str | None = None,
         baseline_weights: str | None = None, sweep: bool = False, models: list[str] | None = None,
         datasets: list[str] | None = None, overrides: dict[str, Any] | None = None) -> list[Group]:
    """Resolve the suite into runnable groups (validating every config before anything runs)."""
    values = {"data_root": str(data_root), "weights": weights, "baseline_weights": baseline_weights}
    for wanted, have, what in ((models, suite.models, "model"), (datasets, suite.datasets, "dataset")):
        missing = sorted(set(wanted or []) - set(have))
        if missing:
            raise ConfigError(f"unknown {what}(s) {', '.join(missing)}; suite {suite.name} has {', '.join(have)}")
    groups = []
    for dname, dspec in suite.datasets.items():
        if datasets and dname not in datasets:
            continue
        for mname, mspec in suite.models.items():
            if models and mname not in models:
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
                cfg = build_config(FinetuneConfig, None, values_cfg)
                groups.append(Group(mname, dname, sname, cfg))
    return groups


def run(suite: Suite | str | Path, data_root: str | Path, out: str | Path, weights: str | None = None,
        baseline_weights: str | None = None, sweep: bool = False, models: list[str] | None = None,
        datasets: list[str] | None = None, overrides: dict[str, Any] | None = None,
        render: bool = True) -> dict[str, Any]:
    """Run (or resume) the grid and render the report.

    Returns:
        ``{"cells_run", "cells_skipped", "groups", "results": [paths], "table": path or None}``;
        also written to ``OUT/benchmark.json``.
    """
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    out = Path(out)
    groups = plan(suite, data_root, out, weights, baseline_weights, sweep, models, datasets, overrides)
    ran = skipped = 0
    results: list[str] = []
    for i, group in enumerate(groups, 1):
        log.info("[%d/%d] %s on %s (%s)", i, len(groups), group.model, group.dataset, group.setting)
        summary = finetune.run(group.cfg)
        skipped += summary["skipped"]
        ran += len(summary["cells"]) - summary["skipped"]
        results += summary["cells"]
    summary_out: dict[str, Any] = {"suite": suite.name, "cells_run": ran, "cells_skipped": skipped,
                                   "groups": [{"model": g.model, "dataset": g.dataset, "setting": g.setting,
                                               "out": g.cfg.out} for g in groups],
                                   "results": results, "table": None}
    if render and results:
        summary_out["table"] = str(render_report(out, list(suite.models)))
    write_json(out / "benchmark.json", summary_out)
    return summary_out


def render_report(out: Path, models: list[str]) -> Path:
    """Table 2 layout (models x datasets, P/R/F1) in Markdown and CSV, plus confusion matrices."""
    from usfmae.eval import report

    written = report.write_report(out, report.ReportConfig(out=str(out / "report"), models=models))
    return next(p for p in written["tables"] if p.suffix == ".md")
