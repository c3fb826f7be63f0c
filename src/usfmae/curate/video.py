"""Video reader: PyAV (FFmpeg) decoding of MP4, AVI, MOV, ... into frames sampled uniformly in time.

:func:`read_video` yields :class:`~usfmae.curate.readers.Frame` objects sampled at ``fps`` (3 frames/s
by default, as the paper) from presentation timestamps. :func:`plan_video` first demuxes the packets
(no decoding) and chooses the frames :class:`~usfmae.curate.readers.TimeSampler` keeps, so unsampled
B-frames (H.264, HEVC, MPEG-1/2) and unsampled intra-only frames (MJPEG) are never decoded, with
exactly the frames of a full decode. Only sampled frames are converted: :func:`video_frame_pixels`
maps the luma plane of gray video (neutral chroma) through a lookup table instead of an RGB
conversion, with identical results.

Callers normally go through :func:`usfmae.curate.readers.read_frames`, which dispatches here; every
public name of this module is also importable from :mod:`usfmae.curate.readers`.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from usfmae.curate.frames import Frame, ReadError, TimeSampler, normalize_channels

# Decoder threads per video. Ingest already runs one worker process per core, and FFmpeg's frame
# threads cost ~1.8x the CPU per frame (H.264 640x480: 134 vs 73 ms per 300 frames), so one thread
# is the per-core optimum; 0 lets FFmpeg choose (frame + slice threads: lower latency for one file).
VIDEO_DECODER_THREADS = 1
# Plan the decoding from packet timestamps (see ``read_video``); False decodes every frame (A/B checks).
VIDEO_SELECTIVE_DECODE = True
# Files up to this size are read once: the planning pass keeps the packets (the compressed stream)
# and the decoder takes them from memory. Larger files are demuxed a second time instead.
VIDEO_ONE_PASS_BYTES = 64 << 20
# Decoders whose "skip non-reference frames" (AVDISCARD_NONREF) drops only frames no other frame
# predicts from. MPEG-4 part 2 is left out: packed B-frames in AVI put two frames in one packet.
_NONREF_SKIP_CODECS = frozenset({"h264", "hevc", "mpeg1video", "mpeg2video"})
# Containers that store presentation timestamps. AVI (and other VfW-era formats) store decode order
# only, so the timestamps of reordered (B-frame) video there say nothing about display order.
_PTS_CONTAINERS = frozenset({"mov", "mp4", "matroska", "webm", "mpeg", "mpegts", "ogg", "flv"})
# 8-bit planar formats converted by a lookup table on the luma plane when the chroma is neutral.
# Frames a truncated or damaged stream may have lost around the cut: with B-frames a lost packet can
# sit this far (H.264's largest reordering) before frames already decoded, shifting their position
# in presentation order. Sampled frames are therefore released only once a frame this many
# positions later has been read, and the ones still held back are dropped when the stream fails.
_REORDER_HOLD = 16
_LUMA_FORMATS = frozenset({"gray", "yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p",
                           "yuv440p", "yuvj440p", "yuv411p", "yuv410p"})
# Luma lookup tables by (format, width, range, colour space), kept across videos: measuring one sets
# up a swscale conversion (about 1% of a 10-second clip's ingest), and a worker's videos mostly share
# a few formats. Bounded: cleared when it would hold more than _LUT_CACHE_SIZE tables.
_LUTS: dict = {}
_LUT_CACHE_SIZE = 64


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
        n_packets: non-empty packets demuxed (frames FFmpeg discards included), to compare with
            the container's frame count (fewer: the file is truncated).
        packets: every packet of the stream in decode order, kept by the planning pass for the
            decoding pass (None: demux again).
    """

    mode: str
    picks: dict[int, int]
    first_pts: int
    n_frames: int
    n_packets: int = 0
    packets: list | None = None


def _packet_times(container, stream, kept: list | None) -> tuple[list[int] | None, bool, int]:
    """Presentation timestamps of all packets (None if one lacks it), whether all are keyframes, and
    the number of non-empty packets; every packet is appended to ``kept`` unless it is None."""
    import av

    pts, all_key, count = [], True, 0
    try:
        for packet in container.demux(stream):
            if kept is not None:
                kept.append(packet)
            if not packet.size:  # end-of-stream marker
                continue
            count += 1
            if packet.is_discard:  # frames FFmpeg drops itself (edit lists)
                continue
            if packet.pts is None:
                return None, False, count
            pts.append(packet.pts)
            all_key = all_key and packet.is_keyframe
    except av.error.FFmpegError:  # e.g. truncated: decode what can be decoded, without a plan
        return None, False, count
    return pts, all_key, count


