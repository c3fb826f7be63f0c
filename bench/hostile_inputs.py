"""Hundreds of hostile inputs through the batch verbs: does every run finish, and is every file accounted for?

    python bench/hostile_inputs.py                      # ingest, clean, pack, embed; prints one JSON line
    python bench/hostile_inputs.py --stages ingest --keep /tmp/hostile

The corpus (made here, seeded) is a set of valid files of every format a user feeds in (PNG 8/16-bit,
gray and colour, JPEG, BMP, TIFF, the real ultrasound DICOMs shipped by pydicom-data, an H.264 clip,
a NIfTI volume), each broken in the ways files break: truncated at eight points, bytes flipped at
seeded places, the body replaced by junk or zeros, the content under another format's extension; plus
decompression bombs (PNG / JPEG / DICOM headers claiming 30000x30000 or 100,000 frames), degenerate
sizes, DICOMs without pixels or of another modality or with an 8 MB header, odd names (undecodable
bytes, newline, leading dash, 250 characters, upper-case suffix) and things that are not regular files
(a FIFO, a folder named like an image, dangling and looping symlinks, a symlink to /dev/zero).

Each verb then runs once on the whole folder as a user would (``usfmae VERB FOLDER --out ...``, a
fresh process, a timeout), and again to check that a rerun succeeds. Per verb it reports the exit
codes, whether a traceback or signal appeared, the seconds, and ``survived``: of the inputs the verb
reads (ingest: every file; clean, pack and embed: files with an image suffix, the others being
ingest's job; audit and predict: image and DICOM files), how many are accounted for, i.e. written
to the output or named in the rejects file with a reason, in runs that both ended with exit 0.
``audit`` compares the folder with itself; ``predict`` applies a tiny classifier fine-tuned here
on phantom images first (about 20 s). When a verb crashes or hangs, halving the inputs names the
culprits.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

from usfmae.curate.frames import DICOM_SUFFIXES
from usfmae.fileio import printable_name
from usfmae.imaging import IMAGE_SUFFIXES

STAGES = ("ingest", "clean", "pack", "embed", "audit", "predict")
TRUNCATE_AT = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
FLIPS = 12  # seeded single-region corruptions per base file
DICOMS = ("OBXXXX1A.dcm", "US1_UNCR.dcm", "gdcm-US-ALOKA-16.dcm")
TIMEOUT_S = 600


# ----------------------------------------------------------------------------------------------------
# The corpus


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` gray pixels, with one tiny compressed row."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * min(width + 1, 4096))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its frame header (SOF0) patched to claim ``width`` x ``height``."""
    at = jpeg.index(b"\xff\xc0")
    return jpeg[:at + 5] + struct.pack(">HH", height, width) + jpeg[at + 9:]


def base_files(rng: np.random.Generator) -> dict[str, bytes]:
    """Valid files of every input format, by name."""
    gray = (rng.random((48, 64)) * 255).astype(np.uint8)
    rgb = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    files = {
        "gray.png": cv2.imencode(".png", gray)[1].tobytes(),
        "rgb.png": cv2.imencode(".png", rgb)[1].tobytes(),
        "deep.png": cv2.imencode(".png", (gray.astype(np.uint16) * 257))[1].tobytes(),
        "photo.jpg": cv2.imencode(".jpg", rgb)[1].tobytes(),
        "plain.bmp": cv2.imencode(".bmp", gray)[1].tobytes(),
        "scan.tif": cv2.imencode(".tif", rgb)[1].tobytes(),
    }
    from pydicom.data import get_testdata_file

    for name in DICOMS:
        files[name] = Path(get_testdata_file(name)).read_bytes()
    files["clip.mp4"] = _h264_clip(rng)
    files["volume.nii.gz"] = _nifti(rng)
    return files


