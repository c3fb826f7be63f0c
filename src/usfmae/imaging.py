"""THE image decoder and fit policy: every stage turns files into model-sized pixels through here.

One policy, written once, so the same scan gives the same pixels on every path (ingest, clean,
pack, the pretraining datasets, fine-tune, probe, embed, export, reconstruct, benchmark):

Decoding (:func:`read_image`)
    PNG, JPEG, BMP and TIFF files (8 or 16 bits; gray, gray+alpha, RGB, RGBA, palette) become uint8
    ``(H, W, C)`` with ``C`` 1 or 3, channels in RGB order. The pixel count is read from the file
    header (Pillow, without decoding) and a file larger than ``max_pixels`` is refused before a
    single pixel is decoded, so a small compressed "decompression bomb" cannot exhaust memory.
    Pixels are then decoded once (:func:`decode_pixels`): JPEG by libjpeg-turbo in strict mode,
    everything else by OpenCV. A JPEG cut off (no end-of-image marker) or with corrupt data (a
    flipped bit: libjpeg would decode blocks of garbage and only print an anonymous "Corrupt JPEG
    data" line) is refused, as a PNG with a bad checksum is. EXIF orientation is ignored: the stored
    pixel grid is the image (ultrasound exports do not rotate; a rotated copy would change geometry
    silently).

Deep data (:func:`to_uint8`)
    Unsigned integers are mapped by their bit depth, not by their content: value ``v`` of a
    ``b``-bit image keeps its top 8 significant bits, ``v >> (b - 8)`` (``b`` = the dtype's bits
    unless the caller knows better, e.g. DICOM ``BitsStored``; larger values saturate at 255). A
    dark scan stays dark and a crop has the pixels of its source, which per-image min-max stretching
    cannot promise; 8-bit data stored in 16 bits either way (``v * 257`` or ``v << 8``, both common
    in PNG and DICOM lookup tables) comes back exactly. Signed integers and floats have no natural
    range: their finite min-max range is stretched to 0-255 (constant -> 0).

Palette and alpha
    Palettes are expanded to their colours; an alpha channel is composited over black (a
    transparent pixel is background, and the background of a scan is black), rounding to nearest.

Colour (:func:`to_channels`)
    An RGB image whose three channels are equal is returned with one channel. For a 1-channel
    model colour becomes ITU-R BT.601 luminance (``cv2.COLOR_RGB2GRAY``); for a 3-channel model
    gray is replicated.

Fitting (:func:`fit`)
    To a square ``size`` x ``size``: ``"pad"`` (default) scales the long side to ``size``, keeps
    the aspect ratio and centres the image on black (letterbox); ``"stretch"`` ignores the aspect
    ratio. Images resize with area interpolation (averaging when shrinking, which does not alias
    speckle; OpenCV's area filter is bilinear when enlarging); label masks with nearest neighbour
    (pixel-centre exact), so label values are kept. :func:`fit_geometry` and :func:`unfit` map a
    model-sized prediction back onto the original image.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from usfmae.errors import DataError

try:  # strict JPEG decoding; without it (the GPU check's machine image) OpenCV decodes JPEG leniently
    import simplejpeg
except ImportError:  # pragma: no cover - simplejpeg is a declared dependency
    simplejpeg = None

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".tif", ".tiff")
FIT_POLICIES = ("pad", "stretch")
INTERPOLATIONS = ("area", "nearest", "linear")

# 8192 x 8192: 16 times the largest ultrasound frame we know of, 64 MiB as 8-bit gray (a 16-bit RGBA
# image of that size decodes to 512 MiB). ``usfmae ... --max-pixels`` raises it for a known file.
DEFAULT_MAX_PIXELS = 8192 * 8192

log = logging.getLogger(__name__)

_CV_INTERP = {"area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST_EXACT, "linear": cv2.INTER_LINEAR}


def image_relpaths(folder: str | os.PathLike) -> list[str]:
    """The image files under ``folder`` as relative ``/``-joined paths (recursive, by suffix), sorted
    part by part (the order of sorted ``Path`` objects), for the stages that read images.

    Strings, not ``Path`` objects: a stage holds its listing for the whole run, and a ``Path`` costs
    ~320 bytes against ~100 for its string (a million frames: 0.4 GB less). One ``scandir`` pass,
    no ``stat`` of regular files. Symbolic links to files count; links to folders are not followed
    (as ``Path.rglob`` does); unreadable folders are passed over. Other files (DICOM, video,
    volumes, notes) are ingest's to read: they are left out with one log line saying how many and
    naming the first, instead of silently (hidden files aside).
    """
    images: list[str] = []
    others: list[str] = []

    def children(rel_dir: str) -> Iterator[os.DirEntry]:
        try:
            with os.scandir(os.path.join(folder, rel_dir)) as entries:
                listed = list(entries)
        except OSError:
            return iter(())
        return iter(sorted(listed, key=lambda entry: entry.name))

    # depth first, each folder's entries by name: the order of sorted Paths (part by part) with no
    # sort key per file, and an explicit stack, not recursion, for however deep a tree is
    stack = [("", children(""))]
    while stack:
        rel_dir, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
        try:
            if entry.is_dir():
                if not entry.is_symlink():
                    stack.append((rel, children(rel)))
                continue
            if not entry.is_file():  # FIFOs, devices, dangling or looping links
                continue
        except OSError:
            continue
        dot = entry.name.rfind(".")
        if 0 < dot < len(entry.name) - 1 and entry.name[dot:].lower() in IMAGE_SUFFIXES:
            images.append(rel)
        elif not any(part.startswith(".") for part in rel.split("/")):  # not locks, temp files
            others.append(rel)
    if others and images:
        log.warning("%s: %d file(s) that are not images left out (e.g. %s); for DICOM, video and volumes "
                    "run `usfmae ingest` first and use its manifest", folder, len(others), others[0])
    return images


def image_files(folder: Path) -> list[Path]:
    """:func:`image_relpaths` as paths under ``folder`` (for listings too small for their size to matter)."""
    return [folder / rel for rel in image_relpaths(folder)]


def header_pixels(data: bytes | np.ndarray, name: str | Path = "image") -> int:
    """Pixel count (width x height of the first page) from an image header, nothing decoded.

    Raises:
        DataError: the header is not one of a supported image format.
    """
    buffer = io.BytesIO(data.tobytes() if isinstance(data, np.ndarray) else data)
    try:
        with warnings.catch_warnings():
            # DecompressionBombWarning (our limit is checked below) and "Corrupt EXIF data" of a
            # damaged file: the caller's one reject line says what matters
            warnings.simplefilter("ignore")
            with Image.open(buffer) as image:  # lazy: reads the header only
                width, height = image.size
    except Image.DecompressionBombError as exc:
        # Pillow's own limit (2 x Image.MAX_IMAGE_PIXELS) is far above ours; report it as too large.
        raise DataError(f"{name}: image too large ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{name}: not a readable image (unrecognised header)") from exc
    return int(width) * int(height)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_damage(data: bytes | memoryview) -> str | None:
    """Why a PNG file is damaged (cut off, a chunk whose CRC-32 does not match, or less image data
    than its header's size needs), or None when intact.

    libpng reports a damaged file by printing ``libpng error: ...`` straight to stderr (a line with
    no file name beside the reject line) before OpenCV returns nothing. Walking the chunks first
    (CRC-32 at C speed, ~0.1 ms for a 640x480 frame) refuses cut and bit-flipped files with a reason
    that names the chunk, and libpng never sees them.
    """
    view, pos = memoryview(data), len(_PNG_SIGNATURE)
    header, image_data = None, 0
    while pos + 12 <= len(view):
        length = int.from_bytes(view[pos:pos + 4], "big")
        kind = bytes(view[pos + 4:pos + 8]).decode("latin-1")
        end = pos + 12 + length
        if end > len(view):
            return f"truncated PNG (chunk {kind} cut off)"
        if zlib.crc32(view[pos + 4:end - 4]) != int.from_bytes(view[end - 4:end], "big"):
            return f"damaged PNG (CRC mismatch in chunk {kind})"
        if kind == "IHDR" and length >= 10:
            header = bytes(view[pos + 8:pos + 18])
        elif kind == "IDAT":
            image_data += length
        elif kind == "IEND":
            return _png_data_too_short(header, image_data)
        pos = end
    return "truncated PNG (no IEND chunk)"


# deflate cannot shrink data more than 1032:1 (a 258-byte match in 2 bits at best)
_DEFLATE_MAX_RATIO = 1032
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel


def _png_data_too_short(header: bytes | None, image_data: int) -> str | None:
    """Why a PNG's compressed image data cannot hold the image its header describes, or None.

    A header claiming 1 x 65535 over a few bytes of data passes every CRC; libpng then prints "Not
    enough image data" on stderr. The pixel bytes alone (filter bytes and interlacing only add
    to them) need at least ``pixel bytes / 1032`` bytes of deflate data.
    """
    if header is None:
        return None  # OpenCV's reader says it cleanly: no header
    width, height = int.from_bytes(header[:4], "big"), int.from_bytes(header[4:8], "big")
    bits, colour = header[8], header[9]
    pixel_bytes = height * -(-width * _PNG_CHANNELS.get(colour, 1) * bits // 8)
    if image_data * _DEFLATE_MAX_RATIO < pixel_bytes:
        return f"truncated PNG ({image_data} bytes of image data cannot hold {width}x{height})"
    return None


def encoded_damage(data: bytes | np.ndarray) -> str | None:
    """Why an encoded image is damaged in a way its decoder would not say cleanly, or None.

    A JPEG without its end-of-image marker (libjpeg fills the missing part with gray and only
    warns) and a cut, bit-flipped or too short PNG (:func:`png_damage`). Every decoder of image
    files calls this first (``decode_image`` here, ingest's reader).
    """
    view = memoryview(data.data if isinstance(data, np.ndarray) else data)
    head = bytes(view[:8])
    if head[:2] == b"\xff\xd8" and not bytes(view).rstrip(b"\0").endswith(b"\xff\xd9"):
        return "truncated JPEG (no end-of-image marker)"
    if head == _PNG_SIGNATURE:
        return png_damage(view)
    return None


# turbojpeg's colour spaces that decode to what OpenCV returns (CMYK / YCCK go to OpenCV)
_JPEG_OUTPUT = {"Gray": "GRAY", "YCbCr": "BGR", "RGB": "BGR"}


def decode_pixels(data: bytes | np.ndarray) -> np.ndarray | None:
    """Decode an encoded image as ``cv2.imdecode(data, cv2.IMREAD_UNCHANGED)`` does: (H, W) gray or
    (H, W, 3|4) BGR(A) in the file's dtype; None when it cannot be decoded.

    JPEG goes through libjpeg-turbo (``simplejpeg``) in strict mode, the same library and settings
    as OpenCV's (accurate integer DCT, smooth chroma upsampling: identical pixels, tested), except
    that data libjpeg could only decode by guessing raises instead. A JPEG whose header turbojpeg
    cannot read (CMYK, YCCK, unusual sampling) and every other format go to OpenCV.

    Raises:
        DataError: corrupt JPEG data; the message is the reason only (callers name the file).
    """
    view = data if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
    if simplejpeg is not None and view[:2].tobytes() == b"\xff\xd8":
        try:
            _, _, colour, _ = simplejpeg.decode_jpeg_header(view)
        except ValueError:  # not one turbojpeg can size up: OpenCV's lenient reader decides
            colour = None
        if colour in _JPEG_OUTPUT:
            try:
                pixels = simplejpeg.decode_jpeg(view, colorspace=_JPEG_OUTPUT[colour])
            except ValueError as exc:  # libjpeg's own words: "Corrupt JPEG data: 40 extraneous bytes ..."
                reason = str(exc).strip().rstrip(".")
                prefix = "corrupt jpeg data"
                raise DataError("corrupt JPEG data" + reason[len(prefix):] if reason.lower().startswith(prefix)
                                else f"corrupt JPEG data ({reason})") from exc
            return pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
    return cv2.imdecode(view, cv2.IMREAD_UNCHANGED)


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode one image file to uint8 ``(H, W, C)``, ``C`` in {1, 3}, RGB order (module policy).

    Args:
        path: a PNG, JPEG, BMP or TIFF file (the first page of a multi-page TIFF).
        max_pixels: refuse images with more pixels than this, checked from the header first.

    Raises:
        DataError: one line naming the file and the reason (missing, empty, too large, corrupt).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise DataError(f"{path}: empty file")
    return decode_image(data, max_pixels=max_pixels, name=path)


def decode_image(data: bytes | np.ndarray, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 name: str | Path = "image") -> np.ndarray:
    """:func:`read_image` for encoded bytes already in memory (``name`` only labels errors)."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    pixels = header_pixels(buf, name)
    if pixels > max_pixels:
        raise DataError(f"{name}: image has {pixels} pixels, more than the limit of {max_pixels} "
                        f"(raise --max-pixels to accept it)")
    if damage := encoded_damage(buf):
        raise DataError(f"{name}: {damage}")
    try:
        image = decode_pixels(buf)
    except DataError as exc:
        raise DataError(f"{name}: {exc}") from exc
    except cv2.error as exc:
        raise DataError(f"{name}: not a readable image ({str(exc).strip().splitlines()[-1]})") from exc
    if image is None or image.size == 0:
        raise DataError(f"{name}: not a readable image (corrupt or truncated)")
    return from_decoder(image, bgr=True)


def from_decoder(image: np.ndarray, bgr: bool = False) -> np.ndarray:
    """Any decoded array (H, W) / (H, W, 1-4), any numeric dtype -> uint8 (H, W, 1 or 3) RGB.

    Applies the module's policies in order: deep data to 8 bits, alpha over black, BGR -> RGB when
    ``bgr`` (OpenCV's order), equal colour channels -> one channel.
    """
    image = to_uint8(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise DataError(f"unsupported image shape {image.shape}")
    image = _composite_alpha(image)
    if image.shape[2] == 3:
        if bgr:
            image = image[:, :, ::-1]
        if np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 0], image[:, :, 2]):
            image = image[:, :, :1]
    return np.ascontiguousarray(image)


