"""How many threads a process computes with: torch intra-op and OpenCV threads sized to the cores.

Every verb runs some worker processes or threads (DataLoader workers, an ingest or clean pool,
pack's decode threads) beside the main process's own math. Left alone, torch and OpenCV each start
one thread per core in every one of those processes, so on a small or shared machine they fight
over the same cores: a tiny pretraining on a busy 2-core machine ran at 3.5 images/s with the
default threads and at 20 with one. :func:`configure_threads` therefore gives each process

- OpenCV: ``cores // max(workers, 1)`` threads, so threads x workers fit the cores this process
  may run on (``os.sched_getaffinity``: a container's or a SLURM job's share, not the machine's);
- torch: the same, but counting only the cores other processes leave idle (cores minus the
  cores other processes kept busy since the process started, from ``/proc/stat`` less this
  process's own CPU time, at least 1; the load average where there is no ``/proc``). torch's
  OpenMP threads wait for each other at every operation, so one thread that shares its core
  stalls them all: fine-tuning on the 2-core machine
  at load 7 ran 5x slower with 2 threads than with 1, while OpenCV's pool lost nothing
  (``bench/threads.py``);

and exports the counts (``OMP_NUM_THREADS``, ``OPENCV_FOR_THREADS_NUM``) to worker processes
started later: spawned pools read them when they import torch and OpenCV; DataLoader workers still
drop to one thread each, as the training code does. ``usfmae --threads N <verb>`` sets both counts
(:func:`set_thread_option`); so does an ``OMP_NUM_THREADS`` the user set before starting the
process (the usual way on clusters).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

_TORCH_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")  # read when torch starts
_CV_VARS = ("OPENCV_FOR_THREADS_NUM",)  # read when OpenCV starts
_THREAD_VARS = _TORCH_VARS + _CV_VARS
_option: list[int | None] = [None]  # the global ``--threads`` of this process's command line


def _user_threads() -> int | None:
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


# read once, before this module writes the variable itself
_USER_THREADS = _user_threads()


def set_thread_option(threads: int | None) -> None:
    """Record the command line's ``--threads`` (None: choose per verb) for later :func:`configure_threads`."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be positive, got {threads}")
    _option[0] = threads
    if threads is not None:
        # before torch or OpenCV is imported, the environment is what sizes their pools
        for var in _THREAD_VARS:
            os.environ[var] = str(threads)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity mask; ``os.cpu_count()`` where there is none)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


_CpuSample = tuple[float, float, dict[int, tuple[int, int]]]  # (monotonic s, own CPU s, cpu -> (idle, total) ticks)


def _cpu_sample(cpus: set[int] | None) -> _CpuSample:
    """Now: the clock, this process's CPU seconds (all its threads and its reaped children) and, per
    CPU of ``cpus`` (all where None), its idle and total ticks from ``/proc/stat``."""
    counts = {}
    with open("/proc/stat", encoding="ascii") as handle:
        for line in handle:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and (cpus is None or int(name[3:]) in cpus):
                ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
                counts[int(name[3:])] = (ticks[3] + ticks[4], sum(ticks))
    own = os.times()
    return time.monotonic(), own.user + own.system + own.children_user + own.children_system, counts


def _busy_between(before: _CpuSample, after: _CpuSample) -> float:
    """Cores kept busy between two samples by work other than this process's (>= 0)."""
    busy = 0.0
    for cpu, (idle, total) in before[2].items():
        elapsed = after[2].get(cpu, (idle, total))[1] - total
        if elapsed > 0:
            busy += 1.0 - (after[2][cpu][0] - idle) / elapsed
    wall = after[0] - before[0]
    return max(0.0, busy - (after[1] - before[1]) / wall) if wall > 0 else busy


def _first_sample() -> _CpuSample | None:
    try:
        return _cpu_sample(set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None)
    except (OSError, ValueError, IndexError):
        return None


# taken when the process starts (the CLI imports this module first): the window up to a verb's first
# thread decision is then its own start-up (imports, argument parsing), which costs no waiting. Used
# once: a later window could hold the work of pools this process started but never reaps (a
# forkserver's DataLoader workers), which would count as other processes' work.
_start_sample: list[_CpuSample | None] = [_first_sample()]
_REUSE_S = 30.0  # an older start-up sample would average over too long a past


