"""Is the default thread count good? Pretraining, fine-tuning and clean at every setting, side by side.

    python bench/threads.py [--rounds 3] [--tasks pretrain,finetune,clean]

Each task runs the product's own entry point (``train.pretrain.run``, ``train.finetune.run``,
``clean.run.run_clean``) on small phantom data with its default workers, in a fresh Python process
per measurement, as a user's ``usfmae`` command runs (``usfmae.runtime`` imported first, no thread
variables inherited); an explicit thread count is set the way ``usfmae --threads N`` sets it
(``runtime.set_thread_option``, before torch is imported); ``default`` passes no option, so
``runtime.configure_threads`` chooses (from the cores other processes left idle since the start;
the counts it chose are reported). Settings are 1, 2, 4, ... up to the cores this process may use, and
the default; they run interleaved round after round (A B C A B C ...) so a machine shared with
other work loads them alike (the order rotates each round, after one untimed warm-up run), and each
setting's figure is its median.

Prints ONE JSON line: per task the median images/s of every setting, the best explicit count,
``default_vs_best`` (the median over rounds of default / best explicit setting of that round;
>= 0.9 is the target; the default and the count it chose are the same work, so on a busy machine
this ratio shows the noise as well), ``worst_vs_best`` (what a bad count costs), and the load
average before and after.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from usfmae import runtime  # first, as in the CLI: its import starts the idle-core window


def pretrain_task(root: Path) -> tuple[int, Callable[[Path], float]]:
    """A tiny paper-recipe pretraining (2 DataLoader workers, the default); images/s after warm-up."""
    from usfmae.fileio import read_jsonl
    from usfmae.train.pretrain import PretrainConfig, run

    def once(out: Path) -> float:
        cfg = PretrainConfig(data="phantom:96", out=str(out), model="mae_vit_tiny_patch8_64", batch_size=32,
                             steps=9, log_every=3, ckpt_every=1000, recon_images=0, progress=False)
        run(cfg)
        records = read_jsonl(out / "log.jsonl")[1:]  # the first interval holds worker start-up
        return statistics.median(r["images_per_s"] for r in records)

    return PretrainConfig.num_workers, once


def finetune_task(root: Path) -> tuple[int, Callable[[Path], float]]:
    """One fold of fine-tuning the micro MAE on the phantom task (in-process decoding, the default)."""
    from usfmae.phantom.generate import PhantomConfig, write_phantom_dataset
    from usfmae.train.finetune import FinetuneConfig, run

    data = root / "phantom_ft"
    if not data.exists():  # made once by the parent; each measuring process reuses it
        write_phantom_dataset(data, n=64, seed=0, cfg=PhantomConfig(size=64, overlays=False), progress=False)
    epochs, batch = 10, 16

    def once(out: Path) -> float:
        cfg = FinetuneConfig(data=f"phantom:{data}", out=str(out), model="mae_vit_tiny_patch8_64", epochs=epochs,
                             batch_size=batch, k=2, folds=[0], patience=0, bootstrap=0, augment=True)
        start = time.perf_counter()
        run(cfg)
        return 32 * epochs / (time.perf_counter() - start)  # about half the set trains in a 2-fold split

    return FinetuneConfig.num_workers, once


def clean_task(root: Path) -> tuple[int, Callable[[Path], float]]:
    """Annotation removal (usfmae method, OCR on) of 48 phantom scans with overlays at 256 px."""
    from usfmae.clean.run import CleanConfig, run_clean
    from usfmae.phantom.generate import PhantomConfig, write_phantom_dataset

    data = root / "phantom_clean"
    if not data.exists():
        write_phantom_dataset(data, n=48, seed=1, cfg=PhantomConfig(size=256, overlays=True),
                              progress=False)

    def once(out: Path) -> float:
        start = time.perf_counter()
        summary = run_clean(data / "images", out, CleanConfig(sheet=0), progress=False)
        return summary["cleaned"] / (time.perf_counter() - start)

    return CleanConfig.workers, once


TASKS = {"pretrain": pretrain_task, "finetune": finetune_task, "clean": clean_task}


def settings(cores: int) -> list[int | None]:
    """None (the default) first, then 1, 2, 4, ... up to ``cores`` and the cores themselves."""
    powers = {1 << i for i in range(cores.bit_length()) if 1 << i <= cores}
    return [None, *sorted(powers | {cores})]


def measure_once(task: str, root: Path, out: Path, threads: int | None) -> tuple[float, int]:
    """Run ``task`` once in a fresh process (``threads``: its ``--threads``; None: the default).

    Returns:
        (images/s, torch threads the run computed with).
    """
    env = {k: v for k, v in os.environ.items() if k not in runtime._THREAD_VARS}  # noqa: SLF001
    cmd = [sys.executable, __file__, "--child", task, "--root", str(root), "--out", str(out)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{task} with threads={threads} failed:\n{done.stderr[-2000:]}")
    figure, used = json.loads(done.stdout.strip().splitlines()[-1])
    return figure, used


def child(task: str, root: Path, out: Path, threads: int | None) -> None:
    """One measurement in this process: print ``[images/s, torch threads used]``."""
    runtime.set_thread_option(threads)  # before torch is imported, as the CLI's --threads
    logging.disable(logging.INFO)
    _, once = TASKS[task](root)
    figure = once(out)
    import torch

    print(json.dumps([figure, torch.get_num_threads()]))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="measurements per setting (median)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated: " + ", ".join(TASKS))
    parser.add_argument("--child", choices=sorted(TASKS), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.root, args.out, args.threads)
        return {}
    cores = runtime.available_cores()
    result: dict = {"bench": "threads", "cores": cores, "rounds": args.rounds,
                    "load_before": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="usfmae_threads_") as tmp:
        root = Path(tmp)
        for name in args.tasks.split(","):
            workers, _ = TASKS[name](root)  # makes the task's data once
            grid = settings(cores)
            figures: dict[int | None, list[float]] = {t: [] for t in grid}
            chosen: list[int] = []
            measure_once(name, root, root / f"{name}_warmup", None)  # fills the page cache, compiles OCR data
            for r in range(args.rounds):
                for t in grid[r % len(grid):] + grid[:r % len(grid)]:  # rotated: no setting always first
                    figure, used = measure_once(name, root, root / f"{name}_{t}_{r}", t)
                    figures[t].append(figure)
                    if t is None:
                        chosen.append(used)  # what configure_threads picked
            median = {t: statistics.median(v) for t, v in figures.items()}
            best = max((t for t in grid if t is not None), key=median.get)
            # a ratio per round (its settings ran minutes apart at most), then the median of those
            ratios = [figures[None][r] / max(figures[t][r] for t in grid if t is not None)
                      for r in range(args.rounds)]
            result[name] = {"workers": workers, "default_chose": chosen, "best_threads": best,
                            "images_per_s": {("default" if t is None else str(t)): round(v, 2)
                                             for t, v in median.items()},
                            "default_vs_best": round(statistics.median(ratios), 3),
                            "worst_vs_best": round(min(median.values()) / median[best], 3)}
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
