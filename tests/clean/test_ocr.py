"""clean.ocr: Leptonica's internal messages stay off stderr once the Tesseract engine exists."""

from __future__ import annotations

import ctypes

import pytest

tesserocr = pytest.importorskip("tesserocr")

from usfmae.clean import ocr  # noqa: E402


def test_leptonica_reports_nothing_on_stderr_after_the_engine_starts(capfd) -> None:
    library = ocr.leptonica_library(tesserocr)
    assert library is not None  # the wheel bundles it: found, not guessed
    library.boxCreate.restype = ctypes.c_void_p
    library.boxClipToRectangle.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    library.boxClipToRectangle.restype = ctypes.c_void_p
    outside = library.boxCreate(1000, 1000, 10, 10)

    library.setMsgSeverity(ctypes.c_int(4))  # warnings and errors, as a fresh process has them
    assert library.boxClipToRectangle(outside, 100, 100) is None
    assert "boxClipToRectangle" in capfd.readouterr().err  # what batch logs used to get

    ocr._TesserocrEngine()
    assert library.boxClipToRectangle(outside, 100, 100) is None
    assert capfd.readouterr().err == ""
    assert ctypes.c_int.in_dll(library, "LeptMsgSeverity").value == 6
