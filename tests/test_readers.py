"""Format readers: every input kind written by the test itself, plus real DICOMs from pydicom-data.

The writer helpers here (``write_video``, ``write_cine_dicom``, ``write_volume``) are also used by
``test_ingest.py`` and ``test_audit.py``.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from usfmae.data.readers import (
    ReadError,
    TimeSampler,
    detect_kind,
    normalize_channels,
    plan_video,
    read_frames,
    read_video,
    to_uint8,
    video_frame_pixels,
)


def write_video(path: Path, n_frames: int = 90, fps: int = 30, size: int = 32, textured: bool = False) -> Path:
    """An H.264 MP4 at ``fps`` whose frame i has brightness 2*i (uniform, or over a fixed texture)."""
    texture = np.random.default_rng(1).integers(0, 60, (size, size, 1)) if textured else 0
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"qp": "0"}  # lossless, so brightness identifies the frame exactly
        for i in range(n_frames):
            pixels = np.clip(np.full((size, size, 3), 2 * i) + texture, 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_coded_video(path: Path, codec: str = "libx264", n_frames: int = 90, fps: int = 30, size: int = 32,
                      options: dict | None = None, pix_fmt: str = "yuv420p", colour: bool = False,
                      faststart: bool = False) -> Path:
    """A lossy clip whose frame i is a drifting texture (0..20) plus brightness 8 + 5 * (i % 40).

    The default options force H.264 B-frames (two between references, x264 ``bframes=2``,
    ``b-adapt=0``), the frames that selective decoding skips. ``colour`` tints the frames (not gray);
    ``faststart`` puts the MP4 index first, so a cut-off file still opens.
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
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_number(pixels: np.ndarray, size: int = 32) -> int:
    """i % 40 of ``write_coded_video``'s frame i, from its mean brightness (codec error < 1 of 5 steps)."""
    texture = np.random.default_rng(2).integers(0, 20, (size, size))
    gray = pixels if pixels.ndim == 2 else pixels[..., 0]
    return int(round((gray.mean() - texture.mean() - 8) / 5))


