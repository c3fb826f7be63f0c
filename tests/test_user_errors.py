"""Every user error is one line on stderr and exit code 2, never a traceback: a table over every verb."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from usfmae.cli import VERBS, main


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Bad inputs a user might pass, made once for the module."""
    root = tmp_path_factory.mktemp("user_errors")
    (root / "images").mkdir()
    cv2.imwrite(str(root / "images" / "a.png"), np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8))
    (root / "junk.pt").write_bytes(np.random.default_rng(1).bytes(4096))
    (root / "empty.pt").write_bytes(b"")
    (root / "notes.txt").write_text("not a checkpoint\n")
    (root / "bad_type.yaml").write_text("size: big\nworkers: two\n")
    (root / "bad_type_pretrain.yaml").write_text("epochs: ten\n")
    (root / "non_utf8.yaml").write_bytes(b"size: \xff\xfe\n")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "broken.yaml").write_text("size: [1, 2\n")
    (root / "empty_dir").mkdir()
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "corpus").mkdir()
    pq.write_table(pa.table({"id": ["x"], "path": ["../images/a.png"]}), root / "corpus" / "traversal.parquet")
    return {"root": str(root), "images": str(root / "images"), "junk": str(root / "junk.pt"),
            "empty": str(root / "empty.pt"), "text": str(root / "notes.txt"), "bad_type": str(root / "bad_type.yaml"),
            "bad_type_pretrain": str(root / "bad_type_pretrain.yaml"), "non_utf8": str(root / "non_utf8.yaml"),
            "list_yaml": str(root / "list.yaml"), "broken_yaml": str(root / "broken.yaml"),
            "missing": str(root / "does_not_exist"), "empty_dir": str(root / "empty_dir"),
            "devnull": "/dev/null/out", "out": str(root / "out"),
            "traversal": str(root / "corpus" / "traversal.parquet")}


CASES = [
    # argument types and ranges
    ("clean", "{images} --out {out}/c1 --size big"),
    ("clean", "{images} --out {out}/c2 --workers 0"),
    ("ingest", "{images} --out {out}/i1 --fps fast"),
    ("pack", "{images} --out {out}/p1 --size -3"),
    ("phantom", "--n -1 --out {out}/ph1"),
    ("embed", "{images} --out {out}/e1.parquet --model vit_tiny_patch16_224 --batch-size 0"),
    ("reconstruct", "{images} --weights {junk} --out {out}/r.png --max-images zero"),
    ("reconstruct", "{images} --weights {junk} --out {out}/r_folder"),  # a folder, as other verbs' --out
    # missing inputs
    ("clean", "{missing} --out {out}/c3"),
    ("ingest", "{missing} --out {out}/i2"),
    ("pack", "{missing} --out {out}/p2"),
    ("merge", "{missing} --out {out}/m1"),
    ("merge", "{images} {empty_dir} --out {out}/m2"),
    ("ingest", "{images} --out {out}/i4 --shard 2/2"),
    ("audit", "--pretrain {missing} --eval {missing} --out {out}/a1"),
    ("report", "{missing}"),
    ("sources", "check {missing}"),
    ("finetune", "--data folder:{missing} --out {out}/f1"),
    ("benchmark", "--suite no_such_suite --data-root {missing} --out {out}/b1"),
    ("embed", "{missing} --out {out}/e2.parquet --model vit_tiny_patch16_224"),
    ("export", "--weights {missing} --out {out}/x1"),
    # junk, empty and non-checkpoint weights
    ("export", "--weights {junk} --out {out}/x2"),
    ("export", "--weights {empty} --out {out}/x3"),
    ("embed", "{images} --weights {text} --out {out}/e3.parquet"),
    ("embed", "{images} --weights {junk} --out {out}/e4.parquet"),
    ("reconstruct", "{images} --weights {empty} --out {out}/r2.png"),
    ("pretrain", "--data phantom:4 --out {out}/pt1 --init-from {empty} --steps 1"),
    ("pretrain", "--data phantom:4 --out {out}/pt2 --init-from {text} --steps 1"),
    ("finetune", "--data phantom:8 --weights {junk} --out {out}/f2"),
    # YAML presets: wrong value type, not UTF-8, not a mapping, broken, missing
    ("clean", "{images} --out {out}/c4 --config {bad_type}"),
    ("clean", "{images} --out {out}/c5 --config {non_utf8}"),
    ("ingest", "{images} --out {out}/i3 --config {list_yaml}"),
    ("pack", "{images} --out {out}/p3 --config {broken_yaml}"),
    ("pretrain", "--config {bad_type_pretrain} --out {out}/pt3"),
    ("pretrain", "--config {non_utf8} --out {out}/pt4"),
    ("probe", "--config {non_utf8}"),
    ("finetune", "--config {missing}"),
    ("demo", "--config {non_utf8}"),
    ("phantom", "--n 1 --config {bad_type}"),
    # unwritable outputs
    ("clean", "{images} --out {devnull}"),
    ("ingest", "{images} --out {devnull}"),
    ("pack", "{images} --out {devnull}"),
    ("phantom", "--n 1 --out {devnull}"),
    ("pretrain", "--data phantom:4 --out {devnull} --steps 1"),
    ("embed", "{images} --out {devnull}/f.parquet --model vit_tiny_patch16_224"),
    ("reconstruct", "{images} --weights {junk} --out {devnull}/r.png"),
    # a manifest naming a file outside its folder
    ("pack", "{traversal} --out {out}/p5"),
    # empty inputs
    ("report", "{empty_dir}"),
    # segmentation: missing data, bad values, presets, unwritable output; predict without a saved model
    ("segment", "--data folder:{missing} --out {out}/s1"),
    ("segment", "--data folder:{images} --out {out}/s2"),
    ("segment", "--data phantom:{images} --out {out}/s3 --epochs 0"),
    ("segment", "--config {non_utf8}"),
    ("segment", "--data folder:{images} --out {devnull}"),
    ("predict", "{missing} {images} --out {out}/pr1"),
    ("predict", "{empty_dir} {images} --out {out}/pr2"),
    # usage errors
    ("presets", "--no-such-flag"),
]


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse
        return int(exc.code or 0)


@pytest.mark.parametrize("verb, args", CASES, ids=[f"{v}:{a.split('--')[-1][:28].strip()}" for v, a in CASES])
def test_user_error_is_one_line_and_exit_2(files, capsys, verb, args):
    argv = [verb, *args.format(**files).split()]
    code = _run(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("usfmae: skipped")]
    assert code == 2, f"exit {code}: {err[-800:]}"
    assert "Traceback" not in err
    assert len(lines) == 1, err[-800:]


def test_every_verb_is_in_the_table():
    assert {verb for verb, _ in CASES} == set(VERBS)


def test_unreadable_file(files, capsys, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their permissions")
    config = Path(tmp_path / "secret.yaml")
    config.write_text("size: 64\n")
    config.chmod(0)
    assert _run(["clean", files["images"], "--out", str(tmp_path / "o"), "--config", str(config)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
