"""bench/hostile_inputs.py's corpus (~360 broken, bomb, oddly named and non-regular inputs) as a regression
test: ingest, clean, pack and audit finish with exit 0 twice and account for every input they read."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import hostile_inputs  # noqa: E402

from usfmae.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("hostile") / "corpus"
    root.mkdir()
    names = hostile_inputs.make_corpus(root, seed=0)
    regular = [n for n in names if (root / n).is_file() and not (root / n).is_symlink()]
    return root, regular


ARGS = {"ingest": ["--workers", "1", "--no-progress"],
        "clean": ["--workers", "1", "--no-progress", "--no-text-check"],
        "pack": ["--size", "32", "--no-progress"],
        "audit": []}  # the folder against itself (as bench/hostile_inputs.py runs it)


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(ARGS))
def test_every_input_is_written_or_rejected_and_nothing_crashes(corpus, tmp_path, capsys, stage) -> None:
    root, regular = corpus
    out = tmp_path / stage
    inputs = ["--pretrain", str(root), "--eval", str(root)] if stage == "audit" else [str(root)]
    for _ in range(2):  # the rerun resumes over the same bad files
        assert main([stage, *inputs, "--out", str(out), *ARGS[stage]]) == 0
        assert "Traceback" not in capsys.readouterr().err
    seen = hostile_inputs.accounted(stage, out)
    scope = [n for n in regular if hostile_inputs.in_scope(stage, n)]
    missing = [n for n in scope if hostile_inputs._shown(n) not in seen
               and (stage != "pack" or Path(hostile_inputs._shown(n)).stem not in seen)]
    assert len(scope) > 150 and missing == []