def _composite_alpha(image: np.ndarray) -> np.ndarray:
    """(H, W, 2|4) uint8 with alpha last -> (H, W, 1|3) composited over black; others unchanged."""
    if image.shape[2] not in (2, 4):
        return image
    alpha = image[:, :, -1:].astype(np.uint16)
    return ((image[:, :, :-1].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)


def to_uint8(arr: np.ndarray, bit_depth: int | None = None) -> np.ndarray:
    """Map any numeric array to uint8 by the one deep-data policy (see the module docstring).

    Args:
        arr: any shape; uint8 is returned unchanged (same object).
        bit_depth: significant bits of unsigned data (default: the dtype's, 16 for uint16).

    Returns:
        uint8 array of the same shape.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        bits = int(bit_depth) if bit_depth else arr.dtype.itemsize * 8
        wide = arr.astype(np.uint64)
        if bits < 8:  # e.g. 4-bit data in a 16-bit container: stretch the small range up
            top = (1 << bits) - 1
            return ((np.minimum(wide, top) * 255 + top // 2) // top).astype(np.uint8)
        return np.minimum(wide >> np.uint64(bits - 8), 255).astype(np.uint8)
    return stretch_to_uint8(arr)


def stretch_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Min-max stretch of the finite values to 0-255 (rounded; constant or all-NaN -> 0, NaN -> 0).

    The policy for data without a natural range (floats, signed integers), and what ``usfmae
    ingest --scale minmax`` asks for explicitly.
    """
    values = arr.astype(np.float64, copy=False)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(arr.shape, np.uint8)
    lo, hi = float(values[finite].min()), float(values[finite].max())
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    scaled = np.where(finite, (values - lo) * (255.0 / (hi - lo)), 0.0)
    return np.rint(scaled).clip(0, 255).astype(np.uint8)


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (H, W) or (H, W, 1|2|3|4) -> (H, W, channels): luminance for 1, gray replicated for 3.

    Alpha, if present, is composited over black first.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if img.ndim == 2:
        img = img[:, :, None]
    img = _composite_alpha(img)
    c = img.shape[2]
    if c == channels:
        return img
    if c == 1:
        return np.repeat(img, 3, axis=2)
    if c == 3:
        return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)[:, :, None]
    raise ValueError(f"cannot convert a {c}-channel image to {channels} channels")


