"""PNG writing for ingest: the same pixels as ``cv2.imwrite``, in about half the CPU time.

Writing the frames is most of ingest's work (a 640x480 speckle frame: ~3.6 ms in OpenCV's libpng
at zlib level 1, against ~2.6 ms to decode the ten source frames it is sampled from). The PNG
format itself is simple: rows prefixed by a filter byte, deflated, in CRC-checked chunks. Here the
"up" filter (each row minus the row above; the same filter ingest asked libpng for) is one NumPy
subtraction, and the deflate runs in ISA-L (``isal``), Intel's SIMD implementation, for zlib levels
1-3: ISA-L's own levels 1-3, which compress speckle about as well as zlib's 1-3 at 2-3x the speed.
Level 0 stores the rows uncompressed and levels 4-9 use zlib itself, as asked. Any PNG reader
decodes the result to the identical pixels (tested). The chunks' CRC-32 comes from ISA-L too (the
same values, ~20x faster than zlib's), and :func:`write_png` hands the chunks to one ``writev``
(no joined copy of the image) on a temporary file renamed into place: four system calls per frame
where :func:`usfmae.fileio.atomic_open` makes about ten (a third of a frame's writing time).
"""

from __future__ import annotations

import os
import struct
import threading
import zlib

import numpy as np

try:  # optional speed-up; without it zlib does every level
    from isal import isal_zlib
except ImportError:  # pragma: no cover - isal is a declared dependency
    isal_zlib = None
_crc32 = isal_zlib.crc32 if isal_zlib is not None else zlib.crc32  # the same CRC-32 (PNG's, zlib's)

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILTER_UP = 2
_COLOUR_TYPE = {1: 0, 3: 2}  # channels -> PNG colour type (gray, RGB)


def _chunk(kind: bytes, data: bytes) -> list[bytes]:
    """A PNG chunk as pieces (length + type, data, CRC), so the data is never copied."""
    return [struct.pack(">I", len(data)) + kind, data, struct.pack(">I", _crc32(data, _crc32(kind)))]


def _deflate(data: np.ndarray, level: int) -> bytes:
    if 1 <= level <= 3 and isal_zlib is not None:
        return isal_zlib.compress(data, level)
    return zlib.compress(data, level)


def _png_pieces(pixels: np.ndarray, level: int) -> list[bytes]:
    """The bytes of :func:`encode_png`, in pieces (see there)."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (1, 3)):
        raise ValueError(f"expected uint8 (H, W) or (H, W, 1|3), got {pixels.dtype} {pixels.shape}")
    if not 0 <= level <= 9:
        raise ValueError(f"level must be 0..9, got {level}")
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    rows = np.ascontiguousarray(pixels).reshape(height, width * channels)
    filtered = _filter_buffer((height, width * channels + 1))
    filtered[:, 0] = _FILTER_UP  # the row above the first one counts as zeros
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # modulo 256, as the filter is defined
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPE[channels], 0, 0, 0)
    return [_SIGNATURE, *_chunk(b"IHDR", header), *_chunk(b"IDAT", _deflate(filtered, level)), *_IEND]


_IEND = _chunk(b"IEND", b"")
_BUFFERS = threading.local()


def _filter_buffer(shape: tuple[int, int]) -> np.ndarray:
    """This thread's buffer for the filtered rows, reused while frames keep their size: a new one per
    frame would be fresh memory each time (a page fault per 4 kB: about 5% of ingest's time)."""
    buffer = getattr(_BUFFERS, "filtered", None)
    if buffer is None or buffer.shape != shape:
        buffer = _BUFFERS.filtered = np.empty(shape, np.uint8)
    return buffer


def encode_png(pixels: np.ndarray, level: int = 1) -> bytes:
    """PNG bytes of an 8-bit gray (H, W) / (H, W, 1) or RGB (H, W, 3) image.

    Args:
        pixels: uint8 array; RGB channel order (as everywhere in usfmae).
        level: zlib compression level 0-9 (0 = stored).

    Raises:
        ValueError: another dtype, channel count or level.
    """
    return b"".join(_png_pieces(pixels, level))


def write_png(path: str | os.PathLike, pixels: np.ndarray, level: int = 1) -> None:
    """Write :func:`encode_png` of ``pixels`` to ``path`` atomically (a temporary file renamed).

    The temporary file (``.NAME.XXXXXXXX.png`` next to ``path``, created exclusively, with the
    permissions a plain ``open`` gives) never replaces ``path`` half-written; on any error it is
    removed and the ``OSError`` propagates. Missing parent folders are created.
    """
    pieces = _png_pieces(pixels, level)
    path = os.fspath(path)
    folder, name = os.path.split(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    while True:
        # ".NAME.<8 hex>.png", as long as atomic_path's names, which fileio.fit_name leaves room for
        tmp = os.path.join(folder, f".{name}.{os.urandom(4).hex()}.png")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:  # (left by a killed run): draw another name
            continue
        except FileNotFoundError:
            if not folder or os.path.isdir(folder):
                raise
            os.makedirs(folder, exist_ok=True)
    try:
        try:
            total = sum(map(len, pieces))
            written = os.writev(fd, pieces) if hasattr(os, "writev") else 0
            if written < total:  # a short write (signal, nearly full disk): write the rest plainly
                rest = b"".join(pieces)[written:]
                while rest:
                    rest = rest[os.write(fd, rest):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