def write_cine_dicom(path: Path, n_frames: int = 30, timing: dict | None = None, size: int = 16,
                     study: str | None = None) -> Path:
    """A multi-frame MONOCHROME2 US DICOM whose frame i has brightness 8*i (+ a gradient)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # US Multi-frame Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.StudyInstanceUID = "US", "P1", study or generate_uid()
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = n_frames
    for key, value in (timing if timing is not None else {"FrameTime": 1000 / 30}).items():
        setattr(ds, key, value)
    ramp = np.arange(size)[None, :] // 4
    frames = np.stack([(8 * i + ramp).repeat(size, 0) % 256 for i in range(n_frames)]).astype(np.uint8)
    ds.PixelData = frames.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def volume_data() -> np.ndarray:
    """(X=12, Y=10, Z=5) float volume whose z-slices 1 and 3 are empty (constant)."""
    rng = np.random.default_rng(0)
    vol = rng.uniform(0, 1000, (12, 10, 5)).astype(np.float32)
    vol[:, :, 1] = 0
    vol[:, :, 3] = 7
    return vol


def write_volume(path: Path, vol: np.ndarray | None = None) -> Path:
    """Write ``volume_data()`` as NIfTI (nibabel) or NRRD/MHA (SimpleITK), by suffix."""
    vol = volume_data() if vol is None else vol
    if path.name.endswith((".nii", ".nii.gz")):
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    else:
        sitk.WriteImage(sitk.GetImageFromArray(vol.transpose(2, 1, 0)), str(path))
    return path


def _frames(path, **kwargs):
    return list(read_frames(path, **kwargs))


@pytest.mark.parametrize("name, arr, expected_shape, bit_depth", [
    ("gray8.png", np.arange(48, dtype=np.uint8).reshape(6, 8) * 5, (6, 8), 8),
    ("gray16.png", (np.arange(48, dtype=np.uint16).reshape(6, 8) * 80), (6, 8), 16),
    ("rgb8.png", np.dstack([np.full((6, 8), v, np.uint8) for v in (10, 20, 30)]), (6, 8, 3), 8),
    ("rgb16.png", np.dstack([np.full((6, 8), v, np.uint16) for v in (100, 2000, 40000)]), (6, 8, 3), 16),
    ("gray_as_rgb.bmp", np.dstack([np.arange(48, dtype=np.uint8).reshape(6, 8)] * 3), (6, 8), 8),
    ("gray8.tiff", np.arange(48, dtype=np.uint8).reshape(6, 8), (6, 8), 8),
])
def test_image_variants(tmp_path, name, arr, expected_shape, bit_depth):
    path = tmp_path / name
    assert cv2.imwrite(str(path), arr)  # cv2 writes colour arrays as BGR
    (frame,) = _frames(path)
    assert frame.pixels.shape == expected_shape and frame.pixels.dtype == np.uint8
    assert frame.bit_depth == bit_depth and frame.index == 0 and frame.timestamp is None


def test_16bit_scaling_minmax_vs_bits(tmp_path):
    arr = np.array([[0, 1024], [2048, 4095]], np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), arr)
    assert _frames(tmp_path / "a.png")[0].pixels.tolist() == [[0, 64], [128, 255]]
    assert _frames(tmp_path / "a.png", scale="bits")[0].pixels.tolist() == [[0, 4], [8, 15]]


def test_rgb_order_rgba_and_palette(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200  # pure red
    Image.fromarray(rgb).save(tmp_path / "red.png")
    assert _frames(tmp_path / "red.png")[0].pixels[0, 0].tolist() == [200, 0, 0]
    rgba = np.dstack([rgb, np.full((4, 4), 255, np.uint8)])
    rgba[0, 0, 3] = 0  # transparent pixel -> black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    pixels = _frames(tmp_path / "rgba.png")[0].pixels
    assert pixels.shape == (4, 4, 3) and pixels[0, 0].tolist() == [0, 0, 0] and pixels[1, 1].tolist() == [200, 0, 0]
    pal = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.save(tmp_path / "pal.png")
    assert _frames(tmp_path / "pal.png")[0].pixels[0, 1].tolist() == [0, 255, 0]


def test_multipage_tiff(tmp_path):
    pages = [Image.fromarray(np.full((5, 5), v, np.uint8)) for v in (10, 20, 30)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    frames = _frames(tmp_path / "stack.tif")
    assert [(f.index, int(f.pixels[0, 0])) for f in frames] == [(0, 10), (1, 20), (2, 30)]


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


def test_bframe_avi_is_decoded_in_full(tmp_path):
    # AVI keeps decode order only: timestamps of reordered frames cannot plan the decoding.
    path = write_coded_video(tmp_path / "bframes.avi")
    assert _plan(path) is None
    assert _same_frames(list(read_frames(path)), list(read_video(path, "g", selective=False)))


def test_truncated_video_keeps_decodable_frames_then_raises(tmp_path):
    data = write_coded_video(tmp_path / "full.mp4", faststart=True).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) * 4 // 5])
    for selective in (True, False):
        got = []
        with pytest.raises(ReadError, match="video decoding failed"):
            got.extend(f.index for f in read_video(tmp_path / "cut.mp4", "g", selective=selective))
        assert 0 < len(got) < 9 and got == list(range(0, 10 * len(got), 10))


def test_gray_frames_skip_rgb_conversion_exactly(tmp_path):
    path = write_coded_video(tmp_path / "clip.mp4", n_frames=6)
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            expected = normalize_channels(frame.to_ndarray(format="rgb24"))
            assert expected.ndim == 2
            np.testing.assert_array_equal(video_frame_pixels(frame, {}), expected)


@pytest.mark.parametrize("timing", [
    {"FrameTime": 1000 / 30},
    {"FrameTimeVector": [0.0] + [1000 / 30] * 29},
    {"CineRate": 30},
    {"RecommendedDisplayFrameRate": 30},
])
def test_cine_dicom_sampled_at_3fps(tmp_path, timing):
    frames = _frames(write_cine_dicom(tmp_path / "cine.dcm", timing=timing))
    assert [f.index for f in frames] == [0, 10, 20]
    assert [int(f.pixels[0, 0]) for f in frames] == [0, 80, 160]
    assert frames[1].timestamp == pytest.approx(1 / 3, abs=1e-4)
    assert frames[0].group_id.startswith("study:")


def test_16bit_monochrome1_dicom_is_scaled_and_inverted(tmp_path):
    path = write_cine_dicom(tmp_path / "mono1.dcm", n_frames=1, timing={})
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelData = np.array([[0, 4095] * 8] * 16, np.uint16).tobytes()
    ds.save_as(path)
    (frame,) = _frames(path)
    assert frame.bit_depth == 12 and frame.pixels[0, :2].tolist() == [255, 0]  # low values shown white


def test_dicom_without_suffix_detected_by_magic(tmp_path):
    path = write_cine_dicom(tmp_path / "IM0001", n_frames=1, timing={})
    assert detect_kind(path) == "dicom" and len(_frames(path)) == 1


def test_real_dicoms_from_pydicom_data():
    uncompressed = _frames(get_testdata_file("US1_UNCR.dcm"))
    jpeg2000 = _frames(get_testdata_file("US1_J2KR.dcm"))  # lossless JPEG 2000, YBR_RCT -> RGB
    assert uncompressed[0].pixels.shape == (480, 640, 3)
    np.testing.assert_array_equal(uncompressed[0].pixels, jpeg2000[0].pixels)
    (palette,) = _frames(get_testdata_file("gdcm-US-ALOKA-16.dcm"))  # 16-bit PALETTE COLOR
    assert palette.pixels.shape == (480, 640, 3) and palette.bit_depth == 16
    ybr = _frames(get_testdata_file("examples_ybr_color.dcm"))  # JPEG YBR_FULL_422, 30 frames, FrameTime
    assert [f.index for f in ybr] == [0, 10, 20] and ybr[0].pixels.shape == (240, 320, 3)


@pytest.mark.parametrize("name", ["vol.nii", "vol.nii.gz", "vol.nrrd", "vol.mha"])
def test_volume_slices_skip_empty(tmp_path, name):
    frames = _frames(write_volume(tmp_path / name))
    assert [f.index for f in frames] == [0, 2, 4]
    assert frames[0].pixels.shape == (10, 12)  # (Y, X) for a z slice
    expected = to_uint8(volume_data(), 32)[:, :, 2].T
    np.testing.assert_array_equal(frames[1].pixels, expected)


def test_volume_axis_option(tmp_path):
    frames = _frames(write_volume(tmp_path / "vol.nii.gz"), axis=0)
    assert len(frames) == 12 and frames[0].pixels.shape == (5, 10)


def test_time_sampler_slow_source_keeps_every_frame():
    sampler = TimeSampler(3.0, 0.25)
    assert [sampler.want(t) for t in (0.0, 0.5, 1.0, 1.5)] == [True, True, True, True]


@pytest.mark.parametrize("name, content, message", [
    ("empty.png", b"", "empty file"),
    ("trunc.png", "png_head", "cannot decode"),
    ("trunc.jpg", "jpg_head", "truncated JPEG"),
    ("noise.dcm", b"\x00" * 200, "not a readable DICOM"),
    ("notes.txt", b"hello", "unsupported file type .txt"),
    ("trunc.mp4", "mp4_head", "cannot open video"),
])
def test_bad_files_raise_read_error(tmp_path, name, content, message):
    if content == "png_head":
        content = cv2.imencode(".png", np.arange(4096, dtype=np.uint8).reshape(64, 64))[1].tobytes()[:100]
    elif content == "jpg_head":
        content = cv2.imencode(".jpg", np.arange(4096, dtype=np.uint8).reshape(64, 64))[1].tobytes()[:300]
    elif content == "mp4_head":
        content = write_video(tmp_path / "full.mp4").read_bytes()[:400]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ReadError, match=message):
        _frames(tmp_path / name)
