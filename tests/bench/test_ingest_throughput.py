"""bench/ingest_throughput.py: one JSON line, and the side-by-side mode compares like with like."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "ingest_throughput.py"
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.slow
def test_side_by_side_with_the_same_checkout_writes_the_same_output():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, str(BENCH), "--seconds", "1", "--width", "64", "--height", "48",
                           "--repeats", "1", "--baseline", str(SRC), "--rounds", "1"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (result["video_src"], result["baseline_video_src"]) == (str(SRC), str(SRC))
    assert result["video_same_output"] and result["dicom_same_output"]
    # 30 source frames at 30 fps sampled at 3 fps: frames 0, 10, 20 of both files
    assert (result["video_frames_sampled"], result["dicom_frames_sampled"]) == (3, 3)
    assert result["video_decode_mode"] == "nonref" and result["video_speedup"] > 0
    assert len(result["video_out_frames_per_cpu_s_rounds"]) == len(result["baseline_dicom_out_frames_per_cpu_s_rounds"]) == 1