def _h264_clip(rng: np.random.Generator) -> bytes:
    import av

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            for _ in range(30):
                frame = av.VideoFrame.from_ndarray((rng.random((48, 64, 3)) * 255).astype(np.uint8), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        return path.read_bytes()


def _nifti(rng: np.random.Generator) -> bytes:
    import nibabel as nib

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "volume.nii.gz"
        nib.save(nib.Nifti1Image((rng.random((32, 32, 6)) * 255).astype(np.uint8), np.eye(4)), str(path))
        return path.read_bytes()


def broken_variants(name: str, data: bytes, rng: np.random.Generator, suffixes: list[str]) -> dict[str, bytes]:
    """Every way ``data`` is broken: truncations, flipped regions, junk, zeros, another extension."""
    stem, suffix = name.split(".", 1)
    out = {f"{stem}_cut{int(f * 100):02d}.{suffix}": data[:int(len(data) * f)] for f in TRUNCATE_AT}
    for k in range(FLIPS):
        spoiled = bytearray(data)
        start = int(rng.integers(0, max(1, len(data) - 16)))
        spoiled[start:start + 16] = rng.integers(0, 256, min(16, len(data) - start), dtype=np.uint8).tobytes()
        out[f"{stem}_flip{k:02d}.{suffix}"] = bytes(spoiled)
    out[f"{stem}_junk.{suffix}"] = rng.integers(0, 256, len(data), dtype=np.uint8).tobytes()
    out[f"{stem}_zeros.{suffix}"] = bytes(len(data))
    out[f"{stem}_headjunk.{suffix}"] = data[:64] + rng.integers(0, 256, len(data), dtype=np.uint8).tobytes()
    for other in suffixes:
        if other != suffix:
            out[f"{stem}_as_{other.replace('.', '_')}.{other}"] = data
    return out


def special_files(base: dict[str, bytes]) -> dict[str, bytes]:
    """Bombs, degenerate sizes and DICOMs that are wrong in their header."""
    out = {"bomb_30000.png": png_claiming(30000, 30000), "one_pixel.png": png_claiming(1, 1),
           "zero_size.png": png_claiming(0, 0), "strip_65535x1.png": png_claiming(65535, 1),
           "strip_1x65535.png": png_claiming(1, 65535),
           "bomb_65000.jpg": jpeg_claiming(base["photo.jpg"], 65000, 65000),
           "empty.png": b"", "empty.dcm": b"", "empty.mp4": b"", "text.png": b"hello\n" * 10}
    out.update(_dicom_specials())
    return out


def _dicom_specials() -> dict[str, bytes]:
    import io

    import pydicom
    from pydicom.data import get_testdata_file

    def variant(edit) -> bytes:
        ds = pydicom.dcmread(get_testdata_file("OBXXXX1A.dcm"))
        edit(ds)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=False)
        return buffer.getvalue()

    def huge_rows(ds):
        ds.Rows, ds.Columns = 30000, 30000

    def many_frames(ds):
        ds.NumberOfFrames = 100000

    def no_pixels(ds):
        del ds.PixelData

    def huge_header(ds):
        ds.add_new(0x00091010, "OB", bytes(8 * 1024 * 1024))

    def zero_rows(ds):
        ds.Rows = 0

    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    return {"dicom_rows30000.dcm": variant(huge_rows), "dicom_frames100000.dcm": variant(many_frames),
            "dicom_nopixels.dcm": variant(no_pixels), "dicom_header8mb.dcm": variant(huge_header),
            "dicom_rows0.dcm": variant(zero_rows), "ct_small.dcm": ct}


def odd_names(png: bytes) -> dict[bytes, bytes]:
    """A valid PNG under names that break naive code (as bytes: one is not UTF-8)."""
    return {b"\xff\xfe_latin1.png": png, b"new\nline.png": png, b"-leading_dash.png": png, b"spaces in name.png": png,
            ("\u00e9chographie_\u8d85\u58f0.png").encode(): png, b"x" * 246 + b".png": png, b"UPPER.PNG": png,
            b"double.png.png": png, b"no_suffix": png}