def plan_video(container, stream, fps: float) -> VideoPlan | None:
    """Demux (without decoding) the whole stream and choose the frames ``TimeSampler`` keeps.

    The selection is exactly the one of decoding every frame: frame i is the i-th presentation
    timestamp. Returns None (the caller decodes everything) when timestamps are missing or repeated,
    or may not be presentation times (inter-coded video in AVI and other decode-order containers).
    Leaves the container at its start (or, for files up to ``VIDEO_ONE_PASS_BYTES``, at its end
    with the packets in ``VideoPlan.packets``: one read of the file).
    """
    codec = stream.codec_context.codec
    trusted = bool(_PTS_CONTAINERS.intersection(container.format.name.split(",")))
    if not (trusted or codec.intra_only):
        return None
    size = getattr(container, "size", 0) or 0
    kept: list | None = [] if 0 < size <= VIDEO_ONE_PASS_BYTES else None
    pts, all_key, count = _packet_times(container, stream, kept)
    usable = bool(pts) and len(set(pts)) == len(pts)
    if kept is None or not usable:
        container.seek(0, stream=stream)  # back to the start for the decoding pass
    if not usable:
        return None
    pts.sort()
    rate = float(stream.average_rate or stream.guessed_rate or 30)
    base, sampler = float(stream.time_base), TimeSampler(fps, 0.5 / rate)
    picks = {p: i for i, p in enumerate(pts) if sampler.want((p - pts[0]) * base)}
    if codec.intra_only or (all_key and trusted):
        mode = "intra"
    else:
        mode = "nonref" if codec.name in _NONREF_SKIP_CODECS else "all"
    return VideoPlan(mode, picks, pts[0], len(pts), count, kept)


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
                if len(luts) >= _LUT_CACHE_SIZE:
                    luts.clear()
                luts[key] = _luma_lut(frame)
            if luts[key] is not None:
                return cv2.LUT(_plane(planes[0]), luts[key])
    return normalize_channels(frame.to_ndarray(format="rgb24"))


def read_video(path: Path, group_id: str, fps: float = 3.0, threads: int | None = None,
               selective: bool | None = None, max_pixels: int | None = None) -> Iterator[Frame]:
    """Video frames sampled at ``fps`` from their presentation timestamps.

    With ``selective`` (default ``VIDEO_SELECTIVE_DECODE``: True) the packets are first demuxed to
    choose the frames (:func:`plan_video`); then intra-only video (MJPEG, ...) decodes just the chosen
    packets, and H.264 / HEVC / MPEG-1/2 skip the non-reference frames (B-frames) not chosen. The
    frames, indices and timestamps are identical to decoding everything (tested), for a fraction of
    the decoding. ``threads``: decoder threads (default ``VIDEO_DECODER_THREADS``; 0 = FFmpeg's choice).
    ``max_pixels``: refuse a stream whose frames are larger (from the stream header, nothing decoded).

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
        width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        if max_pixels is not None and width * height > max_pixels:
            raise ReadError(f"video frames have {width * height} pixels ({width}x{height}), more than the limit "
                            f"of {max_pixels} (see --max-pixels)")
        threads = VIDEO_DECODER_THREADS if threads is None else threads
        if threads != 1:
            stream.thread_type = "AUTO"  # frame + slice threads inside FFmpeg
        stream.thread_count = threads  # PyAV's default is slice threads, one per core
        luts = _LUTS
        expected = int(stream.frames or 0)  # the container's frame count (0: not recorded)
        try:
            selective = VIDEO_SELECTIVE_DECODE if selective is None else selective
            plan = plan_video(container, stream, fps) if selective and fps > 0 else None
            yielded, packets = 0, [0]
            if plan is not None:
                packets[0] = plan.n_packets
                for index, t, frame in _held_back(_decode_planned(container, stream, plan), expected, packets):
                    yielded += 1
                    yield Frame(video_frame_pixels(frame, luts), index, round(t, 6), 8, group_id)
                if not yielded:  # decoder timestamps unlike the packets': start again, decode all
                    container.seek(0, stream=stream)
                    stream.codec_context.flush_buffers()
                    stream.codec_context.skip_frame = "DEFAULT"
            if not yielded:
                packets[0] = 0
                decoded = _decode_all(container, stream, fps, packets)
                for index, t, frame in _held_back(decoded, expected, packets):
                    yield Frame(video_frame_pixels(frame, luts), index, round(t, 6), 8, group_id)
        except av.error.FFmpegError as exc:
            raise ReadError(f"video decoding failed: {exc}") from exc


def _held_back(frames: Iterator[tuple[int, float, object]], expected: int,
               packets: list[int]) -> Iterator[tuple[int, float, object]]:
    """``frames`` (index, seconds, frame), each released once one ``_REORDER_HOLD`` positions later
    was read, so that a failing or truncated stream (fewer packets than ``expected``; ``packets[0]``
    holds the count read) yields the same frames whatever was decoded around the cut, then raises
    :class:`ReadError`. A complete stream yields every frame."""
    pending: collections.deque = collections.deque()
    for item in frames:  # a decoding error propagates from here: the frames held back are dropped
        while pending and pending[0][0] + _REORDER_HOLD <= item[0]:
            yield pending.popleft()
        pending.append(item)
    if expected and packets[0] < expected:
        raise ReadError(f"video truncated: {packets[0]} of {expected} frames in the file")
    yield from pending


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
        for packet in plan.packets if plan.packets is not None else container.demux(stream):
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


def _counted(packets: Iterator, count: list[int]) -> Iterator:
    """``packets``, adding the non-empty ones to ``count[0]``."""
    for packet in packets:
        count[0] += bool(packet.size)
        yield packet


def _decode_all(container, stream, fps: float, count: list[int]) -> Iterator[tuple[int, float, object]]:
    """(index, seconds, frame) of sampled frames, decoding every frame (no usable timestamps);
    ``count[0]`` receives the number of packets read."""
    rate, base = float(stream.average_rate or stream.guessed_rate or 30), stream.time_base
    sampler, t0 = TimeSampler(fps, 0.5 / rate), None
    for i, frame in enumerate(_decoded(stream, _counted(container.demux(stream), count))):
        # frame.time is NaN for frames drained by a flush (no packet time base): use the stream's.
        t = float(frame.pts * base) if frame.pts is not None and base else i / rate
        t0 = t if t0 is None else t0
        if sampler.want(t - t0):
            yield i, t - t0, frame