def busy_cores(cpus: set[int] | None = None, window_s: float = 0.1) -> float | None:
    """How many of ``cpus`` (default: this process's affinity mask) other work keeps busy right now.

    From ``/proc/stat``: the sum over those CPUs of the share of a window they were not idle, less
    this process's own CPU time in it (all its threads and reaped children), so the figure counts
    the others. The first call for the default CPUs, between ``window_s`` and 30 s after this module
    was imported, measures from the import, so a verb pays nothing to look; other calls wait
    ``window_s`` seconds between two samples. None where ``/proc/stat`` cannot be read.
    """
    start, _start_sample[0] = _start_sample[0], None
    try:
        if cpus is None and hasattr(os, "sched_getaffinity"):
            cpus = set(os.sched_getaffinity(0))
            if start is not None and set(start[2]) != cpus:  # the mask changed since the import
                start = None
        else:
            start = None
        if start is not None and window_s <= time.monotonic() - start[0] <= _REUSE_S:
            before = start
        else:
            before = _cpu_sample(cpus)
            time.sleep(window_s)
        after = _cpu_sample(cpus)
    except (OSError, ValueError, IndexError):
        return None
    return _busy_between(before, after)


def idle_cores(cores: int | None = None) -> int:
    """Of ``cores`` (default: :func:`available_cores`), those other processes leave idle now (>= 1).

    From :func:`busy_cores` (``/proc/stat`` since the last sample, less this process's own work); where that is not available, from the
    1-minute load average. The load average lags by a minute and counts this process's own recent
    work: in a run of several trainings in one process (``usfmae benchmark``), every training after
    the first would see the previous one's load and take a single thread on an idle machine.
    """
    cores = available_cores() if cores is None else cores
    busy = busy_cores()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):  # no load figure at all: assume an idle machine
            return cores
    return max(1, min(cores, round(cores - busy)))


def default_threads(workers: int, cores: int | None = None) -> int:
    """Threads per process so that threads x ``workers`` processes fit ``cores`` (at least 1).

    Args:
        workers: worker processes or threads running beside (or instead of) the main process's
            compute; 0 means the main process does all the work.
        cores: cores to fit (default: :func:`available_cores`).
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    cores = available_cores() if cores is None else cores
    return max(1, cores // max(workers, 1))


def configure_threads(threads: int | None, workers: int) -> int:
    """Set torch's intra-op and OpenCV's thread counts for this process and its later children.

    Args:
        threads: explicit count for both; None takes the ``--threads`` option if one was given
            (:func:`set_thread_option`), else the user's ``OMP_NUM_THREADS``, else the defaults:
            OpenCV ``default_threads(workers)``, torch ``default_threads(workers, idle_cores())``.
        workers: worker processes / threads the verb runs (its ``--workers`` / ``--num-workers``).

    Returns:
        The torch intra-op thread count now in effect.

    Raises:
        ValueError: ``threads`` is not positive or ``workers`` is negative.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be positive, got {threads}")
    chosen = next((t for t in (threads, _option[0], _USER_THREADS) if t is not None), None)
    if chosen is None:
        cv_count, torch_count = default_threads(workers), default_threads(workers, idle_cores())
    else:
        cv_count = torch_count = int(chosen)
    for names, count in ((_TORCH_VARS, torch_count), (_CV_VARS, cv_count)):
        for var in names:
            os.environ[var] = str(count)  # read by torch / OpenCV when imported later, here or in children
    # only libraries already loaded are told directly: a verb that never needs torch (ingest, pack)
    # must not pay for importing it (seconds and ~300 MB) just to size a pool it will not use
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(torch_count)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(cv_count)
    return torch_count


# ------------------------------------------------------------------------------- DataLoader workers
def worker_start_method(num_workers: int) -> str | None:
    """How DataLoader worker processes start: ``"forkserver"`` on Linux, None (torch's default)
    elsewhere or without workers; pass it as ``multiprocessing_context``.

    Not fork: a forked child inherits OpenCV's thread pool in whatever state the parent's threads
    left it and can deadlock on its first OpenCV call (seen when the parent had written or
    generated images first), and Python 3.12 warns that forking a process with threads (torch's)
    may deadlock. The dataset and collate function travel pickled, so they live in modules.
    """
    return "forkserver" if num_workers > 0 and sys.platform.startswith("linux") else None


def init_worker_threads(_worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: one torch and one OpenCV thread in each worker, which are the
    parallelism; threads inside each would only fight over the same cores."""
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


# ----------------------------------------------------------------------------------------- progress
_quiet_bars = [False]  # set by the CLI when stderr is not a terminal


def quiet_progress_bars(quiet: bool = True) -> None:
    """Hide every progress bar of this process (the CLI calls it when stderr is a log file or a pipe,
    where a bar's carriage-return redraws become thousands of lines)."""
    _quiet_bars[0] = quiet


def progress_bar(iterable: Any = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """A ``tqdm`` bar over ``iterable`` (or a manual one with ``total=``), shown when ``enabled`` and
    the output is interactive (see :func:`quiet_progress_bars`); every stage's bar is made here."""
    from tqdm import tqdm

    return tqdm(iterable, disable=not enabled or _quiet_bars[0], **kwargs)
