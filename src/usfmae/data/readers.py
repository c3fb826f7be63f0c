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
composited over black. Deeper data is mapped to 8 bits by ``scale``: ``"minmax"`` (default) stretches
each frame's (each volume's, for volumes) min..max to 0..255; ``"bits"`` divides by
``2 ** (bit_depth - 8)``, keeping absolute intensities comparable across files (floats and signed
data always use min-max). A file that cannot be decoded raises :class:`ReadError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from usfmae.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".tif", ".tiff")
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
    """

    pixels: np.ndarray
    index: int
    timestamp: float | None
    bit_depth: int
    group_id: str


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


def to_uint8(arr: np.ndarray, bit_depth: int, scale: str = "minmax") -> np.ndarray:
    """Map any numeric array to uint8 (see the module docstring for ``scale``)."""
    if arr.dtype == np.uint8:
        return arr
    if scale == "bits" and np.issubdtype(arr.dtype, np.unsignedinteger) and bit_depth > 8:
        return np.minimum(arr >> (bit_depth - 8), 255).astype(np.uint8)
    arr = arr.astype(np.float32, copy=False)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.nan_to_num((arr - lo) * (255.0 / (hi - lo))).round().clip(0, 255).astype(np.uint8)


def normalize_channels(arr: np.ndarray, bgr: bool = False) -> np.ndarray:
    """(H,W) / (H,W,1..4) uint8 -> (H,W) or (H,W,3); alpha over black; equal RGB channels -> gray."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3:
        if arr.shape[2] in (2, 4):  # gray+alpha or colour+alpha: composite over black
            alpha = arr[..., -1:].astype(np.uint16)
            arr = ((arr[..., :-1].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
            if arr.shape[2] == 1:
                arr = arr[..., 0]
        if arr.ndim == 3:
            arr = arr[..., ::-1] if bgr else arr
            if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
                arr = arr[..., 0]
    return np.ascontiguousarray(arr)


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


def read_image(path: Path, group_id: str, scale: str = "minmax") -> Iterator[Frame]:
    """PNG / JPEG / BMP / TIFF (multi-page TIFF gives one frame per page)."""
    data = path.read_bytes()
    if not data:
        raise ReadError("empty file")
    suffix = _suffix(path)
    if suffix in (".jpg", ".jpeg", ".jpe") and not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        # libjpeg fills a cut-off JPEG with gray and only warns: refuse it here instead.
        raise ReadError("truncated JPEG (no end-of-image marker)")
    buf = np.frombuffer(data, np.uint8)
    if suffix in (".tif", ".tiff"):
        ok, pages = cv2.imdecodemulti(buf, cv2.IMREAD_UNCHANGED)
        pages = list(pages) if ok else []
    else:
        page = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        pages = [] if page is None else [page]
    if not pages:
        raise ReadError(f"cannot decode {suffix or 'file'} (corrupt or truncated)")
    for index, page in enumerate(pages):
        bit_depth = page.dtype.itemsize * 8
        yield Frame(normalize_channels(to_uint8(page, bit_depth, scale), bgr=True), index, None, bit_depth, group_id)


# Decoder threads per video. Ingest already runs one worker process per core, and FFmpeg's frame
# threads cost ~1.8x the CPU per frame (H.264 640x480: 134 vs 73 ms per 300 frames), so one thread
# is the per-core optimum; 0 lets FFmpeg choose (frame + slice threads: lower latency for one file).
VIDEO_DECODER_THREADS = 1
# Plan the decoding from packet timestamps (see ``read_video``); False decodes every frame (A/B checks).
VIDEO_SELECTIVE_DECODE = True
# Decoders whose "skip non-reference frames" (AVDISCARD_NONREF) drops only frames no other frame
# predicts from. MPEG-4 part 2 is left out: packed B-frames in AVI put two frames in one packet.
_NONREF_SKIP_CODECS = frozenset({"h264", "hevc", "mpeg1video", "mpeg2video"})
# Containers that store presentation timestamps. AVI (and other VfW-era formats) store decode order
# only, so the timestamps of reordered (B-frame) video there say nothing about display order.
_PTS_CONTAINERS = frozenset({"mov", "mp4", "matroska", "webm", "mpeg", "mpegts", "ogg", "flv"})
# 8-bit planar formats converted by a lookup table on the luma plane when the chroma is neutral.
_LUMA_FORMATS = frozenset({"gray", "yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p",
                           "yuv440p", "yuvj440p", "yuv411p", "yuv410p"})


@dataclasses.dataclass
class VideoPlan:
    """Which frames of a video to keep, worked out from packet timestamps before decoding.

    Attributes:
        mode: "intra" (every packet decodes alone: only sampled packets are decoded), "nonref"
            (sampled packets decoded in full, other non-reference frames skipped) or "all" (every
            frame decoded; only sampled ones converted).
        picks: presentation timestamp (stream time base) -> frame index, for the sampled frames.
        first_pts: timestamp of the first frame (timestamps are reported relative to it).
        n_frames: frames in the stream.
    """

    mode: str
    picks: dict[int, int]
    first_pts: int
    n_frames: int


def _packet_times(container, stream) -> tuple[list[int] | None, bool]:
    """Presentation timestamps of all packets (None if one lacks it) and whether all are keyframes."""
    import av

    pts, all_key = [], True
    try:
        for packet in container.demux(stream):
            if not packet.size or packet.is_discard:  # end-of-stream marker; frames FFmpeg drops itself
                continue
            if packet.pts is None:
                return None, False
            pts.append(packet.pts)
            all_key = all_key and packet.is_keyframe
    except av.error.FFmpegError:  # e.g. truncated: decode what can be decoded, without a plan
        return None, False
    return pts, all_key


def plan_video(container, stream, fps: float) -> VideoPlan | None:
    """Demux (without decoding) the whole stream and choose the frames ``TimeSampler`` keeps.

    The selection is exactly the one of decoding every frame: frame i is the i-th presentation
    timestamp. Returns None (the caller decodes everything) when timestamps are missing or repeated,
    or may not be presentation times (inter-coded video in AVI and other decode-order containers).
    Leaves the container at its start.
    """
    codec = stream.codec_context.codec
    trusted = bool(_PTS_CONTAINERS.intersection(container.format.name.split(",")))
    if not (trusted or codec.intra_only):
        return None
    pts, all_key = _packet_times(container, stream)
    container.seek(0, stream=stream)  # back to the start for the decoding pass
    if not pts or len(set(pts)) != len(pts):
        return None
    pts.sort()
    rate = float(stream.average_rate or stream.guessed_rate or 30)
    base, sampler = float(stream.time_base), TimeSampler(fps, 0.5 / rate)
    picks = {p: i for i, p in enumerate(pts) if sampler.want((p - pts[0]) * base)}
    if codec.intra_only or (all_key and trusted):
        mode = "intra"
    else:
        mode = "nonref" if codec.name in _NONREF_SKIP_CODECS else "all"
    return VideoPlan(mode, picks, pts[0], len(pts))


def _luma_lut(frame) -> np.ndarray | None:
    """Y -> gray value that ``to_ndarray(format="rgb24")`` gives a frame of this format with neutral
    chroma, measured through the same swscale call (so it is exact), or None if that is not gray."""
    import av

    width, rows = frame.width, max(2, -(-256 // frame.width) * 2)
    probe = av.VideoFrame(width, rows, frame.format.name)
    probe.color_range, probe.colorspace = frame.color_range, frame.colorspace
    values = (np.arange(rows * width) % 256).astype(np.uint8).reshape(rows, width)
    for k, plane in enumerate(probe.planes):
        buf = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        if k == 0:
            buf[:, :width] = values
        else:
            buf[:] = 128
    rgb = probe.to_ndarray(format="rgb24")
    lut = np.zeros(256, np.uint8)
    lut[values.ravel()] = rgb[..., 0].ravel()
    if not (rgb == lut[values][..., None]).all():  # not gray, or not a function of Y alone
        return None
    return lut


def _plane(plane) -> np.ndarray:
    """A frame plane as an (H, W) uint8 view without row padding."""
    return np.frombuffer(plane, np.uint8, plane.height * plane.line_size).reshape(
        plane.height, plane.line_size)[:, :plane.width]


def video_frame_pixels(frame, luts: dict) -> np.ndarray:
    """A decoded frame as (H, W) gray or (H, W, 3) RGB uint8, equal to ``normalize_channels`` of its
    RGB conversion. Gray video (neutral chroma) skips that conversion: a lookup table maps the luma
    plane straight to the same values (about 4x less work per frame); ``luts`` caches the tables."""
    name = frame.format.name
    if name in _LUMA_FORMATS:
        planes = frame.planes
        if all(cv2.minMaxLoc(_plane(p))[:2] == (128.0, 128.0) for p in planes[1:3]):
            key = (name, frame.width, frame.color_range, frame.colorspace)
            if key not in luts:
                luts[key] = _luma_lut(frame)
            if luts[key] is not None:
                return cv2.LUT(_plane(planes[0]), luts[key])
    return normalize_channels(frame.to_ndarray(format="rgb24"))


def read_video(path: Path, group_id: str, fps: float = 3.0, threads: int | None = None,
               selective: bool | None = None) -> Iterator[Frame]:
    """Video frames sampled at ``fps`` from their presentation timestamps.

    With ``selective`` (default ``VIDEO_SELECTIVE_DECODE``: True) the packets are first demuxed to
    choose the frames (:func:`plan_video`); then intra-only video (MJPEG, ...) decodes just the chosen
    packets, and H.264 / HEVC / MPEG-1/2 skip the non-reference frames (B-frames) not chosen. The
    frames, indices and timestamps are identical to decoding everything (tested), for a fraction of
    the decoding. ``threads``: decoder threads (default ``VIDEO_DECODER_THREADS``; 0 = FFmpeg's choice).

    Yields:
        Frame: pixels (H, W) gray or (H, W, 3) RGB uint8; index = position in presentation order;
        timestamp = seconds after the first frame.

    Raises:
        ReadError: the file cannot be opened, or a packet cannot be decoded (after the frames that
            could, so a truncated clip keeps its beginning).
    """
    import av  # imported here: only video ingest pays for FFmpeg start-up

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise ReadError(f"cannot open video: {exc}") from exc
    with container:
        if not container.streams.video:
            raise ReadError("no video stream")
        stream = container.streams.video[0]
        threads = VIDEO_DECODER_THREADS if threads is None else threads
        if threads != 1:
            stream.thread_type = "AUTO"  # frame + slice threads inside FFmpeg
        stream.thread_count = threads  # PyAV's default is slice threads, one per core
        luts: dict = {}
        try:
            selective = VIDEO_SELECTIVE_DECODE if selective is None else selective
            plan = plan_video(container, stream, fps) if selective and fps > 0 else None
            yielded = 0
            if plan is not None:
                for index, t, frame in _decode_planned(container, stream, plan):
                    yielded += 1
                    yield Frame(video_frame_pixels(frame, luts), index, round(t, 6), 8, group_id)
                if not yielded:  # decoder timestamps unlike the packets': start again, decode all
                    container.seek(0, stream=stream)
                    stream.codec_context.flush_buffers()
                    stream.codec_context.skip_frame = "DEFAULT"
            if not yielded:
                for index, t, frame in _decode_all(container, stream, fps):
                    yield Frame(video_frame_pixels(frame, luts), index, round(t, 6), 8, group_id)
        except av.error.FFmpegError as exc:
            raise ReadError(f"video decoding failed: {exc}") from exc


def _decoded(stream, packets: Iterator) -> Iterator:
    """Frames of ``packets`` (pulled one at a time, so per-packet decoder settings apply). At the
    first packet that cannot be demuxed or decoded (a truncated or corrupt file) the frames still
    buffered in the decoder come out, then :class:`ReadError`."""
    import av

    while True:
        try:
            packet = next(packets, None)
            if packet is None:
                return
            frames = stream.decode(packet)
        except av.error.FFmpegError as exc:
            try:
                yield from stream.decode(None)  # drain the frames waiting for reordering
            except av.error.FFmpegError:
                pass
            raise ReadError(f"video decoding failed: {exc}") from exc
        yield from frames


def _decode_planned(container, stream, plan: VideoPlan) -> Iterator[tuple[int, float, object]]:
    """(index, seconds, frame) of the planned frames, decoding as little as the plan allows."""
    base = float(stream.time_base)

    def packets() -> Iterator:
        ctx, skip = stream.codec_context, "DEFAULT"
        for packet in container.demux(stream):
            wanted = packet.pts in plan.picks or not packet.size  # (an empty packet flushes)
            if plan.mode == "intra" and not wanted:
                continue  # never sent to the decoder
            if plan.mode == "nonref" and skip != ("DEFAULT" if wanted else "NONREF"):
                # Read by the decoder for each packet it is given (and copied to frame threads).
                skip = ctx.skip_frame = "DEFAULT" if wanted else "NONREF"
            yield packet

    for frame in _decoded(stream, packets()):
        index = plan.picks.get(frame.pts)
        if index is not None:
            yield index, (frame.pts - plan.first_pts) * base, frame


def _decode_all(container, stream, fps: float) -> Iterator[tuple[int, float, object]]:
    """(index, seconds, frame) of sampled frames, decoding every frame (no usable timestamps)."""
    rate, base = float(stream.average_rate or stream.guessed_rate or 30), stream.time_base
    sampler, t0 = TimeSampler(fps, 0.5 / rate), None
    for i, frame in enumerate(_decoded(stream, container.demux(stream))):
        # frame.time is NaN for frames drained by a flush (no packet time base): use the stream's.
        t = float(frame.pts * base) if frame.pts is not None and base else i / rate
        t0 = t if t0 is None else t0
        if sampler.want(t - t0):
            yield i, t - t0, frame


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


def read_dicom(path: Path, group_id: str, fps: float = 3.0, scale: str = "minmax") -> Iterator[Frame]:
    """Single- or multi-frame DICOM; cine sampled at ``fps``, only sampled frames decoded."""
    import pydicom
    from pydicom.pixels import apply_color_lut, iter_pixels

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for broken files
        raise ReadError(f"not a readable DICOM file: {exc}") from exc
    if "Rows" not in ds or "Columns" not in ds:
        raise ReadError("DICOM without image pixels")
    uid, patient = ds.get("StudyInstanceUID"), ds.get("PatientID")
    group_id = f"study:{uid}" if uid else f"patient:{patient}" if patient else group_id
    n_frames = int(ds.get("NumberOfFrames") or 1)
    times = dicom_frame_times(ds, n_frames) if n_frames > 1 else None
    if times is None:
        # One frame, or cine without timing: keep all (near-duplicate removal thins the latter).
        indices = list(range(n_frames))
    else:
        step = float(np.median(np.diff(times))) if n_frames > 1 else 0.0
        sampler = TimeSampler(fps, 0.5 * step)
        indices = [i for i in range(n_frames) if sampler.want(float(times[i] - times[0]))]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    bit_depth = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    try:
        for index, arr in zip(indices, iter_pixels(path, indices=indices), strict=True):
            if photometric == "PALETTE COLOR":
                arr = apply_color_lut(arr, ds)
                arr = to_uint8(arr, 16, "bits") if arr.dtype != np.uint8 else arr
            elif arr.dtype != np.uint8:
                arr = to_uint8(arr, bit_depth, "minmax" if signed else scale)
            if photometric == "MONOCHROME1":
                arr = 255 - arr  # MONOCHROME1 shows low values as white
            t = None if times is None else round(float(times[index] - times[0]), 6)
            yield Frame(normalize_channels(arr), index, t, bit_depth, group_id)
    except ReadError:
        raise
    except Exception as exc:
        raise ReadError(f"DICOM pixel data cannot be decoded: {exc}") from exc


def _load_volume(path: Path) -> tuple[np.ndarray, int]:
    """Volume as an (X, Y, Z[, T]) array in NIfTI index order, plus its bit depth."""
    if _suffix(path) in (".nii", ".nii.gz"):
        import nibabel as nib

        try:
            arr = np.asanyarray(nib.load(str(path)).dataobj)
        except Exception as exc:
            raise ReadError(f"cannot read NIfTI: {exc}") from exc
    else:
        import SimpleITK as sitk

        try:
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


def read_volume(path: Path, group_id: str, axis: int = 2, scale: str = "minmax") -> Iterator[Frame]:
    """Slices of a 2-D, 3-D or 4-D volume along ``axis``; 4-D volumes are sliced per time point.

    The slice of an (X, Y, Z) volume at z is shown as (Y, X) rows x columns; the intensity mapping
    to 8 bits is computed once per volume so slices stay comparable. Constant slices are skipped.
    """
    arr, bit_depth = _load_volume(path)
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
                scale: str = "minmax") -> Iterator[Frame]:
    """Frames of any supported file (see the module docstring).

    Args:
        path: the file.
        group_id: group for frames whose file carries none (defaults to the path).
        fps: sampling rate for video and DICOM cine; <= 0 keeps every frame.
        axis: slicing axis for volumes (0, 1, 2 in NIfTI x, y, z order).
        scale: "minmax" or "bits" mapping of >8-bit data.

    Raises:
        ReadError: the file is empty, corrupt, truncated or of an unsupported type.
    """
    path = Path(path)
    group_id = group_id or str(path)
    if path.stat().st_size == 0:
        raise ReadError("empty file")
    kind = detect_kind(path)
    if kind == "image":
        return read_image(path, group_id, scale)
    if kind == "video":
        return read_video(path, group_id, fps)
    if kind == "dicom":
        return read_dicom(path, group_id, fps, scale)
    if kind == "volume":
        return read_volume(path, group_id, axis, scale)
    raise ReadError(f"unsupported file type {_suffix(path) or '(no suffix)'}")
