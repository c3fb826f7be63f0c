"""List the OpenUS-46 pretraining sources and the downstream sets, or check which are present.

Examples:
  usfmae sources list                 # the 46 sources (374,192 images) and the 3 evaluation sets
  usfmae sources list --format tsv    # machine-readable
  usfmae sources check /data/openus   # which sources have a sub-folder there, and how many files

Sub-folder names match source names case-insensitively, ignoring spaces and punctuation
("BUS (Dataset B)" may live in bus_dataset_b/).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from usfmae.config import add_dataclass_arguments, config_from_args
from usfmae.curate.sources import OPENUS46_TOTAL, SourcesConfig, check_root, downstream, openus46


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "check"], help="list the registry, or check a folder")
    parser.add_argument("root", nargs="?", default=argparse.SUPPRESS,
                        help="for check: folder with one sub-folder per source")
    parser.add_argument("--config", help="YAML preset with any of the settings below")
    add_dataclass_arguments(parser, SourcesConfig, skip=("action", "root"))


def _table(header: list[str], rows: list[list[str]], right: tuple[int, ...] = ()) -> str:
    """Plain-text table; columns in ``right`` (numbers) are right-aligned."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = "  ".join(f"{{:{'>' if i in right else '<'}{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*map(str, r)).rstrip() for r in [header] + rows)


def _list(fmt: str) -> None:
    pre, down = openus46(), downstream()
    if fmt == "json":
        print(json.dumps([dataclasses.asdict(s) for s in pre + down], indent=1))
        return
    header = ["name", "anatomy", "images", "kind", "role", "us43d", "link"]
    rows = [[s.name, s.anatomy, f"{s.images:,}", s.kind, s.role, "yes" if s.in_us43d else "no", s.link]
            for s in pre + down]
    if fmt == "tsv":
        print("\n".join("\t".join(r).replace(",", "") if i else "\t".join(r) for i, r in enumerate([header] + rows)))
        return
    print(_table(header, rows, right=(2,)))
    total = sum(s.images for s in pre)
    print(f"\nOpenUS-46: {len(pre)} sources, {total:,} images (paper: {OPENUS46_TOTAL:,}).")
    flagged = ", ".join(s.name for s in down if s.in_openus46)
    print(f"Note: the evaluation sets {flagged} are listed in the paper's Table 1 (OpenUS-46) although "
          "the paper says they were not used for pretraining; run `usfmae audit` on your corpus.")


def _check(root: str, fmt: str) -> None:
    rows = check_root(root)
    if fmt == "json":
        print(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))
        return
    header = ["source", "status", "files", "paper images", "folder"]
    body = [[r.name, r.status, f"{r.files:,}", "-" if r.expected_images is None else f"{r.expected_images:,}",
             r.folder or "-"] for r in rows]
    if fmt == "tsv":
        print("\n".join("\t".join(r) for r in [header] + body))
        return
    print(_table(header, body, right=(2, 3)))
    present = [r for r in rows if r.status == "present"]
    unknown = [r for r in rows if r.status == "unknown"]
    print(f"\n{len(present)} of {len(openus46())} sources present ({sum(r.files for r in present):,} files); "
          f"{len(unknown)} unknown folder(s).")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(SourcesConfig, args)
    if cfg.action == "check":
        _check(str(cfg.root), cfg.format)
    else:
        _list(cfg.format)
    return 0
