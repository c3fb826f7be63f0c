"""bench/scale.py: clean -> pack -> embed without ingest, one JSON line with every stage's figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "scale.py"


@pytest.mark.slow
def test_clean_pack_embed_chain_reports_each_stage_at_each_size():
    # asked out of order: the stages still run clean -> pack -> embed (embed first would have no
    # shards, and a verb's user error now stops the bench instead of passing as a fast run)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, str(BENCH), "--stages", "embed,clean,pack", "--sizes", "3", "6",
                           "--no-ocr", "--distinct", "2"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (result["sizes"], result["distinct"], result["clean_ocr"]) == ([3, 6], 2, False)
    for stage in ("clean", "pack", "embed"):
        assert set(result[stage]) == {"3", "6", "rss_ratio"}
        assert all(result[stage][n]["peak_rss_mb"] > 50 and result[stage][n]["frames_per_s"] > 0 for n in ("3", "6"))
