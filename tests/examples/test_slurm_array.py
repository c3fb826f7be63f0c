"""examples/slurm_array.sh runs as written: array tasks then the merge job equal a single run (ingest, clean, pack)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq

from usfmae.cli import main
from usfmae.curate.ingest import IngestConfig, run_ingest
from usfmae.curate.shard import shard_of

SCRIPT = Path(__file__).parents[2] / "examples" / "slurm_array.sh"


def _script(tmp_path: Path, *args: str, **slurm: str) -> subprocess.CompletedProcess:
    shim = tmp_path / "bin" / "usfmae"  # the installed console script, on this checkout's sources
    if not shim.exists():
        shim.parent.mkdir()
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m usfmae.cli "$@"\n')
        shim.chmod(0o755)
    src = str(Path(__file__).parents[2] / "src")
    env = {**os.environ, "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]), **slurm}
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True)


def test_array_tasks_then_merge_equal_a_single_run(tmp_path):
    root = tmp_path / "root" / "S"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["a.png", "b.png", "c.png", "d.png", "e.png"]
    for name in names:
        cv2.imwrite(str(root / name), cv2.resize(rng.uniform(0, 255, (6, 6)).astype(np.uint8), (48, 48)))
    cv2.imwrite(str(root / "z_copy.png"), cv2.imread(str(root / "a.png")))  # a duplicate across shards
    assert shard_of("S/a.png", 2) != shard_of("S/z_copy.png", 2)
    for index in range(2):
        task = _script(tmp_path, "ingest", str(tmp_path / "root"), str(tmp_path / "parts"), "--workers", "1",
                       SLURM_ARRAY_TASK_ID=str(index), SLURM_ARRAY_TASK_COUNT="2")
        assert task.returncode == 0, task.stderr
        assert "workers: 1" in (tmp_path / "parts" / f"shard-{index}" / "ingest_config.yaml").read_text()
    merge = _script(tmp_path, "merge", str(tmp_path / "parts"), str(tmp_path / "corpus"))
    assert merge.returncode == 0, merge.stderr
    assert merge.stdout.startswith("2 shards, 6 files: 5 frames ok, 1 duplicate")
    run_ingest(IngestConfig(root=str(tmp_path / "root"), out=str(tmp_path / "single"), workers=1), progress=False)
    assert pq.read_table(tmp_path / "corpus" / "manifest.parquet").equals(
        pq.read_table(tmp_path / "single" / "manifest.parquet"))
    # the next stage's array tasks start from the merged corpus, and its merge job combines them
    for index in range(2):
        clean = _script(tmp_path, "clean", str(tmp_path / "corpus" / "manifest.parquet"), str(tmp_path / "cleaned"),
                        "--no-ocr", "--sheet", "0", SLURM_ARRAY_TASK_ID=str(index), SLURM_ARRAY_TASK_COUNT="2")
        assert clean.returncode == 0, clean.stderr
    record = json.loads((tmp_path / "cleaned" / "shard-1" / "shard.json").read_text())
    assert (record["stage"], record["shard"], record["finished"]) == ("clean", "1/2", True)
    merge = _script(tmp_path, "merge", str(tmp_path / "cleaned"), str(tmp_path / "clean_merged"))
    assert merge.returncode == 0, merge.stderr
    assert merge.stdout.startswith("2 shards, 5 images: 5 cleaned, 0 rejected")
    assert main(["clean", str(tmp_path / "corpus" / "manifest.parquet"), "--out", str(tmp_path / "clean_single"),
                 "--no-ocr", "--sheet", "0", "--no-progress"]) == 0
    merged, single = (pq.read_table(tmp_path / name / "manifest.parquet") for name in ("clean_merged", "clean_single"))
    same = [c for c in single.column_names if c != "seconds"]  # time taken per image differs run to run
    assert merged.column_names == single.column_names and merged.select(same).equals(single.select(same))
    # and pack's: the merged shard files are the single run's, byte for byte
    cleaned = str(tmp_path / "clean_merged" / "manifest.parquet")
    for index in range(2):
        pack = _script(tmp_path, "pack", cleaned, str(tmp_path / "packs"), "--size", "32", "--workers", "1",
                       SLURM_ARRAY_TASK_ID=str(index), SLURM_ARRAY_TASK_COUNT="2")
        assert pack.returncode == 0, pack.stderr
    merge = _script(tmp_path, "merge", str(tmp_path / "packs"), str(tmp_path / "shards"))
    assert merge.returncode == 0, merge.stderr
    assert main(["pack", cleaned, "--out", str(tmp_path / "shards_single"), "--size", "32", "--workers", "1",
                 "--no-progress"]) == 0
    files = sorted(p.name for p in (tmp_path / "shards_single").glob("shard_*.npy"))
    assert files and all((tmp_path / "shards" / f).read_bytes() == (tmp_path / "shards_single" / f).read_bytes()
                         for f in files)


def test_unknown_stage_is_exit_2(tmp_path):
    done = _script(tmp_path, "pretrain", "a", "b")
    assert done.returncode == 2 and done.stderr.startswith("usage: sbatch")
