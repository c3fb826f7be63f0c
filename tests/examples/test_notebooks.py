"""The example notebooks run end to end (nbclient), so they cannot rot."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["01_embed_and_probe.ipynb", "02_finetune_and_attention.ipynb"])
def test_notebook_runs(name, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    src = Path(__file__).parents[2] / "src"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]))
    shutil.copy(EXAMPLES / name, tmp_path / name)
    book = nbformat.read(tmp_path / name, as_version=4)
    nbclient.NotebookClient(book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                            ).execute()
    errors = [o for cell in book.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors == []
    text = "".join(o.get("text", "") for cell in book.cells if cell.cell_type == "code" for o in cell.get("outputs", []))
    if name.startswith("01"):
        assert "linear probe accuracy" in text
    else:
        assert "macro-F1 on the held-out fold" in text and (tmp_path / "attention.png").stat().st_size > 1000
