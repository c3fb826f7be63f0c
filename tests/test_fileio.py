"""Atomic writes and the rejects log."""

from __future__ import annotations

import os
import stat

import pytest

from usfmae.fileio import NAME_BYTES, RejectLog, append_jsonl, atomic_open, fit_name, read_jsonl, write_json


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
