"""The ``usfmae`` command line: one verb per stage, each implemented in ``usfmae.commands.<verb>``.

Every command module exposes ``add_arguments(parser)`` and ``run(args) -> int | None``. Only the
module of the verb being run is imported, so ``usfmae phantom`` does not pay for ONNX or timm.
A :class:`usfmae.errors.UsfmaeError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

# OpenCV logs its own lines for undecodable files ("[ERROR:0@...] imdecode_ ...", "TIFF_Error"),
# without the file name; the stage that skips the file already reports it in one line, and real
# OpenCV failures raise cv2.error. Set before any module imports cv2 (worker processes inherit it).
os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")

from usfmae import __version__, runtime  # noqa: E402
from usfmae.errors import UsfmaeError, os_error_line  # noqa: E402

# verb -> (module under usfmae.commands, one-line help). Order is the pipeline order.
VERBS: dict[str, tuple[str, str]] = {
    "phantom": ("phantom", "generate synthetic B-mode ultrasound images with burned-in overlays and ground truth"),
    "sources": ("sources", "list the OpenUS-46 pretraining sources and downstream sets, or check which are present"),
    "ingest": ("ingest", "images, videos (3 fps), DICOM cine and volumes -> frames + Parquet manifest"),
    "merge": ("merge", "combine the output folders of `ingest --shard I/N` runs into one corpus (checks completeness)"),
    "clean": ("clean", "remove burned-in annotations (text, calipers, colour marks) and resize to 224x224"),
    "pack": ("pack", "pack cleaned frames into memory-mapped uint8 shards for fast pretraining"),
    "audit": ("audit", "find exact and near-duplicate overlap between a pretraining corpus and evaluation sets"),
    "pretrain": ("pretrain", "pretrain a masked autoencoder (resumable; torchrun for many GPUs)"),
    "reconstruct": ("reconstruct", "write MAE reconstruction grids (input, masked, reconstruction) for images"),
    "finetune": ("finetune", "fine-tune an encoder or baseline on a labelled dataset (k-fold, seeds)"),
    "segment": ("segment", "fine-tune an encoder or U-Net for segmentation (Dice, IoU, HD95; k-fold, seeds)"),
    "probe": ("probe", "linear probe and k-NN on frozen features, with label-fraction curves"),
    "benchmark": ("benchmark", "run a grid of models x datasets x folds with resume (e.g. the paper's Table 2)"),
    "report": ("report", "render results as Markdown/CSV tables and figures"),
    "predict": ("predict", "apply a saved classifier or segmenter to images, a folder, a manifest or DICOM"),
    "embed": ("embed", "write encoder features of images to Parquet / NumPy"),
    "export": ("export", "export an encoder as timm-compatible safetensors + model card, and ONNX"),
    "demo": ("demo", "the end-to-end demo on embedded phantom data (what `make demo` runs)"),
    "presets": ("presets", "list the YAML presets shipped with usfmae (every --config takes their names)"),
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_threads(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("--threads", type=_positive, metavar="N", default=default,
                        help="compute threads per process (default: the cores this process may use "
                             "divided by the verb's worker processes, at least 1)")


def _load(verb: str):
    module_name, _ = VERBS[verb]
    return importlib.import_module(f"usfmae.commands.{module_name}")


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``verb``'s module is imported to build its sub-parser."""
    parser = _Parser(prog="usfmae", description="Ultrasound self-supervised foundation models (USF-MAE).")
    parser.add_argument("--version", action="version", version=f"usfmae {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    _add_threads(parser, None)
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for name, (_, help_text) in VERBS.items():
        module = _load(name) if name == verb else None
        description = (module.__doc__ or help_text).strip() if module else help_text
        verb_parser = sub.add_parser(name, help=help_text, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
        if module is not None:
            module.add_arguments(verb_parser)
            _add_threads(verb_parser, argparse.SUPPRESS)  # also accepted after the verb
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in argv if a in VERBS), None)  # `--threads N` may come first
    verb = verb if verb in VERBS else None
    parser = build_parser(verb)
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    runtime.set_thread_option(args.threads)
    # a log file or a pipe: a bar's carriage-return redraws would become thousands of lines
    runtime.quiet_progress_bars(not sys.stderr.isatty())
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="usfmae: %(message)s", stream=sys.stderr)
    try:
        code = _load(args.verb).run(args)
    except UsfmaeError as exc:
        print(f"usfmae {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        # Disk full, permission denied, a vanished folder: the user's machine, not a bug. Outputs
        # are written atomically, so what was finished before stays intact.
        print(f"usfmae {args.verb}: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"usfmae {args.verb}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
