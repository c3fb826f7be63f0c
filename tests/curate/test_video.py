"""Video reader (usfmae.curate.video): time sampling, selective decoding equal to a full decode,
truncated clips, and the luma lookup-table path, on clips written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from test_readers import write_video

from usfmae.curate import video
from usfmae.curate.readers import ReadError, normalize_channels, read_frames
from usfmae.curate.video import plan_video, read_video, video_frame_pixels


def write_coded_video(path: Path, codec: str = "libx264", n_frames: int = 90, fps: int = 30, size: int = 32,
                      options: dict | None = None, pix_fmt: str = "yuv420p", colour: bool = False,
                      faststart: bool = False) -> Path:
    """A lossy clip whose frame i is a drifting texture (0..20) plus brightness 8 + 5 * (i % 40).

    The default options force H.264 B-frames (two between references, x264 ``bframes=2``,
    ``b-adapt=0``), the frames that selective decoding skips. ``colour`` tints the frames (not gray);
    ``faststart`` puts the MP4 index first, so a cut-off file still opens.

    Frames are converted to the stream's pixel format here (``reformat``): handed RGB (or a
    ``from_ndarray`` YUV frame), x264 wrote a different file almost every run (12 distinct files in
    40; it reads memory that is not initialised), which is what made the truncation test flaky. The
    reformat makes a fresh process write the same file, a long-running one still not always, so
    tests cut clips at packet positions, never at byte counts.
    """
    texture = np.random.default_rng(2).integers(0, 20, (size, size)).astype(np.int16)
    if options is None:
        options = {"crf": "18", "x264-params": "bframes=2:b-adapt=0:scenecut=0"} if codec == "libx264" else {}
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = pix_fmt
        stream.options = options
        for i in range(n_frames):
            gray = (np.roll(texture, i, axis=1) + 8 + 5 * (i % 40)).astype(np.uint8)
            pixels = np.dstack([gray, gray // 2, 255 - gray]) if colour else np.dstack([gray] * 3)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format=pix_fmt)
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_number(pixels: np.ndarray, size: int = 32) -> int:
    """i % 40 of ``write_coded_video``'s frame i, from its mean brightness (codec error < 1 of 5 steps)."""
    texture = np.random.default_rng(2).integers(0, 20, (size, size))
    gray = pixels if pixels.ndim == 2 else pixels[..., 0]
    return int(round((gray.mean() - texture.mean() - 8) / 5))


def _frames(path, **kwargs):
    return list(read_frames(path, **kwargs))


def test_video_sampled_at_3fps_from_30fps(tmp_path):
    frames = _frames(write_video(tmp_path / "clip.mp4"), group_id="clip")
    assert [f.index for f in frames] == list(range(0, 90, 10))
    assert [round(f.timestamp, 3) for f in frames] == [round(i / 3, 3) for i in range(9)]
    # brightness 2*i identifies the decoded frame, proving the index is the picture shown
    assert [int(round(f.pixels.mean() / 2)) for f in frames] == list(range(0, 90, 10))
    assert frames[0].pixels.ndim == 2 and frames[0].group_id == "clip"


@pytest.mark.parametrize("rate, expected", [(6.0, list(range(0, 90, 5))), (0.0, list(range(90)))])
def test_video_rate_option(tmp_path, rate, expected):
    assert [f.index for f in _frames(write_video(tmp_path / "clip.mp4"), fps=rate)] == expected


def _decoded_count(path: Path, skip: str) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = skip
        return sum(1 for _ in container.decode(stream))


def _plan(path: Path, fps: float = 3.0):
    with av.open(str(path)) as container:
        return plan_video(container, container.streams.video[0], fps)


