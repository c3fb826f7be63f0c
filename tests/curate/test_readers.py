"""Format readers: every input kind written by the test itself, plus real DICOMs from pydicom-data.

The writer helpers here (``write_video``, ``write_cine_dicom``, ``write_volume``) are also used by
``test_ingest.py``, ``test_audit.py`` and ``test_video.py`` (the PyAV reader's own tests).
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
from fixtures_images import spoiled_jpeg
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from usfmae.curate.readers import ReadError, TimeSampler, detect_kind, read_frames, to_uint8
from usfmae.imaging import read_image


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
    assert _frames(tmp_path / "a.png", scale="minmax")[0].pixels.tolist() == [[0, 64], [128, 255]]
    # default: by bit depth (v >> 8), as usfmae.imaging decodes the file for every stage
    assert _frames(tmp_path / "a.png")[0].pixels.tolist() == [[0, 4], [8, 15]]
    assert np.array_equal(_frames(tmp_path / "a.png")[0].pixels, read_image(tmp_path / "a.png")[:, :, 0])


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
    ("trunc.png", "png_head", "truncated PNG"),
    ("trunc.jpg", "jpg_head", "truncated JPEG"),
    ("spoiled.jpg", "jpg_spoiled", "corrupt JPEG data: premature end of data segment"),
    ("noise.dcm", b"\x00" * 200, "not a readable DICOM"),
    ("notes.txt", b"hello", "unsupported file type .txt"),
    ("trunc.mp4", "mp4_head", "cannot open video"),
])
def test_bad_files_raise_read_error(tmp_path, name, content, message):
    if content == "png_head":
        content = cv2.imencode(".png", np.arange(4096, dtype=np.uint8).reshape(64, 64))[1].tobytes()[:100]
    elif content == "jpg_head":
        content = cv2.imencode(".jpg", np.arange(4096, dtype=np.uint8).reshape(64, 64))[1].tobytes()[:300]
    elif content == "jpg_spoiled":
        content = spoiled_jpeg()[1]
    elif content == "mp4_head":
        content = write_video(tmp_path / "full.mp4").read_bytes()[:400]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ReadError, match=message):
        _frames(tmp_path / name)


def deflated_copy(name: str, path: Path, **changes) -> Path:
    """A pydicom test file re-written with the Deflated Explicit VR Little Endian syntax."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(get_testdata_file(name))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height, followed by a few bytes of junk pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("name, reference", [
    ("OBXXXX1A_expb.dcm", "OBXXXX1A.dcm"),   # big-endian palette colour (8-bit entries in 16-bit words)
    ("OBXXXX1A_rle.dcm", "OBXXXX1A.dcm"),    # RLE lossless
    ("gdcm-US-ALOKA-16_big.dcm", "gdcm-US-ALOKA-16.dcm"),  # big-endian, 16-bit palette
    ("US1_UNCI.dcm", "US1_J2KI.dcm"),        # JPEG 2000 lossy decodes to its uncompressed twin's size
])
def test_dicom_transfer_syntaxes_decode_like_their_reference(name, reference):
    (frame,) = _frames(get_testdata_file(name))
    (ref,) = _frames(get_testdata_file(reference))
    assert frame.modality == "US" and frame.pixels.shape == ref.pixels.shape
    if name != "US1_UNCI.dcm":
        np.testing.assert_array_equal(frame.pixels, ref.pixels)


def test_palette_colour_is_not_black():
    (frame,) = _frames(get_testdata_file("OBXXXX1A_expb.dcm"))
    assert frame.pixels.max() == 255 and round(float(frame.pixels.mean()), 2) == 12.44


def test_deflated_dicom_decodes(tmp_path):
    path = deflated_copy("gdcm-US-ALOKA-16.dcm", tmp_path / "deflated.dcm")
    (frame,) = _frames(path)
    (ref,) = _frames(get_testdata_file("gdcm-US-ALOKA-16.dcm"))
    np.testing.assert_array_equal(frame.pixels, ref.pixels)


def test_jpeg_baseline_and_lossless():
    frames = _frames(get_testdata_file("color3d_jpeg_baseline.dcm"), fps=0)
    assert len(frames) == 120 and frames[0].pixels.shape == (480, 640, 3)
    (lossless,) = _frames(get_testdata_file("JPGLosslessP14SV1_1s_1f_8b.dcm"))
    assert lossless.pixels.shape == (768, 1024) and lossless.pixels.max() == 255


def test_dicom_with_a_broken_offset_table_falls_back_to_the_whole_dataset():
    (frame,) = _frames(get_testdata_file("SC_rgb_jpeg.dcm"))  # iter_pixels refuses its offset table
    assert frame.pixels.shape == (256, 256, 3)


def test_modality_filter_rejects_ct_before_decoding():
    from usfmae.curate.readers import ModalityError

    with pytest.raises(ModalityError, match="modality CT, not US") as info:
        _frames(get_testdata_file("CT_small.dcm"), modalities=("US",))
    assert info.value.modality == "CT"
    (ct,) = _frames(get_testdata_file("CT_small.dcm"))  # no filter: read
    assert ct.modality == "CT"


def test_pydicom_warnings_stay_silent(tmp_path):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (frame,) = _frames(get_testdata_file("image_dfl.dcm"))  # deflated, VR mismatch: pydicom warns
    assert frame.pixels.shape == (512, 512) and caught == []


@pytest.mark.parametrize("kind", ["png", "dicom"])
def test_pixel_limit_checked_from_the_header(tmp_path, kind):
    if kind == "png":
        path = png_header_only(tmp_path / "bomb.png", 30000, 30000)
    else:
        path = write_cine_dicom(tmp_path / "big.dcm", n_frames=1, timing={}, size=64)
    limit = 1000 if kind == "dicom" else 8192 * 8192
    with pytest.raises(ReadError, match=f"more than the limit of {limit}"):
        _frames(path, max_pixels=limit)
