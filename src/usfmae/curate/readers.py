"""Format readers: every kind of ultrasound file -> a stream of 2-D uint8 frames with metadata.

``read_frames(path)`` picks the reader from the file (suffix, or the DICOM ``DICM`` magic for files
without one) and yields :class:`Frame` objects:

* images (PNG, JPEG, BMP, TIFF incl. multi-page), 8 or 16 bit, gray / RGB / RGBA / palette;
* videos (MP4, AVI, MOV, ... via PyAV), sampled uniformly in time (3 frames/s by default, as the
  paper) from presentation timestamps; the choice is made from the packets before decoding, so
  unsampled B-frames (H.264, HEVC, MPEG-1/2) and unsampled intra-only frames (MJPEG) are never
  decoded, with exactly the frames of a full decode; only sampled frames are converted;
* DICOM, single or multi-frame cine (pydicom; JPEG / JPEG 2000 / RLE through pylibjpeg), sampled
  at the same rate from FrameTimeVector / FrameTime / CineRate / RecommendedDisplayFrameRate, and
  only the sampled frames are decoded;
* volumes (NIfTI via nibabel; NRRD / MHA / MHD via SimpleITK) sliced along one axis, constant
  (empty) slices skipped.

Pixel conventions: frames are ``(H, W)`` uint8 gray or ``(H, W, 3)`` uint8 RGB. RGB frames whose
three channels are identical (common for ultrasound exported as RGB) become gray. Alpha is
composited over black (:func:`usfmae.imaging.from_decoder`, the policy of every stage). Deeper data
is mapped to 8 bits by ``scale``: ``"bits"`` (default, :func:`usfmae.imaging.to_uint8`) maps the
full range of the bit depth (DICOM BitsStored, else the sample size) to 0..255, keeping absolute
intensities comparable across files and equal to what the other stages decode; ``"minmax"``
stretches each frame's (each volume's, for volumes) min..max to 0..255 (floats and signed data
always use min-max). A file that cannot be decoded raises :class:`ReadError`.

The video reader lives in :mod:`usfmae.curate.video` and the shared pieces (``Frame``,
``ReadError``, suffixes, ``to_uint8``) in :mod:`usfmae.curate.frames`; both are importable from here.
To change a video switch such as ``VIDEO_DECODER_THREADS``, set it on :mod:`usfmae.curate.video`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from usfmae.curate.frames import (  # noqa: F401 (re-exported: the readers' public names)
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    SCALES,
    VIDEO_SUFFIXES,
    VOLUME_SUFFIXES,
    Frame,
    ReadError,
    TimeSampler,
    normalize_channels,
    to_uint8,
)
from usfmae.curate.video import (  # noqa: F401 (re-exported)
    VIDEO_DECODER_THREADS,
    VIDEO_SELECTIVE_DECODE,
    VideoPlan,
    plan_video,
    read_video,
    video_frame_pixels,
)
from usfmae.errors import DataError
from usfmae.imaging import DEFAULT_MAX_PIXELS, decode_pixels, encoded_damage, header_pixels


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def detect_kind(path: str | Path) -> str | None:
    """The reader for ``path``: "image", "video", "dicom", "volume", "companion" or None.

    "companion" is the raw data file of an ``.mhd``/``.nhdr`` header, read through its header.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in DICOM_SUFFIXES:
        return "dicom"
    if suffix in VOLUME_SUFFIXES:
        return "volume"
    if suffix in (".raw", ".zraw") and any(path.with_suffix(s).exists() for s in (".mhd", ".nhdr")):
        return "companion"
    return "dicom" if _is_dicom(path) else None


