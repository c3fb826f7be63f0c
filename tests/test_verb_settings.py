"""Verbs built from settings dataclasses: every setting has a flag in --help, a YAML preset sets it."""

from __future__ import annotations

import dataclasses

import pytest

from usfmae import cli
from usfmae.config import config_from_args
from usfmae.curate.audit import AuditConfig
from usfmae.curate.sources import SourcesConfig
from usfmae.downstream.benchmark import BenchmarkConfig
from usfmae.downstream.embed import EmbedConfig
from usfmae.downstream.export import ExportConfig
from usfmae.downstream.merge import MergeConfig
from usfmae.downstream.reconstruct import ReconstructConfig

# verb, its settings, hand-made arguments (positionals, required flags) not built from the dataclass.
VERBS = [
    ("embed", EmbedConfig, {"input": "input"}),
    ("reconstruct", ReconstructConfig, {"images": "images"}),
    ("audit", AuditConfig, {"evaluation": "--eval"}),
    ("sources", SourcesConfig, {"action": "{list,check}", "root": "root"}),
    ("export", ExportConfig, {}),
    ("benchmark", BenchmarkConfig, {}),
    ("merge", MergeConfig, {"shards": "shards"}),
]


def _flags(cls: type, renamed: dict[str, str]) -> list[str]:
    return [renamed.get(f.name, "--" + f.name.replace("_", "-")) for f in dataclasses.fields(cls)]


