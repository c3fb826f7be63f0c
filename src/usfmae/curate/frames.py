"""Shared pieces of the format readers: what a frame is, file-type suffixes, 8-bit conversion.

Both :mod:`usfmae.curate.readers` (images, DICOM, volumes) and :mod:`usfmae.curate.video` build on
these, and :data:`IMAGE_SUFFIXES` is re-exported from :mod:`usfmae.imaging`, where every stage takes it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from usfmae import imaging
from usfmae.errors import DataError
from usfmae.imaging import IMAGE_SUFFIXES

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "DICOM_SUFFIXES", "VOLUME_SUFFIXES", "SCALES", "ReadError",
           "Frame", "to_uint8", "normalize_channels", "TimeSampler"]
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".m4v", ".mkv", ".wmv", ".mpg", ".mpeg", ".webm", ".ogv")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
SCALES = ("minmax", "bits")


class ReadError(DataError):
    """A file that exists but cannot be decoded (corrupt, truncated, empty, unsupported)."""


@dataclasses.dataclass
class Frame:
    """One 2-D frame taken from a file.

    Attributes:
        pixels: (H, W) gray or (H, W, 3) RGB uint8.
        index: frame index (video/cine), slice index (volume) or page index (multi-page TIFF).
        timestamp: seconds from the first frame (video, cine) or None.
        bit_depth: bits per sample of the stored data before conversion to 8 bits.
        group_id: what frames of one patient/study/clip share ("study:<uid>", "patient:<id>", or
            the file path), used for near-duplicate search and grouped splits.
        modality: the DICOM Modality of the file, "" for other formats.
    """

    pixels: np.ndarray
    index: int
    timestamp: float | None
    bit_depth: int
    group_id: str
    modality: str = ""  # DICOM Modality (US, CT, ...); empty for files that carry none


def to_uint8(arr: np.ndarray, bit_depth: int, scale: str = "bits") -> np.ndarray:
    """Map any numeric array to uint8: ``"bits"`` is :func:`usfmae.imaging.to_uint8` (the one policy:
    unsigned data by ``bit_depth``, others min-max), ``"minmax"`` stretches this array's range
    (:func:`usfmae.imaging.stretch_to_uint8`)."""
    if arr.dtype == np.uint8:
        return arr
    if scale == "bits":
        return imaging.to_uint8(arr, bit_depth)
    return imaging.stretch_to_uint8(arr)


def normalize_channels(arr: np.ndarray, bgr: bool = False) -> np.ndarray:
    """(H,W) / (H,W,1..4) uint8 -> (H,W) or (H,W,3): :func:`usfmae.imaging.from_decoder` (alpha over
    black, BGR -> RGB when ``bgr``, equal RGB channels -> gray) with gray as a 2-D array."""
    out = imaging.from_decoder(arr, bgr=bgr)
    return out[:, :, 0] if out.shape[2] == 1 else out


class TimeSampler:
    """Uniform sampling in time: keep the first frame at or after each tick k / fps.

    A frame within half a source frame interval before a tick counts as on it, so 30 fps sampled
    at 3 fps keeps frames 0, 10, 20, ... despite rounding in the timestamps. A source slower than
    ``fps`` keeps every frame. ``fps <= 0`` keeps every frame.
    """

    def __init__(self, fps: float, tolerance: float) -> None:
        self.fps, self.tolerance, self._tick = fps, tolerance, 0

    def want(self, t: float) -> bool:
        if self.fps <= 0:
            return True
        if t + self.tolerance < self._tick / self.fps:
            return False
        while self._tick / self.fps <= t + self.tolerance:
            self._tick += 1
        return True