def read_image(path: Path, group_id: str, scale: str = "bits", max_pixels: int | None = None) -> Iterator[Frame]:
    """PNG / JPEG / BMP / TIFF (multi-page TIFF gives one frame per page).

    ``max_pixels``: refuse a file whose header claims more pixels, before decoding anything.
    """
    data = path.read_bytes()
    if not data:
        raise ReadError("empty file")
    suffix = _suffix(path)
    damage = encoded_damage(data)
    if max_pixels is not None:
        try:
            pixels = header_pixels(data, path.name)
        except DataError as exc:
            if "too large" in str(exc):  # beyond even Pillow's own bomb limit
                raise ReadError(f"image header claims more than the limit of {max_pixels} pixels "
                                "(see --max-pixels)") from exc
            # Pillow cannot parse the header: OpenCV would not decode it either
            raise ReadError(damage or f"cannot decode {suffix or 'file'} (corrupt or truncated header)") from exc
        # a header claiming 30000x30000 over a few bytes of data is both too large and too short:
        # to the user it is a decompression bomb (see --max-pixels), so the limit speaks first
        _check_pixels(pixels, max_pixels)
    if damage:
        raise ReadError(damage)
    buf = np.frombuffer(data, np.uint8)
    if suffix in (".tif", ".tiff"):
        ok, pages = cv2.imdecodemulti(buf, cv2.IMREAD_UNCHANGED)
        pages = list(pages) if ok else []
    else:
        try:
            page = decode_pixels(buf)
        except DataError as exc:
            raise ReadError(str(exc)) from exc
        pages = [] if page is None else [page]
    if not pages:
        raise ReadError(f"cannot decode {suffix or 'file'} (corrupt or truncated)")
    for index, page in enumerate(pages):
        bit_depth = page.dtype.itemsize * 8
        yield Frame(normalize_channels(to_uint8(page, bit_depth, scale), bgr=True), index, None, bit_depth, group_id)


def _check_pixels(pixels: int, max_pixels: int, what: str = "image") -> None:
    if pixels > max_pixels:
        raise ReadError(f"{what} has {pixels} pixels, more than the limit of {max_pixels} (see --max-pixels)")


def dicom_frame_times(ds, n_frames: int) -> np.ndarray | None:
    """Seconds of each frame from FrameTimeVector, FrameTime, CineRate or RecommendedDisplayFrameRate."""
    vector = ds.get("FrameTimeVector")
    if vector is not None and len(vector) == n_frames:
        # Each entry is the increment (ms) from the previous frame; the first is 0.
        return np.cumsum(np.asarray(vector, float)) / 1000.0
    frame_time = float(ds.get("FrameTime") or 0)
    if frame_time > 0:
        return np.arange(n_frames) * frame_time / 1000.0
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = float(ds.get(keyword) or 0)
        if rate > 0:
            return np.arange(n_frames) / rate
    return None


DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: not readable frame by frame


class ModalityError(ReadError):
    """A DICOM file of a modality the run does not take (CT, MR, dose grids, ...)."""

    def __init__(self, message: str, modality: str) -> None:
        super().__init__(message)
        self.modality = modality


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """pydicom warns (``UserWarning`` and its logger) about quirks it then handles; the reader
    reports a file it cannot read in one line, so both stay silent while pydicom runs."""
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _palette_bits(ds) -> int:
    """Bits actually used by a palette's entries: 8 or 16.

    The descriptor says 16 bits for every palette we have seen, but some scanners (and
    big-endian re-encodings) store 8-bit entries in 16-bit words (PS3.3 C.7.6.3.1.5 warns of it);
    dividing those by 256 turns the whole image black. The entries themselves tell.
    """
    from pydicom.pixels import apply_color_lut

    n_entries, first = (int(v) for v in ds.RedPaletteColorLookupTableDescriptor[:2])
    n_entries = n_entries or 65536
    dtype = np.uint8 if int(ds.get("BitsAllocated") or 8) == 8 and first + n_entries <= 256 else np.uint16
    lut = apply_color_lut(np.arange(first, first + n_entries).astype(dtype), ds)
    return 8 if int(lut.max()) <= 255 else 16