def _same_frames(a, b) -> bool:
    return [(f.index, f.timestamp) for f in a] == [(f.index, f.timestamp) for f in b] and all(
        np.array_equal(x.pixels, y.pixels) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("fps", [3.0, 7.0])
def test_bframe_video_skips_nonref_frames_exactly(tmp_path, fps):
    path = write_coded_video(tmp_path / "bframes.mp4")
    # The clip really has non-reference B-frames, which the plan skips unless sampled.
    assert _decoded_count(path, "NONREF") < _decoded_count(path, "DEFAULT") == 90
    assert _plan(path, fps).mode == "nonref"
    fast = list(read_video(path, "g", fps))
    assert _same_frames(fast, list(read_video(path, "g", fps, selective=False, threads=0)))
    assert _same_frames(fast, list(read_video(path, "g", fps, threads=0)))  # frame threads too
    ticks = np.arange(len(fast)) / fps
    assert np.abs(np.array([f.timestamp for f in fast]) - ticks).max() <= 0.5 / 30 + 1e-6
    # Each frame's index is its timestamp at 30 fps and its content is that frame's.
    assert [f.index for f in fast] == [round(f.timestamp * 30) for f in fast]
    assert [frame_number(f.pixels) for f in fast] == [f.index % 40 for f in fast]
    every = list(read_video(path, "g", fps=0))
    assert all(np.array_equal(f.pixels, every[f.index].pixels) for f in fast)
    if fps == 3.0:
        assert [f.index for f in fast] == list(range(0, 90, 10))


@pytest.mark.parametrize("name, codec, pix_fmt, colour, mode", [
    ("mjpeg.avi", "mjpeg", "yuvj420p", False, "intra"),  # only the sampled packets are decoded
    ("mjpeg_colour.mov", "mjpeg", "yuvj422p", True, "intra"),
    ("mpeg2.mpg", "mpeg2video", "yuv420p", False, "nonref"),
])
def test_selective_decoding_equals_full_decoding(tmp_path, name, codec, pix_fmt, colour, mode):
    options = {"bf": "2", "b": "4M"} if codec == "mpeg2video" else None
    path = write_coded_video(tmp_path / name, codec, pix_fmt=pix_fmt, colour=colour, options=options)
    assert _plan(path).mode == mode
    fast = list(read_frames(path))
    assert _same_frames(fast, list(read_video(path, "g", selective=False)))
    assert [f.index for f in fast] == list(range(0, 90, 10))
    assert [frame_number(f.pixels) for f in fast] == [f.index % 40 for f in fast]
    assert fast[0].pixels.ndim == 3 or not colour


@pytest.mark.parametrize("one_pass_bytes", [0, 1 << 30])
def test_one_read_of_the_file_or_two_give_the_same_frames(tmp_path, monkeypatch, one_pass_bytes):
    path = write_coded_video(tmp_path / "clip.mp4")
    expected = list(read_video(path, "g", selective=False))
    monkeypatch.setattr(video, "VIDEO_ONE_PASS_BYTES", one_pass_bytes)
    with av.open(str(path)) as container:
        assert (plan_video(container, container.streams.video[0], 3.0).packets is None) == (one_pass_bytes == 0)
    assert _same_frames(list(read_video(path, "g")), expected)


def test_bframe_avi_is_decoded_in_full(tmp_path):
    # AVI keeps decode order only: timestamps of reordered frames cannot plan the decoding.
    path = write_coded_video(tmp_path / "bframes.avi")
    assert _plan(path) is None
    assert _same_frames(list(read_frames(path)), list(read_video(path, "g", selective=False)))


@pytest.mark.parametrize("where, error", [
    ("boundary", "video truncated: 60 of 90 frames"),  # ends cleanly between packets: only the index tells
    ("mid-packet", "video decoding failed"),
    ("last byte", "video decoding failed"),
])
def test_truncated_video_keeps_decodable_frames_then_raises(tmp_path, where, error):
    data = write_coded_video(tmp_path / "full.mp4", faststart=True).read_bytes()
    with av.open(str(tmp_path / "full.mp4")) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    pos, size = packets[60]  # the 61st packet in decode order: a B-frame (frame 59) of a P B B group
    cut = {"boundary": pos, "mid-packet": pos + size // 2, "last byte": pos + size - 1}[where]
    (tmp_path / "cut.mp4").write_bytes(data[:cut])
    kept = {}
    for selective in (True, False):
        got = []
        with pytest.raises(ReadError, match=error):
            got.extend(f.index for f in read_video(tmp_path / "cut.mp4", "g", selective=selective))
        kept[selective] = got
    # frames near the cut (within the B-frame reordering) are dropped in both modes alike
    assert kept[True] == kept[False] == [0, 10, 20, 30, 40]


def test_gray_frames_skip_rgb_conversion_exactly(tmp_path):
    path = write_coded_video(tmp_path / "clip.mp4", n_frames=6)
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            expected = normalize_channels(frame.to_ndarray(format="rgb24"))
            assert expected.ndim == 2
            np.testing.assert_array_equal(video_frame_pixels(frame, {}), expected)
