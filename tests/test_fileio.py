"""Atomic writes and the rejects log."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from usfmae.fileio import (
    NAME_BYTES,
    RejectLog,
    append_jsonl,
    atomic_open,
    fit_name,
    read_jsonl,
    unique_names,
    write_json,
)


def test_atomic_open_replaces_only_on_success(tmp_path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no temp file left behind
    with atomic_open(target) as handle:
        handle.write("new")
    assert target.read_text() == "new"


def test_atomic_outputs_get_normal_permissions(tmp_path) -> None:
    write_json(tmp_path / "a.json", {"x": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o666 & ~umask


def test_jsonl_ignores_torn_last_line(tmp_path) -> None:
    path = tmp_path / "log.jsonl"
    append_jsonl(path, {"step": 1})
    append_jsonl(path, {"step": 2})
    with open(path, "a") as handle:
        handle.write('{"step": 3')  # a writer killed mid-line
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]


def test_reject_log_records_file_and_reason(tmp_path, caplog) -> None:
    rejects = RejectLog(tmp_path / "rejects.jsonl")
    rejects.reject("a.png", "truncated PNG", stage="ingest")
    assert rejects.count == 1
    assert rejects.read() == [{"file": "a.png", "reason": "truncated PNG", "stage": "ingest"}]
    assert "skipped a.png: truncated PNG" in caplog.text


@pytest.mark.parametrize("file", ["corpus/a.png", Path("corpus/a.png")])
def test_reject_log_names_the_file_once(tmp_path, caplog, file) -> None:
    """DataError messages start with the file's name; the skip line and the row name it once."""
    rejects = RejectLog(tmp_path / "rejects.jsonl")
    rejects.reject(file, "corpus/a.png: empty file")
    rejects.reject(file, "header of corpus/a.png: bad")  # the name elsewhere in a reason stays
    assert [r["reason"] for r in rejects.read()] == ["empty file", "header of corpus/a.png: bad"]
    assert "skipped corpus/a.png: empty file" in caplog.text


def test_ensure_output_dir_reports_a_file_in_the_way(tmp_path) -> None:
    from usfmae.errors import DataError
    from usfmae.fileio import ensure_output_dir

    assert ensure_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="exists and is not a folder"):
        ensure_output_dir(tmp_path / "file")
    with pytest.raises(DataError, match="cannot create the output folder"):
        ensure_output_dir(tmp_path / "file" / "sub")


def test_append_after_a_torn_line_keeps_every_later_record(tmp_path) -> None:
    path = tmp_path / "log.jsonl"
    append_jsonl(path, {"step": 1})
    with open(path, "a") as handle:
        handle.write('{"step": 2, "pa')  # killed mid-line (or the disk filled up)
    append_jsonl(path, {"step": 3})
    append_jsonl(path, {"step": 4})
    assert read_jsonl(path) == [{"step": 1}, {"step": 3}, {"step": 4}]
    with open(path, "ab") as handle:
        handle.write(b"\xff\xfe garbage\n")  # not even UTF-8
    append_jsonl(path, {"step": 5})
    assert [r["step"] for r in read_jsonl(path)] == [1, 3, 4, 5]


HOLDER = """
import sys
from usfmae.fileio import ensure_output_dir
ensure_output_dir(sys.argv[1])
print("locked", flush=True)
sys.stdin.read()  # hold the lock until the test closes our stdin
"""


@pytest.fixture()
def held_folder(tmp_path):
    """An output folder locked by another process (which exits when the test ends)."""
    import subprocess
    import sys

    folder = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout.readline().strip() == "locked"
    yield folder, child.pid
    child.stdin.close()
    child.wait(timeout=60)


def test_second_process_on_one_output_folder_is_refused(held_folder) -> None:
    from usfmae.errors import DataError
    from usfmae.fileio import ensure_output_dir

    folder, pid = held_folder
    with pytest.raises(DataError, match=rf"in use by another usfmae run \(pid {pid} on "):
        ensure_output_dir(folder)