def read_dicom(path: Path, group_id: str, fps: float = 3.0, scale: str = "bits",
               modalities: tuple[str, ...] = (), max_pixels: int | None = None) -> Iterator[Frame]:
    """Single- or multi-frame DICOM; cine sampled at ``fps``, only sampled frames decoded.

    Every transfer syntax pydicom decodes is read as pydicom decodes it: little/big endian,
    deflate, RLE, JPEG baseline/lossless/2000 (pylibjpeg), palette colour (8-bit entries in 16-bit
    words are detected), YBR converted to RGB. ``modalities`` (e.g. ``("US",)``) rejects any other
    Modality before pixels are decoded; ``max_pixels`` rejects frames larger than that from the
    header. pydicom's warnings are silenced: a file it cannot read is one :class:`ReadError`.
    """
    import pydicom
    from pydicom.pixels import iter_pixels, pixel_array

    with _quiet():
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # pydicom raises many types for broken files
            raise ReadError(f"not a readable DICOM file: {_first_line(exc)}") from exc
        modality = str(ds.get("Modality") or "")
        if modalities and modality.upper() not in modalities:
            raise ModalityError(f"modality {modality or 'unknown'}, not {'/'.join(modalities)} (see --modality)",
                                modality)
        if "Rows" not in ds or "Columns" not in ds:
            raise ReadError("DICOM without image pixels")
        try:
            rows, cols = int(ds.Rows or 0), int(ds.Columns or 0)
            n_frames = int(ds.get("NumberOfFrames") or 1)
            times = dicom_frame_times(ds, n_frames) if n_frames > 1 else None
            photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
            bit_depth = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
            signed = int(ds.get("PixelRepresentation") or 0) == 1
            lut_bits = _palette_bits(ds) if photometric == "PALETTE COLOR" else 0
        except Exception as exc:
            raise ReadError(f"DICOM header cannot be read: {_first_line(exc)}") from exc
    if max_pixels is not None:
        _check_pixels(rows * cols, max_pixels, f"frame ({cols}x{rows})")
    uid, patient = ds.get("StudyInstanceUID"), ds.get("PatientID")
    group_id = f"study:{uid}" if uid else f"patient:{patient}" if patient else group_id
    if times is None:
        # One frame, or cine without timing: keep all (near-duplicate removal thins the latter).
        indices = list(range(n_frames))
    else:
        step = float(np.median(np.diff(times))) if n_frames > 1 else 0.0
        sampler = TimeSampler(fps, 0.5 * step)
        indices = [i for i in range(n_frames) if sampler.want(float(times[i] - times[0]))]
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    done = 0
    try:
        if syntax != DEFLATED:
            # Frame by frame from the file: only the sampled frames are decoded.
            pixels = iter_pixels(path, indices=indices)
            try:
                for index in indices:
                    with _quiet():
                        arr = next(pixels)
                    yield _dicom_frame(arr, ds, index, times, photometric, lut_bits, bit_depth, signed, scale,
                                       group_id, modality)
                    done += 1
                return
            except StopIteration as exc:
                raise ReadError("DICOM has fewer frames than NumberOfFrames says") from exc
            except Exception:
                if done:  # frames already given: do not start over
                    raise
        # Deflated files (not seekable frame by frame) and files whose frame index is broken (an
        # odd Basic Offset Table): pydicom reads the whole dataset, then each sampled frame.
        with _quiet():
            full = pydicom.dcmread(path)
        for index in indices:
            with _quiet():
                arr = pixel_array(full, index=index if n_frames > 1 else None)
            yield _dicom_frame(arr, ds, index, times, photometric, lut_bits, bit_depth, signed, scale, group_id,
                               modality)
    except ReadError:
        raise
    except Exception as exc:
        raise ReadError(f"DICOM pixel data cannot be decoded: {_first_line(exc)}") from exc


def _dicom_frame(arr: np.ndarray, ds, index: int, times, photometric: str, lut_bits: int, bit_depth: int,
                 signed: bool, scale: str, group_id: str, modality: str) -> Frame:
    from pydicom.pixels import apply_color_lut

    if photometric == "PALETTE COLOR":
        with _quiet():
            arr = apply_color_lut(arr, ds)
        arr = arr.astype(np.uint8) if lut_bits == 8 else to_uint8(arr, 16, "bits")
    elif arr.dtype != np.uint8:
        arr = to_uint8(arr, bit_depth, "minmax" if signed else scale)
    if photometric == "MONOCHROME1":
        arr = 255 - arr  # MONOCHROME1 shows low values as white
    t = None if times is None else round(float(times[index] - times[0]), 6)
    return Frame(normalize_channels(arr), index, t, bit_depth, group_id, modality)


VOLUME_PIXELS_FACTOR = 16  # a volume may hold this many max-pixel frames' worth of voxels


def _check_volume(shape: tuple[int, ...], max_pixels: int | None) -> None:
    """Refuse, from the header's shape, volumes whose slices or whole would exhaust memory."""
    if max_pixels is None:
        return
    dims = sorted((int(n) for n in shape[:3]), reverse=True)
    _check_pixels(int(np.prod(dims[:2])) if len(dims) >= 2 else int(np.prod(dims)), max_pixels, "slice")
    _check_pixels(int(np.prod([int(n) for n in shape])), VOLUME_PIXELS_FACTOR * max_pixels, "volume")


