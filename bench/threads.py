"""Is the default thread count good? Pretraining, fine-tuning and clean at every setting, side by side.

    python bench/threads.py [--rounds 3] [--tasks pretrain,finetune,clean]

Each task runs the product's own entry point (``train.pretrain.run``, ``train.finetune.run``,
``clean.run.run_clean``) on small phantom data with its default workers; an explicit thread count
is set the way ``usfmae --threads N`` sets it (``runtime.set_thread_option``); ``default`` passes no
option, so ``runtime.configure_threads`` chooses (from the cores and the load at that moment; the
counts it chose are reported). Settings are 1, 2, 4, ... up to the cores this process may use, and
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
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from usfmae import runtime


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
    write_phantom_dataset(data, n=64, seed=0, cfg=PhantomConfig(size=64, overlays=False), progress=False)
    epochs, batch = 10, 16  # a few seconds: the default's fixed 0.1 s probe of the idle cores stays small

    def once(out: Path) -> float:
        cfg = FinetuneConfig(data=f"phantom:{data}", out=str(out), model="mae_vit_tiny_patch8_64", epochs=epochs,
                             batch_size=batch, k=2, folds=[0], patience=0, bootstrap=0, augment=True)
        start = time.perf_counter()
        run(cfg)
        return 32 * epochs / (time.perf_counter() - start)  # about half the set trains in a 2-fold split

    return FinetuneConfig.num_workers, once


def clean_task(root: Path) -> tuple[int, Callable[[Path], float]]:
    """Annotation removal (usfmae method, OCR on) of 48 phantom scans with overlays at 256 px (a few
    seconds: the default pays a fixed 0.1 s probe of the idle cores, which would be 15% of 12 scans)."""
    from usfmae.clean.run import CleanConfig, run_clean
    from usfmae.phantom.generate import PhantomConfig, write_phantom_dataset

    data = root / "phantom_clean"
    write_phantom_dataset(data, n=48, seed=1, cfg=PhantomConfig(size=256, overlays=True), progress=False)

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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="measurements per setting (median)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated: " + ", ".join(TASKS))
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)
    runtime._USER_THREADS = None  # noqa: SLF001 - the default must not be the caller's OMP_NUM_THREADS
    cores = runtime.available_cores()
    result: dict = {"bench": "threads", "cores": cores, "rounds": args.rounds,
                    "load_before": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="usfmae_threads_") as tmp:
        root = Path(tmp)
        for name in args.tasks.split(","):
            workers, once = TASKS[name](root)
            grid = settings(cores)
            figures: dict[int | None, list[float]] = {t: [] for t in grid}
            chosen: list[int] = []
            once(root / f"{name}_warmup")  # first call pays imports, OCR start-up, worker servers
            for r in range(args.rounds):
                for t in grid[r % len(grid):] + grid[:r % len(grid)]:  # rotated: no setting always first
                    runtime.set_thread_option(t)  # None: no --threads, exactly as a user who passes none
                    figures[t].append(once(root / f"{name}_{t}_{r}"))
                    if t is None:
                        chosen.append(torch.get_num_threads())  # what configure_threads picked
            runtime.set_thread_option(None)
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