def test_second_clean_into_a_held_folder_stops_in_one_line(held_folder, tmp_path, capsys) -> None:
    import cv2
    import numpy as np

    from usfmae.cli import main

    folder, pid = held_folder
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), np.zeros((40, 40), np.uint8))
    assert main(["clean", str(tmp_path / "in"), "--out", str(folder), "--no-progress", "--no-ocr"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"in use by another usfmae run (pid {pid} on " in err
    assert not (folder / "images").exists()  # nothing of ours mixed into the holder's folder


def test_lock_is_reentrant_and_released(tmp_path) -> None:
    from usfmae.fileio import ensure_output_dir, unlock_output_dir

    ensure_output_dir(tmp_path / "o")
    ensure_output_dir(tmp_path / "o")  # the same process again: fine
    unlock_output_dir(tmp_path / "o")
    unlock_output_dir(tmp_path / "o")


def test_reserve_space_allocates(tmp_path) -> None:
    from usfmae.fileio import reserve_space

    path = tmp_path / "sparse.bin"
    with open(path, "wb") as handle:
        handle.truncate(1 << 20)
    reserve_space(path)
    assert os.stat(path).st_blocks * 512 >= 1 << 20


@pytest.mark.parametrize("name", ["x" * 250, "\u00e9" * 150, "img_" + "\u8d85" * 90])
def test_fit_name_keeps_ids_under_the_name_limit_distinct_and_stable(tmp_path, name) -> None:
    fitted = fit_name(name)
    assert len(fitted.encode()) <= NAME_BYTES and fitted == fit_name(name)  # stable: resume finds it
    assert fitted != fit_name(name[:-1] + "y") and fitted.startswith(name[:20])
    (tmp_path / f".{fitted}_00000.png.abcdefgh.png").write_bytes(b"")  # what atomic_path adds still fits
    assert fit_name("short.png") == "short.png"


def _process_table() -> dict[int, tuple[int, str]]:
    """Every living (not zombie) process: ``{pid: (parent pid, command line)}``, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat_line = handle.read()
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended while we listed
            continue
        state, ppid = stat_line[stat_line.rindex(b")") + 2:].split()[:2]  # after "pid (name) "
        if state != b"Z":
            table[int(entry)] = (int(ppid), cmdline)
    return table


def _descendants(pid: int, table: dict[int, tuple[int, str]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found, todo = [], list(children.get(pid, []))
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], []))
    return found


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs Linux (PR_SET_PDEATHSIG, pidfd)")
@pytest.mark.parametrize("verb", ["ingest", "clean"])
def test_workers_end_with_a_parent_killed_with_sigkill(verb, tmp_path) -> None:
    """kill -9 of a running `usfmae ingest|clean --workers 2` takes its pool's workers with it."""
    import select
    import signal
    import subprocess
    import sys
    import time

    import cv2
    import numpy as np

    # 400 large noise frames (hard links of one file: instant to make) keep two workers busy far
    # longer than the test waits for them.
    source = tmp_path / "in" / "S"
    source.mkdir(parents=True)
    cv2.imwrite(str(source / "f000.png"), np.random.default_rng(0).integers(0, 256, (768, 1024), np.uint8))
    for i in range(1, 400):
        os.link(source / "f000.png", source / f"f{i:03d}.png")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")
    parent = subprocess.Popen([sys.executable, "-m", "usfmae.cli", verb, str(tmp_path / "in"), "--out",
                               str(tmp_path / "out"), "--workers", "2", "--no-progress",
                               *(["--no-ocr"] if verb == "clean" else [])],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    pidfds: dict[int, int] = {}
    try:
        deadline, workers = time.monotonic() + 120, []
        while len(workers) < 2:
            table = _process_table()
            tree = _descendants(parent.pid, table)
            # Pool workers: everything below the verb but multiprocessing's helpers (the resource
            # tracker; ingest's forkserver, whose forks the workers are). The helpers must end too.
            workers = [p for p in tree if "resource_tracker" not in table[p][1]
                       and not ("forkserver" in table[p][1] and table[p][0] == parent.pid)]
            assert time.monotonic() < deadline, f"{verb} --workers 2 showed no two workers in 120 s"
            try:  # the wait between scans, ended early if the verb exits
                code = parent.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(f"{verb} ended (exit {code}) before two workers were seen")
        for pid in tree:
            try:
                pidfds[pid] = os.pidfd_open(pid)  # readable once that process has ended
            except ProcessLookupError:
                pass
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=60)
    try:
        deadline, alive = time.monotonic() + 30, dict(pidfds)
        while alive and time.monotonic() < deadline:
            ready, _, _ = select.select(list(alive.values()), [], [], deadline - time.monotonic())
            alive = {p: fd for p, fd in alive.items() if fd not in ready}
        table = _process_table()
        assert [table[p][1] for p in alive if p in table] == [], "still running 30 s after kill -9 of the parent"
    finally:
        for fd in pidfds.values():
            os.close(fd)


@pytest.mark.parametrize("names, keys, expected", [
    (["S/a_png", "S/b", "S/a_png"], ["S/a.png", "S/b", "S/a_png"], ["S/a_png~3b87c615", "S/b", "S/a_png~df3a4f74"]),
    (["a", "b"], ["a", "b"], ["a", "b"]),  # nothing shared: unchanged
    # a tag that meets a plain name: both take the full digest, the other tag stays
    (["a~" + hashlib.sha1(b"k2").hexdigest()[:8], "a", "a"], ["k1", "k2", "k3"],
     ["a~" + hashlib.sha1(b"k2").hexdigest()[:8] + "~" + hashlib.sha1(b"k1").hexdigest(),
      "a~" + hashlib.sha1(b"k2").hexdigest(), "a~" + hashlib.sha1(b"k3").hexdigest()[:8]]),
])
def test_unique_names_tags_every_claimant_of_a_shared_name(names, keys, expected) -> None:
    assert unique_names(names, keys) == expected
    assert unique_names(names[::-1], keys[::-1]) == expected[::-1]  # the order does not matter


def test_unique_names_keeps_tagged_long_names_under_the_limit() -> None:
    long = "n" * NAME_BYTES
    tagged = unique_names(["d/" + long, "d/" + long], ["d/x", "d/y"])
    assert len(set(tagged)) == 2 and all(t.startswith("d/") and len(t) == 2 + NAME_BYTES for t in tagged)


@pytest.fixture
def manifest_tree(tmp_path):
    """base/ with frames, a link to a frame, a link out of base and a linked folder out of base."""
    base, outside = tmp_path / "base", tmp_path / "outside"
    (base / "frames" / "sub").mkdir(parents=True)
    outside.mkdir()
    for name in ("frames/a.png", "frames/sub/b.png"):
        (base / name).write_bytes(b"x")
    (outside / "secret.png").write_bytes(b"x")
    (base / "frames" / "in_link.png").symlink_to(base / "frames" / "a.png")
    (base / "frames" / "out_link.png").symlink_to(outside / "secret.png")
    (base / "linked_out").symlink_to(outside, target_is_directory=True)
    (base / "linked_in").symlink_to(base / "frames", target_is_directory=True)
    return base


@pytest.mark.parametrize("relative, inside", [
    ("frames/a.png", True), ("frames/sub/b.png", True), ("frames/./sub/b.png", True),
    ("frames/sub/../a.png", True), ("frames/in_link.png", True), ("linked_in/a.png", True),
    ("frames/missing.png", True),                      # not there: the reader rejects it, not the check
    ("../outside/secret.png", False), ("frames/../../outside/secret.png", False),
    ("frames/out_link.png", False), ("linked_out/secret.png", False), ("/etc/passwd", False),
    ("frames/..", True), ("..", False),
])
def test_paths_under_refuses_what_leaves_the_folder_as_resolve_does(manifest_tree, relative, inside):
    from usfmae.errors import DataError
    from usfmae.fileio import PathsUnder

    expected = (manifest_tree / relative).resolve().is_relative_to(manifest_tree.resolve())  # the rule, spelled slowly
    assert expected == inside
    under = PathsUnder(manifest_tree)
    for _ in range(2):  # the second call answers from the folder cache
        if inside:
            assert under(relative) == str(manifest_tree / relative)
        else:
            with pytest.raises(DataError, match="leaves the manifest's folder"):
                under(relative)
    assert PathsUnder(manifest_tree, allow_outside=True)(relative) == str(manifest_tree / relative)
