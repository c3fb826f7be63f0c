"""bench/threads.py: each setting is measured in a fresh process that runs with the count it was given."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "threads.py"


@pytest.fixture(scope="module")
def threads_bench():
    spec = importlib.util.spec_from_file_location("bench_threads", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_threads"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_setting_reaches_its_own_process(threads_bench, tmp_path):
    workers, _ = threads_bench.TASKS["clean"](tmp_path)  # makes the 48 scans once
    assert workers == 1
    figure, used = threads_bench.measure_once("clean", tmp_path, tmp_path / "out", 1)
    assert used == 1 and figure > 0  # --threads 1 set before torch started, as the CLI does
    assert len(list((tmp_path / "out" / "images").glob("*.png"))) == 48  # the child really cleaned every scan


@pytest.mark.parametrize("cores, grid", [(1, [None, 1]), (2, [None, 1, 2]), (6, [None, 1, 2, 4, 6])])
def test_settings_are_the_default_then_powers_of_two_and_the_cores(threads_bench, cores, grid):
    assert threads_bench.settings(cores) == grid
