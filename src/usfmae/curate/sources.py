"""Registry of the OpenUS-46 pretraining sources and the downstream evaluation sets.

OpenUS-46 (the paper's Table 1) is package data (``usfmae/resources/openus46.tsv``): 46 public
ultrasound datasets, 374,192 images in all. The downstream sets (BUS-BRA, MMOTU-2D, GIST514-DB) are
listed separately for evaluation, and flagged: the paper's Table 1 lists all three inside
OpenUS-46 although the paper says they were not used for pretraining, so run ``usfmae audit``.

``kind`` (image / video / volume) is inferred from each dataset's public description where it is
known to contain clips or volumes; it only guides expectations, ingest reads whatever files it finds.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
from importlib import resources
from pathlib import Path

from usfmae.config import check, opt
from usfmae.errors import DataError

OPENUS46_TOTAL = 374_192

# Sources whose public releases are clips (sampled at 3 fps by ingest) or 3-D / 2-D+t volumes.
_KINDS = {
    "BLUES": "video", "Cactus Dataset": "video", "CAMUS_public": "video", "CardiacUCD": "video",
    "EchoCP": "video", "EchoNet-Dynamic": "video", "EchoNet-Pediatric": "video", "Pocus": "video",
    "Thyroid US Cineclip": "video", "ACOUSLIC": "volume", "MMOTU-3D": "volume", "MicroSeg": "volume",
    "regPro": "volume", "Segthy": "volume",
}
_DOWNSTREAM = {  # name -> (anatomy, images, link, task)
    "BUS-BRA": ("Breast", 1875, "zenodo.org/records/8231412", "benign vs malignant, official 5-fold"),
    "MMOTU-2D": ("Ovarian Tumor", 1469, "github.com/cv516Buaa/MMOTU_DS2Net", "8 classes, 1000/469 split"),
    "GIST514-DB": ("Gastrointestinal (EUS)", 514, "github.com/howardchina/query2", "GIST vs leiomyoma"),
}


@dataclasses.dataclass(frozen=True)
class Source:
    """One dataset.

    Attributes:
        name: the name used in the paper (also the expected sub-folder name, case-insensitive).
        anatomy: organ or application.
        images: images the paper used from it (0 when not stated).
        in_us43d: whether it is in UltraSam's US-43d collection.
        link: where to download it (without scheme).
        kind: "image", "video" or "volume" (inferred).
        role: "pretrain" (OpenUS-46) or "downstream" (evaluation set).
        in_openus46: listed in the paper's Table 1.
        note: caveats (e.g. an evaluation set that is also listed as a pretraining source).
    """

    name: str
    anatomy: str
    images: int
    in_us43d: bool
    link: str
    kind: str
    role: str
    in_openus46: bool
    note: str = ""


def _read_table() -> list[dict[str, str]]:
    text = resources.files("usfmae").joinpath("resources/openus46.tsv").read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text), delimiter="\t"))


def openus46() -> list[Source]:
    """The 46 pretraining sources in the table's order."""
    out = []
    for row in _read_table():
        name = row["name"]
        note = ("evaluation set listed in OpenUS-46 (Table 1) although the paper says it was not used "
                "for pretraining: audit for leakage") if name in _DOWNSTREAM else ""
        out.append(Source(name, row["anatomy"], int(row["images_used_in_paper"]),
                          row["in_us43d"].strip().lower() == "yes", row["link"],
                          _KINDS.get(name, "image"), "pretrain", True, note))
    return out


def downstream() -> list[Source]:
    """The paper's three evaluation sets."""
    listed = {s.name for s in openus46()}
    return [Source(name, anatomy, images, True, link, "image", "downstream", name in listed,
                   f"{task}; also listed in OpenUS-46 Table 1" if name in listed else task)
            for name, (anatomy, images, link, task) in _DOWNSTREAM.items()]


def all_sources() -> list[Source]:
    """OpenUS-46 then the downstream sets (the three appear in both lists, with different roles)."""
    return openus46() + downstream()


def folder_key(name: str) -> str:
    """Matching key of a source or folder name: case-folded, letters and digits only.

    So "BUS (Dataset B)", "bus_dataset_b" and "BUS-Dataset-B" name the same folder.
    """
    return re.sub(r"[^0-9a-z]", "", name.casefold())


def find_source(name: str) -> Source | None:
    """The OpenUS-46 source (or else downstream set) whose name matches ``name`` case-insensitively."""
    key = folder_key(name)
    return next((s for s in all_sources() if folder_key(s.name) == key), None)


def count_files(folder: Path) -> int:
    """Non-hidden files below ``folder`` (recursively)."""
    total = 0
    for _, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        total += sum(1 for f in filenames if not f.startswith("."))
    return total


@dataclasses.dataclass
class CheckRow:
    """One line of ``sources check``: a known source (present or missing) or an unknown folder."""

    name: str
    folder: str | None
    files: int
    expected_images: int | None
    status: str  # "present", "missing", "unknown"


def check_root(root: str | Path) -> list[CheckRow]:
    """Which sources are present under ``root`` (one sub-folder each) and how many files each holds.

    Known sources come first in registry order (the downstream sets are among them), then folders
    that match no source.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    folders = {folder_key(p.name): p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    rows, used = [], set()
    for source in openus46():
        key = folder_key(source.name)
        folder = folders.get(key)
        used.add(key)
        rows.append(CheckRow(source.name, folder.name if folder else None,
                             count_files(folder) if folder else 0, source.images,
                             "present" if folder else "missing"))
    for key, folder in folders.items():
        if key not in used:
            rows.append(CheckRow(folder.name, folder.name, count_files(folder), None, "unknown"))
    return rows


@dataclasses.dataclass
class SourcesConfig:
    """Settings of ``usfmae sources``."""

    action: str = opt("list", "list the registry, or check a folder", choices=["list", "check"])
    root: str | None = opt(None, "for check: folder with one sub-folder per source")
    format: str = opt("table", "output format", choices=["table", "tsv", "json"])

    def __post_init__(self) -> None:
        check(self.action in ("list", "check"), f"action must be list or check, got {self.action!r}")
        check(self.format in ("table", "tsv", "json"), f"format must be table, tsv or json, got {self.format!r}")
        check(self.action != "check" or bool(self.root), "sources check needs a folder: usfmae sources check ROOT")
