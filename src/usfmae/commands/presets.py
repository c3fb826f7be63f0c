"""List the YAML presets shipped with usfmae; any verb's --config takes their names.

Examples:
  usfmae presets
  usfmae pretrain --data phantom:256 --steps 20 --out runs/tiny --config tiny_cpu
"""

from __future__ import annotations

import argparse

from usfmae.config import list_presets, preset_summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--paths", action="store_true", help="also print each preset's file")


def run(args: argparse.Namespace) -> int:
    presets = list_presets()
    width = max((len(n) for n in presets), default=0)
    for name, path in presets.items():
        line = f"{name:<{width}}  {preset_summary(path)}"
        print(f"{line}\n{'':<{width}}  {path}" if args.paths else line)
    return 0
