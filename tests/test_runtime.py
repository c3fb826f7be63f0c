"""usfmae.runtime: threads x workers fit the cores; --threads, OMP_NUM_THREADS and the defaults."""

from __future__ import annotations

import os

import cv2
import pytest
import torch

from usfmae import cli, runtime


@pytest.fixture
def restore_threads(monkeypatch):
    """Each test may change the process's thread settings; put the suite's back afterwards."""
    for var in runtime._THREAD_VARS:
        monkeypatch.setenv(var, os.environ.get(var, "1"))
    monkeypatch.setattr(runtime, "_USER_THREADS", None)
    torch_before, cv_before, option_before = torch.get_num_threads(), cv2.getNumThreads(), runtime._option[0]
    yield
    runtime._option[0] = option_before
    torch.set_num_threads(torch_before)
    cv2.setNumThreads(cv_before)


@pytest.mark.parametrize("workers, cores, expected", [
    (0, 2, 2), (1, 2, 2), (2, 2, 1), (3, 2, 1), (0, 1, 1), (2, 16, 8), (3, 16, 5), (14, 16, 1), (0, 16, 16),
])
def test_threads_times_workers_fit_the_cores(workers, cores, expected):
    assert runtime.default_threads(workers, cores) == expected
    assert expected * max(workers, 1) <= cores or expected == 1


def test_cores_are_the_affinity_mask_not_the_machine():
    assert runtime.available_cores() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("cores, busy, idle", [(2, 0.3, 2), (2, 0.7, 1), (2, 7.2, 1), (16, 3.4, 13), (4, 0.0, 4)])
def test_idle_cores_discount_the_cores_other_processes_keep_busy(monkeypatch, cores, busy, idle):
    monkeypatch.setattr(runtime, "busy_cores", lambda: busy)
    assert runtime.idle_cores(cores) == idle


@pytest.mark.parametrize("load, idle", [(0.3, 2), (7.2, 1)])
def test_without_proc_stat_the_load_average_decides(monkeypatch, load, idle):
    monkeypatch.setattr(runtime, "busy_cores", lambda: None)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert runtime.idle_cores(2) == idle


def test_busy_cores_sees_a_spinning_process_and_not_its_own_past_work() -> None:
    import subprocess
    import sys

    cpu = min(os.sched_getaffinity(0))
    quiet = runtime.busy_cores({cpu}, window_s=0.3)
    spin = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
    try:
        # the spinner needs a moment to start; poll (bounded) instead of sleeping a fixed time
        busy = max(runtime.busy_cores({cpu}, window_s=0.3) for _ in range(3))
    finally:
        spin.kill()
        spin.wait()
    assert 0.0 <= quiet <= 1.0 and busy >= 0.9  # one CPU: fully taken while the spinner runs


def test_busy_cores_leaves_out_this_process_own_work() -> None:
    cpu = min(os.sched_getaffinity(0))
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})  # this thread computes on that CPU only
    try:
        before = runtime._cpu_sample({cpu})
        end = runtime.time.monotonic() + 0.4
        while runtime.time.monotonic() < end:  # our own busy loop: the CPU is fully taken, by us
            pass
        after = runtime._cpu_sample({cpu})
    finally:
        os.sched_setaffinity(0, mask)
    taken = sum(1 - (after[2][c][0] - before[2][c][0]) / (after[2][c][1] - before[2][c][1]) for c in before[2])
    assert taken >= 0.8 and after[1] - before[1] >= 0.3  # the CPU was busy, and the busy time was ours
    assert runtime._busy_between(before, after) <= 0.5  # so it is not "other work"


@pytest.mark.parametrize("age_s, waits", [(2.0, False), (0.02, True), (60.0, True)])
def test_only_the_first_look_measures_from_the_import_and_without_waiting(monkeypatch, age_s, waits):
    waited = []
    monkeypatch.setattr(runtime.time, "sleep", waited.append)
    clock, own, counts = runtime._cpu_sample(set(os.sched_getaffinity(0)))
    monkeypatch.setattr(runtime, "_start_sample", [(clock - age_s, own, counts)])
    assert runtime.busy_cores() >= 0.0
    assert waited == ([0.1] if waits else [])  # a verb started seconds ago pays no 0.1 s wait
    # the start-up sample is used once: later windows could hold unreaped workers' work
    assert runtime._start_sample == [None]
    assert runtime.busy_cores() >= 0.0 and waited[-1:] == [0.1]


