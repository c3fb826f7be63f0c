"""Presets by name: `--config tiny_cpu` works from any folder (after pip install), and they can be listed."""

from __future__ import annotations

import pytest

from usfmae.config import build_config, find_preset, list_presets
from usfmae.errors import ConfigError
from usfmae.train.pretrain import PretrainConfig


def test_presets_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here, as after `pip install usfmae`
    by_name = build_config(PretrainConfig, "tiny_cpu")
    for spelling in ("pretrain/tiny_cpu", "configs/pretrain/tiny_cpu.yaml", "tiny_cpu.yaml"):
        assert build_config(PretrainConfig, spelling) == by_name, spelling
    assert (by_name.model, by_name.mask_ratio) == ("mae_vit_tiny_patch8_64", 0.75)


def test_a_file_wins_and_unknown_names_list_the_presets(tmp_path):
    own = tmp_path / "tiny_cpu"
    own.write_text("model: mae_vit_micro_patch8_64\n")
    assert find_preset(own) == own
    assert build_config(PretrainConfig, own).model == "mae_vit_micro_patch8_64"
    known = ", ".join(list_presets())
    assert "pretrain/tiny_cpu" in known
    with pytest.raises(ConfigError) as caught:
        find_preset("nope")
    assert str(caught.value) == (f"nope: config file not found; presets shipped with usfmae: {known} "
                                 "(list: usfmae presets)")


def test_presets_verb_lists_every_preset(capsys):
    from usfmae.cli import main

    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == list(list_presets()) == sorted(names)
    assert {"benchmark/paper", "pretrain/demo_cpu", "pretrain/tiny_cpu", "pretrain/usfmae_vit_b16"} <= set(names)
    assert "trains on a laptop CPU" in lines[names.index("pretrain/tiny_cpu")]


def test_pretrain_cli_takes_a_preset_name(tmp_path, monkeypatch, capsys):
    from usfmae.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["pretrain", "--config", "nope", "--out", "run"])
    assert code == 2 and "presets shipped with usfmae" in capsys.readouterr().err
