"""Nothing to do is a user error: clean, pack and embed on inputs without images exit 2 with one line."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usfmae.cli import main
from usfmae.shards.store import ShardWriter


@pytest.mark.parametrize("verb, source, message", [
    ("clean", "empty", "no images to clean"),
    ("clean", "manifest", "no images to clean"),
    ("pack", "empty", "no images to pack"),
    ("pack", "manifest", "no images to pack"),
    ("embed", "empty", "no images found"),
    ("embed", "shards", "no images to embed"),
])
def test_no_images_is_one_line_and_exit_2(tmp_path, capsys, verb: str, source: str, message: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here\n")
    pq.write_table(pa.table({"id": ["a"], "path": ["a.png"], "status": ["corrupt"]}), tmp_path / "manifest.parquet")
    with ShardWriter(tmp_path / "shards", (64, 64, 1), 4):
        pass
    inputs = {"empty": tmp_path / "empty", "manifest": tmp_path / "manifest.parquet", "shards": tmp_path / "shards"}
    out = tmp_path / ("out.parquet" if verb == "embed" else "out")
    extra = ["--model", "mae_vit_micro_patch8_64", "--device", "cpu"] if verb == "embed" else ["--no-progress"]
    assert main([verb, str(inputs[source]), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