@pytest.mark.parametrize("workers, load, torch_threads, cv_threads", [
    (0, 0.0, 4, 4),   # idle machine: every core for both
    (0, 2.2, 2, 4),   # two cores busy elsewhere: torch's OpenMP keeps off them, OpenCV's pool need not
    (2, 0.0, 2, 2),   # two worker processes share the cores
    (2, 3.5, 1, 2),
])
def test_default_counts_on_a_busy_machine(restore_threads, monkeypatch, workers, load, torch_threads, cv_threads):
    monkeypatch.setattr(runtime, "available_cores", lambda: 4)
    monkeypatch.setattr(runtime, "busy_cores", lambda: load)
    runtime._option[0] = None
    assert runtime.configure_threads(None, workers) == torch_threads
    assert (torch.get_num_threads(), cv2.getNumThreads()) == (torch_threads, cv_threads)
    assert (os.environ["OMP_NUM_THREADS"], os.environ["OPENCV_FOR_THREADS_NUM"]) == (str(torch_threads), str(cv_threads))


@pytest.mark.parametrize("bad", [0, -2])
def test_bad_counts_are_refused(bad, restore_threads):
    with pytest.raises(ValueError, match="positive"):
        runtime.configure_threads(bad, 0)
    with pytest.raises(ValueError, match="positive"):
        runtime.set_thread_option(bad)
    with pytest.raises(ValueError, match=">= 0"):
        runtime.default_threads(bad - 1)


@pytest.mark.parametrize("explicit, option, user, expected", [
    (3, 2, 4, 3),            # the caller's count wins
    (None, 2, 4, 2),         # then --threads
    (None, None, 4, 4),      # then the user's OMP_NUM_THREADS
    (None, None, None, 1),   # then cores // workers (2 workers on 2 cores)
])
def test_precedence_and_what_it_sets(restore_threads, monkeypatch, explicit, option, user, expected):
    monkeypatch.setattr(runtime, "available_cores", lambda: 2)
    monkeypatch.setattr(runtime, "busy_cores", lambda: 0.0)
    monkeypatch.setattr(runtime, "_USER_THREADS", user)
    runtime._option[0] = option
    assert runtime.configure_threads(explicit, workers=2) == expected
    assert torch.get_num_threads() == expected and cv2.getNumThreads() == expected
    # worker processes started from here on inherit the count
    assert {os.environ[v] for v in runtime._THREAD_VARS} == {str(expected)}


@pytest.mark.parametrize("argv", [["--threads", "3", "sources", "list"], ["sources", "--threads", "3", "list"]])
def test_cli_threads_before_or_after_the_verb(restore_threads, capsys, argv):
    assert cli.main(argv) == 0
    assert runtime._option[0] == 3 and os.environ["OMP_NUM_THREADS"] == "3"
    assert "105US" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["0", "two"])
def test_cli_bad_threads_is_one_line_and_exit_2(restore_threads, capsys, value):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--threads", value, "sources", "list"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1 and "--threads" in err


def test_a_verb_sizes_its_threads_to_its_workers(restore_threads, monkeypatch, phantom_dataset, tmp_path):
    monkeypatch.setattr(runtime, "available_cores", lambda: 4)
    monkeypatch.setattr(runtime, "busy_cores", lambda: 0.0)
    runtime._option[0] = None
    torch.set_num_threads(1)
    assert cli.main(["pack", str(phantom_dataset / "clean"), "--out", str(tmp_path / "shards"), "--size", "32",
                     "--workers", "2"]) == 0
    assert torch.get_num_threads() == 2  # 4 cores / 2 decode threads


@pytest.fixture
def restore_bars():
    yield
    runtime.quiet_progress_bars(False)


@pytest.mark.parametrize("verb, extra", [("pack", ["--size", "32"]), ("ingest", ["--workers", "1"])])
@pytest.mark.parametrize("tty", [True, False])
def test_progress_bars_show_on_a_terminal_only(restore_bars, monkeypatch, phantom_dataset, tmp_path, capsys, tty,
                                               verb, extra):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    assert cli.main([verb, str(phantom_dataset / "clean"), "--out", str(tmp_path / "out"), *extra]) == 0
    err = capsys.readouterr().err
    assert (f"{verb}: 100%" in err) == tty  # a log file or a pipe gets no carriage-return redraws
    assert runtime.progress_bar(range(3), enabled=True).disable is not tty
    assert runtime.progress_bar(range(3), enabled=False).disable