def make_corpus(root: Path, seed: int = 0) -> list[str]:
    """Write the hostile corpus under ``root``; returns the relative names (as str, surrogate-escaped)."""
    rng = np.random.default_rng(seed)
    base = base_files(rng)
    suffixes = sorted({name.split(".", 1)[1] for name in base})
    files: dict[bytes, bytes] = {}
    for name, data in base.items():
        files[f"valid_{name}".encode()] = data
        files.update({k.encode(): v for k, v in broken_variants(name, data, rng, suffixes).items()})
    files.update({k.encode(): v for k, v in special_files(base).items()})
    files.update(odd_names(base["gray.png"]))
    broot = os.fsencode(root)
    for name, data in files.items():
        with open(os.path.join(broot, name), "wb") as handle:
            handle.write(data)
    # things that are not regular files
    os.mkfifo(root / "fifo.png")
    (root / "folder.png").mkdir()
    os.symlink(root / "missing_target.png", root / "dangling.png")
    os.symlink("/dev/zero", root / "zero_device.png")
    (root / "loop").mkdir()
    os.symlink(root / "loop", root / "loop" / "again")
    names = [os.fsdecode(n) for n in files] + ["fifo.png", "folder.png", "dangling.png", "zero_device.png",
                                               "loop/again"]
    return sorted(names)


# ----------------------------------------------------------------------------------------------------
# Running the verbs