@pytest.mark.parametrize(("verb", "cls", "renamed"), VERBS, ids=[v[0] for v in VERBS])
def test_every_setting_is_in_help(verb, cls, renamed, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main([verb, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    missing = [flag for flag in _flags(cls, renamed) + ["--config"] if flag not in text]
    assert missing == []


# verb, argv before --config, YAML preset, the setting it sets and the value expected.
PRESETS = [
    ("embed", ["embed", "imgs", "--out", "f.npy"], "batch_size: 8\npool: mean\n", {"batch_size": 8, "pool": "mean"}),
    ("reconstruct", ["reconstruct", "a.png", "--weights", "w.pt", "--out", "g.png"], "mask_ratio: 0.25\nseed: 3\n",
     {"mask_ratio": 0.25, "seed": 3, "images": ["a.png"]}),
    ("audit", ["audit", "--pretrain", "m.parquet", "--eval", "ev", "--out", "o"], "threshold: 4\nfps: 1\n",
     {"threshold": 4, "fps": 1.0, "evaluation": "ev"}),
    ("sources", ["sources", "list"], "format: tsv\n", {"format": "tsv", "action": "list"}),
    ("export", ["export", "--weights", "w.pt", "--out", "x"], "pool: mean\nopset: 18\nonnx: false\nformat: hf\n",
     {"pool": "mean", "opset": 18, "onnx": False, "format": "hf", "weights": "w.pt"}),
    ("benchmark", ["benchmark", "--data-root", "d", "--out", "o"],
     "suite: fm-zoo\nmodels: [usfm]\nsweep: true\nset: [epochs=5]\n",
     {"suite": "fm-zoo", "models": ["usfm"], "sweep": True, "set": ["epochs=5"], "data_root": "d"}),
]


@pytest.mark.parametrize(("verb", "argv", "preset", "expected"), PRESETS, ids=[p[0] for p in PRESETS])
def test_yaml_preset_sets_a_value(verb, argv, preset, expected, tmp_path) -> None:
    path = tmp_path / "preset.yaml"
    path.write_text(preset, encoding="utf-8")
    cls = dict((v, c) for v, c, _ in VERBS)[verb]
    args = cli.build_parser(verb).parse_args([*argv, "--config", str(path)])
    cfg = config_from_args(cls, args)
    assert {k: getattr(cfg, k) for k in expected} == expected


@pytest.mark.parametrize(("verb", "argv", "flag"), [
    ("embed", ["embed", "imgs", "--out", "f.npy"], ["--batch-size", "2"]),
    ("audit", ["audit", "--pretrain", "m", "--eval", "e", "--out", "o"], ["--threshold", "9"]),
    ("export", ["export", "--weights", "w.pt", "--out", "x"], ["--opset", "19"]),
], ids=["embed", "audit", "export"])
def test_flags_win_over_the_preset(verb, argv, flag, tmp_path) -> None:
    path = tmp_path / "preset.yaml"
    path.write_text(f"{flag[0][2:].replace('-', '_')}: 5\n", encoding="utf-8")
    cls = dict((v, c) for v, c, _ in VERBS)[verb]
    cfg = config_from_args(cls, cli.build_parser(verb).parse_args([*argv, "--config", str(path), *flag]))
    assert getattr(cfg, flag[0][2:].replace("-", "_")) == int(flag[1])


@pytest.mark.parametrize(("argv", "message"), [
    (["embed", "imgs", "--out", "f.npy", "--batch-size", "0"], "batch_size must be positive, got 0"),
    (["reconstruct", "a.png", "--weights", "w.pt", "--out", "g.png", "--mask-ratio", "1.0"],
     "--mask-ratio must be in [0, 1), got 1.0"),
    (["audit", "--pretrain", "m", "--eval", "e", "--out", "o", "--threshold", "40"],
     "threshold must be between 0 and 31, got 40"),
    (["sources", "check"], "sources check needs a folder"),
    (["export", "--weights", "w.pt", "--out", "x", "--opset", "16"], "opset 16 is too old; use 17 or newer"),
    (["benchmark", "--data-root", "d", "--out", "o", "--set", "epochs"], "--set 'epochs': expected KEY=VALUE"),
], ids=["embed", "reconstruct", "audit", "sources", "export", "benchmark"])
def test_bad_settings_are_one_line_exit_2(argv, message, capsys) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


# Command lines users typed before the settings moved into dataclasses (README, --help) and the
# settings they meant: the same flags, the same defaults.
EXPORT_DEFAULTS = {"model": None, "in_chans": None, "pool": "cls", "opset": 17, "onnx": True, "tolerance": 1e-4,
                   "format": "hub", "license": None, "audit": None}
BENCHMARK_DEFAULTS = {"suite": "paper", "weights": None, "baseline_weights": None, "fm_weights": None,
                      "models": [], "datasets": [], "sweep": False, "set": []}
COMMAND_LINES = [
    ("export --weights final.pt --out export/", ExportConfig, {**EXPORT_DEFAULTS}),
    ("export --weights u.pt --in-chans 3 --pool mean --license other --audit audit/ --out e/", ExportConfig,
     {**EXPORT_DEFAULTS, "in_chans": 3, "pool": "mean", "license": "other", "audit": "audit/"}),
    ("export --weights f.pt --format hf --no-onnx --tolerance 1e-3 --opset 18 --model mae_vit_base_patch16 --out h/",
     ExportConfig, {**EXPORT_DEFAULTS, "format": "hf", "onnx": False, "tolerance": 1e-3, "opset": 18,
                    "model": "mae_vit_base_patch16"}),
    ("benchmark --suite paper --data-root ~/data --weights u.pt --baseline-weights ~/imagenet --fm-weights ~/w "
     "--out runs/paper", BenchmarkConfig,
     {**BENCHMARK_DEFAULTS, "weights": "u.pt", "baseline_weights": "~/imagenet", "fm_weights": "~/w"}),
    ("benchmark --suite paper --data-root ~/data --models resnet50 vit_b16 --sweep --out runs/sweep",
     BenchmarkConfig, {**BENCHMARK_DEFAULTS, "models": ["resnet50", "vit_b16"], "sweep": True}),
    ("benchmark --suite my_suite.yaml --data-root ~/data --out runs/mine --datasets busbra --set epochs=5 lr=1e-3",
     BenchmarkConfig, {**BENCHMARK_DEFAULTS, "suite": "my_suite.yaml", "datasets": ["busbra"],
                       "set": ["epochs=5", "lr=1e-3"]}),
]


@pytest.mark.parametrize(("line", "cls", "expected"), COMMAND_LINES, ids=[c[0][:40] for c in COMMAND_LINES])
def test_earlier_command_lines_mean_the_same(line, cls, expected) -> None:
    argv = line.split()
    cfg = config_from_args(cls, cli.build_parser(argv[0]).parse_args(argv))
    assert {k: getattr(cfg, k) for k in expected} == expected
