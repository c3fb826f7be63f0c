"""The CLI framework and dataclass config machinery."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Literal

import pytest

from usfmae import cli
from usfmae.config import add_dataclass_arguments, build_config, check, config_from_args, opt, save_config
from usfmae.errors import ConfigError


@dataclasses.dataclass
class _Demo:
    steps: int = opt(10, "number of steps")
    lr: float = opt(1e-3, "learning rate")
    name: str = opt("tiny", "model name", choices=["tiny", "base"])
    mean: tuple[float, ...] = opt((0.5,), "channel means")
    amp: bool = opt(False, "bf16 autocast (about 50% less memory)")
    mode: Literal["a", "b"] = opt("a", "mode")

    def __post_init__(self) -> None:
        check(self.steps > 0, f"steps must be positive, got {self.steps}")


def _parse(argv: list[str]) -> _Demo:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_dataclass_arguments(parser, _Demo)
    return config_from_args(_Demo, parser.parse_args(argv))


def test_help_shows_percent_signs_verbatim(capsys) -> None:
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, _Demo)
    parser.print_help()
    assert "about 50% less memory" in capsys.readouterr().out


def test_flags_override_defaults() -> None:
    cfg = _parse(["--steps", "3", "--mean", "0.1", "0.2", "--amp", "--mode", "b"])
    assert cfg == _Demo(steps=3, mean=(0.1, 0.2), amp=True, mode="b")


def test_yaml_preset_then_flags(tmp_path) -> None:
    preset = tmp_path / "p.yaml"
    preset.write_text("steps: 7\nlr: 0.5\nmean: [0.3]\n")
    cfg = _parse(["--config", str(preset), "--lr", "0.25"])
    assert (cfg.steps, cfg.lr, cfg.mean) == (7, 0.25, (0.3,))


def test_save_and_reload_roundtrip(tmp_path) -> None:
    cfg = _Demo(steps=5, mean=(0.1, 0.2, 0.3), amp=True)
    save_config(cfg, tmp_path / "c.yaml")
    assert build_config(_Demo, tmp_path / "c.yaml") == cfg


def test_validation_and_unknown_keys(tmp_path) -> None:
    with pytest.raises(ConfigError, match="steps must be positive"):
        _parse(["--steps", "-1"])
    preset = tmp_path / "bad.yaml"
    preset.write_text("stepz: 3\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        _parse(["--config", str(preset)])


def test_cli_usage_errors_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["no-such-verb"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and "Traceback" not in err


def test_every_verb_has_a_module_with_help(capsys) -> None:
    for verb in cli.VERBS:
        with pytest.raises(SystemExit) as exc:
            cli.main([verb, "--help"])
        assert exc.value.code == 0, verb
        assert "usage: usfmae " + verb in capsys.readouterr().out
