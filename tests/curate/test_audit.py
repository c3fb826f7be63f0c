"""Leakage audit (planted exact and near overlaps, exclusion round trip) and the hashing it relies on."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
from test_ingest import texture

from usfmae.cli import main
from usfmae.curate.audit import find_overlap, hash_folder, load_hashes, run_audit
from usfmae.curate.hashing import (
    GroupedHammingIndex,
    HammingIndex,
    hamming,
    hamming_matrix,
    phash,
    phash_from_int64,
    phash_to_int64,
)
from usfmae.curate.ingest import IngestConfig, run_ingest
from usfmae.errors import DataError


@pytest.fixture()
def corpus(tmp_path):
    """Pretraining root (6 images in 2 sources) + an evaluation folder with planted overlaps."""
    pre = tmp_path / "pre"
    for source, seeds in (("P1", (10, 11, 12)), ("P2", (13, 14, 15))):
        (pre / source).mkdir(parents=True)
        for seed in seeds:
            cv2.imwrite(str(pre / source / f"im{seed}.png"), texture(seed, 64))
    ev = tmp_path / "eval" / "BUS-BRA"
    ev.mkdir(parents=True)
    cv2.imwrite(str(ev / "exact.png"), texture(11, 64))  # same pixels as P1/im11
    resized = cv2.resize(texture(14, 64), (48, 48), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(ev / "resized.png"), resized)  # near copy of P2/im14
    cv2.imwrite(str(ev / "unrelated.png"), texture(99, 64))
    run_ingest(IngestConfig(root=str(pre), out=str(tmp_path / "corpus"), workers=1), progress=False)
    return tmp_path


def test_audit_finds_planted_overlaps(corpus):
    summary = run_audit(corpus / "corpus" / "manifest.parquet", corpus / "eval", corpus / "audit")
    pairs = pd.read_csv(corpus / "audit" / "pairs.csv")
    assert pairs[["eval_id", "pretrain_id", "match"]].values.tolist() == [
        ["BUS-BRA/exact_png_00000", "P1/im11_png_00000", "exact"],
        ["BUS-BRA/resized_png_00000", "P2/im14_png_00000", "near"],
    ]
    assert pairs["distance"].tolist()[0] == 0 and pairs["distance"].tolist()[1] <= 6
    (source,) = summary["per_source"]
    assert (source["eval_frames"], source["exact"], source["near_only"], source["any"]) == (3, 1, 1, 2)
    assert source["by_pretrain_source"] == {"P1": 1, "P2": 1}
    assert "| BUS-BRA | 3 | 1 | 1 | 2 | 66.67% |" in (corpus / "audit" / "summary.md").read_text()
    assert pd.read_parquet(corpus / "audit" / "pairs.parquet").shape == (2, 8)


def test_exclude_round_trip_removes_overlap(corpus):
    run_audit(corpus / "corpus", corpus / "eval", corpus / "audit")
    run_ingest(IngestConfig(root=str(corpus / "pre"), out=str(corpus / "corpus"), workers=1,
                            exclude=str(corpus / "audit" / "pairs.csv")), progress=False)
    m = pd.read_parquet(corpus / "corpus" / "manifest.parquet")
    assert sorted(m.loc[m["status"] == "excluded", "id"]) == ["P1/im11_png_00000", "P2/im14_png_00000"]
    summary = run_audit(corpus / "corpus", corpus / "eval", corpus / "audit2")
    assert summary["pairs"] == 0 and summary["eval_frames"] == 3


def test_eval_manifest_equals_eval_folder(corpus):
    run_ingest(IngestConfig(root=str(corpus / "eval"), out=str(corpus / "eval_corpus"), workers=1), progress=False)
    pre = pd.read_parquet(corpus / "corpus" / "manifest.parquet")
    pre = pre[pre["status"] == "ok"]
    from_folder = find_overlap(pre, hash_folder(corpus / "eval"))
    from_manifest = find_overlap(pre, load_hashes(corpus / "eval_corpus" / "manifest.parquet"))
    pd.testing.assert_frame_equal(from_folder, from_manifest)


def test_audit_cli_and_errors(corpus, capsys):
    code = main(["audit", "--pretrain", str(corpus / "corpus"), "--eval", str(corpus / "eval"),
                 "--out", str(corpus / "cli"), "--threshold", "0"])
    printed = capsys.readouterr().out
    assert code == 0 and printed.startswith("2 of 3 evaluation frames overlap")
    assert "BUS-BRA: 2/3 (1 exact, 1 near only)" in printed  # the resized copy keeps its pHash exactly
    assert main(["audit", "--pretrain", str(corpus / "nope.parquet"), "--eval", str(corpus / "eval"),
                 "--out", str(corpus / "cli")]) == 2
    assert "no such manifest or folder" in capsys.readouterr().err
    with pytest.raises(DataError, match="no evaluation frames"):
        (corpus / "empty_eval").mkdir()
        run_audit(corpus / "corpus", corpus / "empty_eval", corpus / "x")


def test_phash_is_stable_under_resize_and_differs_between_images():
    a, b = texture(1, 128), texture(2, 128)
    small = cv2.resize(a, (64, 64), interpolation=cv2.INTER_AREA)
    assert hamming(phash(a), phash(small)) <= 4
    assert hamming(phash(a), phash(b)) > 16
    assert phash(np.dstack([a, a, a])) == phash(a)


def test_int64_round_trip_and_hamming_matrix():
    values = [0, 1, (1 << 63) + 5, (1 << 64) - 1]
    assert [phash_from_int64(phash_to_int64(v)) for v in values] == values
    arr = np.array(values, np.uint64)
    expected = [[hamming(x, y) for y in values] for x in values]
    assert hamming_matrix(arr, arr).tolist() == expected


def test_grouped_index_promotion_keeps_answers():
    rng = np.random.default_rng(5)
    codes = [int(c) for c in rng.integers(0, 2**62, 150, dtype=np.uint64)]
    small, big = GroupedHammingIndex(6, promote_at=10**6), GroupedHammingIndex(6, promote_at=8)
    for i, code in enumerate(codes):
        for index in (small, big):
            index.add(i % 3, code, i)
    probes = [codes[i] ^ (1 << (i % 64)) ^ (1 << ((3 * i) % 64)) for i in range(150)]
    for i, probe in enumerate(probes):
        assert small.nearest(i % 3, probe) == big.nearest(i % 3, probe)
    assert small.nearest(0, codes[0] ^ 0b111) == (0, 3) and small.nearest(7, codes[0]) is None


@pytest.mark.parametrize("threshold", [0, 3, 6, 10])
def test_hamming_index_matches_brute_force(threshold):
    rng = np.random.default_rng(threshold)
    base = rng.integers(0, 2**63, 200, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 200).astype(np.uint64)
    # plant neighbours: flip 0..12 random bits of some stored codes
    queries = []
    for i in range(100):
        code = int(base[i % 200])
        for bit in rng.choice(64, size=int(rng.integers(0, 13)), replace=False):
            code ^= 1 << int(bit)
        queries.append(code)
    index = HammingIndex(threshold)
    for slot, code in enumerate(base.tolist()):
        index.add(int(code), slot)
    dist = hamming_matrix(np.array(queries, np.uint64), base)
    for q, code in enumerate(queries):
        expected = [(int(s), int(dist[q, s])) for s in np.flatnonzero(dist[q] <= threshold)]
        assert index.query(code) == expected


def test_unreadable_links_and_non_utf8_names_are_rejects_not_the_end_of_the_audit(tmp_path, capsys):
    """Both once ended `usfmae audit` with exit 2 ("No such file or directory") or would have
    crashed writing pairs.csv; ingest already rejected them."""
    import os

    from usfmae.fileio import RejectLog

    folder = tmp_path / "eval" / "set"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "good.png"), texture(0))
    (folder / "dangling.png").symlink_to(folder / "gone.png")
    with open(os.fsencode(folder) + b"/\xff\xfe.png", "wb") as handle:
        handle.write((folder / "good.png").read_bytes())
    rejects = RejectLog(tmp_path / "rejects.jsonl")
    table = hash_folder(tmp_path / "eval", rejects=rejects)
    assert table["path"].tolist() == ["set/good.png"]
    assert sorted(r["reason"] for r in rejects.read()) == [
        "cannot read file (No such file or directory)", "file name is not valid UTF-8 (rename the file)"]
    assert main(["audit", "--pretrain", str(tmp_path / "eval"), "--eval", str(tmp_path / "eval"),
                 "--out", str(tmp_path / "audit")]) == 0
    assert "1 of 1 evaluation frames overlap" in capsys.readouterr().out