def _load_volume(path: Path, max_pixels: int | None = None) -> tuple[np.ndarray, int]:
    """Volume as an (X, Y, Z[, T]) array in NIfTI index order, plus its bit depth."""
    if _suffix(path) in (".nii", ".nii.gz"):
        import nibabel as nib

        try:
            image = nib.load(str(path))
        except Exception as exc:
            raise ReadError(f"cannot read NIfTI: {exc}") from exc
        _check_volume(tuple(image.shape), max_pixels)
        try:
            arr = np.asanyarray(image.dataobj)
        except Exception as exc:
            raise ReadError(f"cannot read NIfTI: {exc}") from exc
    else:
        import SimpleITK as sitk

        try:
            info = sitk.ImageFileReader()
            info.SetFileName(str(path))
            info.ReadImageInformation()
            _check_volume(tuple(info.GetSize()), max_pixels)
            image = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise ReadError(f"cannot read volume: {str(exc).strip().splitlines()[-1]}") from exc
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise ReadError("multi-component (vector/colour) volumes are not supported")
        # SimpleITK gives (Z, Y, X); reverse so that --axis means the same axis as for NIfTI.
        arr = sitk.GetArrayFromImage(image).transpose(tuple(range(image.GetDimension()))[::-1])
    if arr.dtype.fields is not None:
        raise ReadError("structured (RGB) NIfTI volumes are not supported")
    return arr, arr.dtype.itemsize * 8


def read_volume(path: Path, group_id: str, axis: int = 2, scale: str = "bits",
                max_pixels: int | None = None) -> Iterator[Frame]:
    """Slices of a 2-D, 3-D or 4-D volume along ``axis``; 4-D volumes are sliced per time point.

    The slice of an (X, Y, Z) volume at z is shown as (Y, X) rows x columns; the intensity mapping
    to 8 bits is computed once per volume so slices stay comparable. Constant slices are skipped.
    """
    arr, bit_depth = _load_volume(path, max_pixels)
    arr = arr.reshape([n for n in arr.shape if n != 1] or [1])
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim > 4:
        raise ReadError(f"{arr.ndim}-D volumes are not supported")
    if not 0 <= axis <= 2:
        raise ReadError(f"slice axis {axis} out of range for a 3-D volume")
    vol = to_uint8(arr, bit_depth, scale)
    volumes = [vol] if vol.ndim == 3 else [vol[..., t] for t in range(vol.shape[3])]
    n_slices = vol.shape[axis]
    for t, v in enumerate(volumes):
        for s in range(n_slices):
            sl = np.take(v, s, axis=axis).T
            if sl.max() == sl.min():
                continue
            yield Frame(np.ascontiguousarray(sl), t * n_slices + s, None, bit_depth, group_id)


def read_frames(path: str | Path, group_id: str | None = None, fps: float = 3.0, axis: int = 2,
                scale: str = "bits", modalities: tuple[str, ...] = (),
                max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Iterator[Frame]:
    """Frames of any supported file (see the module docstring).

    Args:
        path: the file.
        group_id: group for frames whose file carries none (defaults to the path).
        fps: sampling rate for video and DICOM cine; <= 0 keeps every frame.
        axis: slicing axis for volumes (0, 1, 2 in NIfTI x, y, z order).
        scale: "minmax" or "bits" mapping of >8-bit data.
        modalities: DICOM Modality values to accept (e.g. ``("US",)``); empty accepts all. Other
            formats carry no modality and are always read.
        max_pixels: refuse frames (and slices; volumes above 16x this) with more pixels, checked
            from the file's header before decoding; None: no limit.

    Raises:
        ReadError: the file is empty, corrupt, truncated, too large or of an unsupported type;
            :class:`ModalityError` for a DICOM of another modality.
    """
    path = Path(path)
    group_id = group_id or str(path)
    if path.stat().st_size == 0:
        raise ReadError("empty file")
    kind = detect_kind(path)
    if kind == "image":
        return read_image(path, group_id, scale, max_pixels)
    if kind == "video":
        return read_video(path, group_id, fps, max_pixels=max_pixels)
    if kind == "dicom":
        return read_dicom(path, group_id, fps, scale, modalities, max_pixels)
    if kind == "volume":
        return read_volume(path, group_id, axis, scale, max_pixels)
    raise ReadError(f"unsupported file type {_suffix(path) or '(no suffix)'}")