@dataclass(frozen=True)
class FitGeometry:
    """Where an ``h`` x ``w`` image lies inside its ``size`` x ``size`` fitted version.

    Attributes:
        h, w: original height and width.
        size: side of the fitted square.
        policy: "pad" or "stretch".
        top, left: offset of the resized image in the square (0 for stretch).
        new_h, new_w: size of the resized image in the square (``size`` for stretch).
    """

    h: int
    w: int
    size: int
    policy: str
    top: int
    left: int
    new_h: int
    new_w: int


def fit_geometry(h: int, w: int, size: int, policy: str = "pad") -> FitGeometry:
    """The placement :func:`fit` uses for an ``h`` x ``w`` image (pad: long side = ``size``, centred)."""
    _check_policy(policy)
    if h < 1 or w < 1 or size < 1:
        raise ValueError(f"sizes must be positive, got {h}x{w} -> {size}")
    if policy == "stretch" or h == w:
        return FitGeometry(h, w, size, policy, 0, 0, size, size)
    scale = size / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    return FitGeometry(h, w, size, policy, (size - new_h) // 2, (size - new_w) // 2, new_h, new_w)


def fit(img: np.ndarray, size: int, channels: int, policy: str = "pad",
        interpolation: str = "area") -> np.ndarray:
    """Fit an image (or a label mask) into ``(size, size, channels)``.

    Args:
        img: (H, W) or (H, W, C) uint8 image; with ``interpolation="nearest"`` any dtype OpenCV
            resizes (label masks: uint8, uint16, int16, int32, float32).
        size: side of the square output.
        channels: 1 or 3 (see :func:`to_channels`; a 1-channel mask stays as it is).
        policy: "pad" (aspect kept, centred on zeros) or "stretch".
        interpolation: "area" for images, "nearest" for masks (values kept), "linear".

    Returns:
        ``(size, size, channels)`` array of ``img``'s dtype.
    """
    if interpolation not in _CV_INTERP:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.dtype == np.uint8:
        img = to_channels(img, channels)
    elif img.shape[2] != channels:
        raise ValueError(f"a non-uint8 array must already have {channels} channel(s), got {img.shape[2]}")
    h, w = img.shape[:2]
    geo = fit_geometry(h, w, size, policy)
    resized = _resize(img, geo.new_h, geo.new_w, interpolation)
    if (geo.new_h, geo.new_w) == (size, size):
        return resized
    canvas = np.zeros((size, size, channels), dtype=img.dtype)
    canvas[geo.top:geo.top + geo.new_h, geo.left:geo.left + geo.new_w] = resized
    return canvas


def unfit(arr: np.ndarray, geometry: FitGeometry, interpolation: str = "nearest") -> np.ndarray:
    """Map a model-sized array back onto the original image: the inverse placement of :func:`fit`.

    Args:
        arr: ``(size, size)`` or ``(size, size, C)`` prediction (mask, probabilities, ...).
        geometry: :func:`fit_geometry` of the original image.
        interpolation: "nearest" for masks (label values kept), "linear" or "area" for maps.

    Returns:
        ``(h, w)`` or ``(h, w, C)``, matching ``arr``'s number of dimensions and dtype.
    """
    if arr.shape[:2] != (geometry.size, geometry.size):
        raise ValueError(f"expected a {geometry.size}x{geometry.size} array, got {arr.shape[:2]}")
    if interpolation not in _CV_INTERP:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    flat = arr.ndim == 2
    content = arr[geometry.top:geometry.top + geometry.new_h, geometry.left:geometry.left + geometry.new_w]
    out = _resize(content if not flat else content[:, :, None], geometry.h, geometry.w, interpolation)
    return out[:, :, 0] if flat else out


def _resize(img: np.ndarray, h: int, w: int, interpolation: str) -> np.ndarray:
    """(H, W, C) -> (h, w, C); OpenCV drops a single channel axis, which is put back here."""
    if img.shape[:2] == (h, w):
        return np.ascontiguousarray(img)
    out = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=_CV_INTERP[interpolation])
    return out.reshape(h, w, img.shape[2])


def _check_policy(policy: str) -> None:
    if policy not in FIT_POLICIES:
        raise ValueError(f"fit policy must be 'pad' or 'stretch', got {policy!r}")
