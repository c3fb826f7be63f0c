"""OpenUS-46 registry, downstream sets, and `usfmae sources list|check`."""

from __future__ import annotations

import json

import pytest

from usfmae.cli import main
from usfmae.curate.sources import OPENUS46_TOTAL, check_root, downstream, find_source, folder_key, openus46
from usfmae.errors import DataError


def test_openus46_has_46_sources_summing_to_paper_total():
    sources = openus46()
    assert len(sources) == 46 and len({s.name for s in sources}) == 46
    assert sum(s.images for s in sources) == OPENUS46_TOTAL == 374_192
    assert {s.kind for s in sources} == {"image", "video", "volume"}
    assert find_source("echonet-dynamic").kind == "video" and find_source("Segthy").kind == "volume"
    assert sum(not s.in_us43d for s in sources) == 3


def test_downstream_sets_are_flagged_as_listed_in_openus46():
    sets = downstream()
    assert [(s.name, s.images) for s in sets] == [("BUS-BRA", 1875), ("MMOTU-2D", 1469), ("GIST514-DB", 514)]
    assert all(s.in_openus46 and s.role == "downstream" and "OpenUS-46" in s.note for s in sets)
    pretrain_copies = [s for s in openus46() if s.name in {"BUS-BRA", "MMOTU-2D", "GIST514-DB"}]
    assert len(pretrain_copies) == 3 and all("leakage" in s.note for s in pretrain_copies)


@pytest.mark.parametrize("a, b", [("BUS (Dataset B)", "bus_dataset_b"), ("Thyroid US Cineclip", "thyroid-us-cineclip"),
                                  ("CAMUS_public", "camus_PUBLIC")])
def test_folder_names_match_case_insensitively(a, b):
    assert folder_key(a) == folder_key(b) and find_source(b).name == a


def test_check_root_counts_files(tmp_path):
    (tmp_path / "busi").mkdir()  # not a source
    (tmp_path / "bus-bra" / "Images").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "bus-bra" / "Images" / f"{i}.png").write_bytes(b"x")
    (tmp_path / "bus-bra" / ".hidden").write_bytes(b"x")
    (tmp_path / "ECHONET-DYNAMIC").mkdir()
    (tmp_path / "ECHONET-DYNAMIC" / "a.avi").write_bytes(b"x")
    rows = {r.name: r for r in check_root(tmp_path)}
    assert (rows["BUS-BRA"].status, rows["BUS-BRA"].files, rows["BUS-BRA"].folder) == ("present", 3, "bus-bra")
    assert (rows["EchoNet-Dynamic"].status, rows["EchoNet-Dynamic"].files) == ("present", 1)
    assert rows["busi"].status == "unknown" and rows["105US"].status == "missing"
    assert len(rows) == 47
    with pytest.raises(DataError, match="folder not found"):
        check_root(tmp_path / "nope")


def test_cli_list_and_check(tmp_path, capsys):
    assert main(["sources", "list"]) == 0
    out = capsys.readouterr().out
    assert "46 sources, 374,192 images" in out and "BUS-BRA, MMOTU-2D, GIST514-DB are listed" in out
    assert main(["sources", "list", "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert sum(r["images"] for r in records if r["role"] == "pretrain") == 374_192
    (tmp_path / "HC").mkdir()
    (tmp_path / "HC" / "a.png").write_bytes(b"x")
    assert main(["sources", "check", str(tmp_path)]) == 0
    assert "1 of 46 sources present (1 files)" in capsys.readouterr().out
    assert main(["sources", "check"]) == 2
    assert "needs a folder" in capsys.readouterr().err
