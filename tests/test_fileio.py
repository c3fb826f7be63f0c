"""Atomic writes and the rejects log."""

from __future__ import annotations

import os
import stat

import pytest

from usfmae.fileio import RejectLog, append_jsonl, atomic_open, read_jsonl, write_json


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
