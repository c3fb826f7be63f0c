"""Help examples name folders that exist: the demo's stage folders, files earlier examples write."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from usfmae.cli import VERBS, build_parser

DEMO_SOURCE = (Path(__file__).parents[1] / "src" / "usfmae" / "demo.py").read_text(encoding="utf-8")
DEMO_FOLDERS = set(re.findall(r'out / "(\d_\w+)"', DEMO_SOURCE))


def _help(verb: str) -> str:
    parser = build_parser(verb)
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices[verb].format_help()


def test_the_demo_layout_is_known():
    assert {"1_phantom", "1_task", "2_clean", "3_shards", "4_pretrain", "5_eval", "6_report"} <= DEMO_FOLDERS


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_help_examples_name_existing_demo_folders(verb):
    named = set(re.findall(r"demo_out/([\w.]+)", _help(verb)))
    assert named <= DEMO_FOLDERS, f"usfmae {verb} --help names demo_out/{sorted(named - DEMO_FOLDERS)}"


def test_finetune_prints_no_spread_for_a_single_cell(phantom_dataset, tmp_path, capsys):
    from usfmae.cli import main

    assert main(["finetune", "--data", f"phantom:{phantom_dataset}", "--model", "mae_vit_micro_patch8_64",
                 "--mode", "linear", "--split", "kfold", "--k", "2", "--folds", "0", "--bootstrap", "0",
                 "--out", str(tmp_path / "ft")]) == 0
    import json

    printed = json.loads(capsys.readouterr().out)
    assert printed["cells"] == 1 and printed["f1_macro"].endswith(" ± n/a")  # was "+- 0.000"