def saved_classifier(work: Path) -> Path:
    """A tiny saved classifier for ``predict``: one fold, one epoch of the micro ViT on 16 phantom images."""
    cli = [sys.executable, "-m", "usfmae.cli", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    phantom, run = work / "classifier_data", work / "classifier"
    for command in (["phantom", "--n", "16", "--size", "64", "--out", str(phantom)],
                    ["finetune", "--data", f"phantom:{phantom}", "--out", str(run), "--model", "mae_vit_micro_patch8_64",
                     "--epochs", "1", "--batch-size", "8", "--split", "kfold", "--k", "2", "--folds", "0"]):
        subprocess.run([*cli, *command], check=True, capture_output=True, timeout=TIMEOUT_S, env=env)
    return next(run.glob("*/model"))


def verb_command(stage: str, source: Path, out: Path, model: Path | None = None) -> list[str]:
    cli = [sys.executable, "-m", "usfmae.cli", "--threads", "1"]
    if stage == "audit":
        return [*cli, "audit", "--pretrain", str(source), "--eval", str(source), "--out", str(out)]
    if stage == "predict":
        return [*cli, "predict", str(model), str(source), "--out", str(out)]
    if stage == "ingest":
        return [*cli, "ingest", str(source), "--out", str(out), "--workers", "1", "--no-progress"]
    if stage == "clean":
        return [*cli, "clean", str(source), "--out", str(out), "--workers", "1", "--no-progress", "--no-text-check"]
    if stage == "pack":
        return [*cli, "pack", str(source), "--out", str(out), "--size", "64", "--no-progress"]
    return [*cli, "embed", str(source), "--out", str(out / "features.parquet"), "--model", "mae_vit_micro_patch8_64"]


def run_verb(stage: str, source: Path, out: Path, model: Path | None = None) -> dict:
    start = time.perf_counter()
    try:
        done = subprocess.run(verb_command(stage, source, out, model), capture_output=True, timeout=TIMEOUT_S,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        code, err = done.returncode, done.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as exc:
        code, err = "timeout", (exc.stderr or b"").decode(errors="replace")
    return {"code": code, "seconds": round(time.perf_counter() - start, 1), "traceback": "Traceback" in err,
            "last_line": err.strip().splitlines()[-1][:300] if err.strip() else ""}


def accounted(stage: str, out: Path) -> set[str]:
    """Input names (as the product prints them: ``\\xNN`` for undecodable bytes) the stage wrote or rejected.

    Ingest and clean name the source file in their manifest, embed in its features' ``path`` column,
    pack by its id (the relative path without suffix), audit in its pairs' ``eval_path`` (the folder
    is compared with itself, so every readable file pairs with itself), predict in its CSV's
    ``source``; every stage names rejected files in its rejects file.
    """
    import csv

    import pyarrow.parquet as pq

    written = {"ingest": ("manifest.parquet", "source_path"), "clean": ("manifest.parquet", "source"),
               "pack": ("index.parquet", "id"), "embed": ("features.parquet", "path"),
               "audit": ("pairs.parquet", "eval_path"), "predict": ("predictions.csv", "source")}[stage]
    names: set[str] = set()
    table_path = out / written[0]
    if table_path.suffix == ".csv" and table_path.is_file():
        with open(table_path, newline="", encoding="utf-8") as handle:
            names |= {os.path.basename(row[written[1]]) for row in csv.DictReader(handle)}
    elif table_path.is_file():
        table = pq.read_table(table_path)
        column = written[1] if written[1] in table.column_names else "path"
        names |= {os.path.basename(str(v)) for v in table.column(column).to_pylist()}
    rejects = out / ("features.parquet.rejects.jsonl" if stage == "embed" else "rejects.jsonl")
    if rejects.is_file():
        for line in rejects.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                names.add(os.path.basename(str(json.loads(line).get("file", ""))))
            except json.JSONDecodeError:
                continue
    return names


def _shown(name: str) -> str:
    return printable_name(os.path.basename(name))


def in_scope(stage: str, name: str) -> bool:
    """Ingest reads every file (it sniffs DICOM without a suffix); audit and predict image and DICOM
    files (audit also videos and volumes, left out of the count); the others image files."""
    suffix = os.path.splitext(name)[1].lower()
    if stage in ("audit", "predict"):
        return suffix in IMAGE_SUFFIXES or suffix in DICOM_SUFFIXES
    return stage == "ingest" or suffix in IMAGE_SUFFIXES


def culprits(stage: str, root: Path, names: list[str], work: Path, most: int = 5,
             model: Path | None = None) -> list[dict]:
    """The regular inputs that make ``stage`` crash or hang, found by halving (up to ``most``)."""
    runs = [0]

    def failure(subset: list[str]) -> dict | None:
        runs[0] += 1
        folder = work / f"subset_{runs[0]}"
        folder.mkdir(parents=True)
        for name in subset:
            shutil.copyfile(root / name, folder / os.path.basename(name))
        result = run_verb(stage, folder, work / f"subset_{runs[0]}_out", model)
        return result if result["code"] not in (0, 2) or result["traceback"] else None

    found: list[dict] = []
    remaining = list(names)
    while remaining and len(found) < most and failure(remaining):
        subset = remaining
        while len(subset) > 1:
            half = subset[:len(subset) // 2]
            if failure(half):
                subset = half
            elif failure(subset[len(subset) // 2:]):
                subset = subset[len(subset) // 2:]
            else:
                break  # only the two halves together fail: report them together
        found.append({"files": subset[:10], **(failure(subset) or {})})
        remaining = [n for n in remaining if n not in subset]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--keep", help="write the corpus and outputs here (kept) instead of a temporary folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="hostile_"))
    root = work / "corpus"
    root.mkdir(parents=True, exist_ok=True)
    names = make_corpus(root, args.seed)
    regular = [n for n in names if (root / n).is_file() and not (root / n).is_symlink()]
    report: dict = {"bench": "hostile_inputs", "inputs": len(names), "stages": {}}
    stages = args.stages.split(",")
    model = saved_classifier(work) if "predict" in stages else None
    for stage in stages:
        out = work / f"out_{stage}"
        first = run_verb(stage, root, out, model)
        again = run_verb(stage, root, out, model)
        seen = accounted(stage, out)
        scope = [n for n in regular if in_scope(stage, n)]
        missing = [n for n in scope if _shown(n) not in seen
                   and (stage != "pack" or os.path.splitext(_shown(n))[0] not in seen)]
        ok = first["code"] == 0 and again["code"] == 0 and not first["traceback"] and not again["traceback"]
        entry = {"first": first, "rerun": again, "inputs_in_scope": len(scope),
                 "survived": len(scope) - len(missing) if ok else 0, "missing": missing[:20]}
        if not ok:
            entry["culprits"] = culprits(stage, root, regular, work / f"bisect_{stage}", model=model)
        report["stages"][stage] = entry
    print(json.dumps(report))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
