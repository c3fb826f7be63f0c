"""Encoded test images shared by the decoder's tests (tests/test_imaging.py) and ingest's (tests/curate)."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image


def jpeg_file(kind: str) -> bytes:
    """JPEG files as scanners, PACS exports and image tools write them, of one smooth test image."""
    image = cv2.GaussianBlur(np.random.default_rng(2).integers(0, 255, (97, 131, 3), dtype=np.uint8), (5, 5), 2)
    sampling = {"420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, "422": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
                "444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444, "411": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411}
    if kind in sampling:
        return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 75,
                                            cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling[kind]])[1].tobytes()
    if kind == "progressive":
        return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    if kind == "gray":
        return cv2.imencode(".jpg", image[..., 1])[1].tobytes()
    buffer = io.BytesIO()
    Image.fromarray(image).convert("CMYK" if kind == "cmyk" else "RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def spoiled_jpeg() -> tuple[bytes, bytes]:
    """(intact, spoiled): 32 bytes of the entropy-coded data 30% in changed, a damage libjpeg notices.
    OpenCV decodes the spoiled file anyway (a third of its pixels off by more than 20 levels) and
    libjpeg prints "Corrupt JPEG data: premature end of data segment" on stderr, naming no file.
    (Much damage goes unnoticed by any JPEG decoder: a flipped bit mostly decodes to other pixels.)"""
    intact = jpeg_file("420")
    spoiled = bytearray(intact)
    start = intact.index(b"\xff\xda")  # start of scan: the entropy-coded data follows
    at = start + int(0.3 * (len(intact) - start))
    spoiled[at:at + 32] = bytes(b ^ 0x5A for b in spoiled[at:at + 32])
    return intact, bytes(spoiled)
