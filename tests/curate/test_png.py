"""usfmae.curate.png: valid PNG files that every reader decodes to exactly the written pixels."""

from __future__ import annotations

import io
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from usfmae.curate.png import encode_png, write_png


def _speckle(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("shape", [(48, 64), (48, 64, 1), (48, 64, 3), (1, 1), (1, 7, 3), (5, 1)])
@pytest.mark.parametrize("level", [0, 1, 3, 6, 9])
def test_every_reader_gets_the_same_pixels(shape, level):
    pixels = _speckle(shape)
    data = encode_png(pixels, level)
    expected = pixels.reshape(shape[0], shape[1], -1)
    via_pil = np.asarray(Image.open(io.BytesIO(data))).reshape(expected.shape)  # RGB order
    via_cv2 = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).reshape(expected.shape)
    np.testing.assert_array_equal(via_pil, expected)
    np.testing.assert_array_equal(via_cv2[..., ::-1] if expected.shape[2] == 3 else via_cv2, expected)


def test_level_0_is_stored_and_higher_levels_compress_smooth_images():
    smooth = np.tile(np.arange(64, dtype=np.uint8), (64, 1))
    sizes = [len(encode_png(smooth, level)) for level in (0, 1, 9)]
    assert sizes[0] > 64 * 65 and max(sizes[1:]) < sizes[0] / 4
    # stored: the IDAT chunk holds the filtered rows verbatim (zlib stored blocks)
    idat = encode_png(smooth, 0)
    start = idat.index(b"IDAT") + 4
    assert zlib.decompress(idat[start:start + int.from_bytes(idat[start - 8:start - 4], "big")])[:2] == b"\x02\x00"


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 4), np.uint16), "uint8"), (np.zeros((4, 4, 4), np.uint8), r"1\|3"), (np.zeros(4, np.uint8), "uint8"),
])
def test_refuses_what_it_cannot_write(bad, message):
    with pytest.raises(ValueError, match=message):
        encode_png(bad)
    with pytest.raises(ValueError, match="level"):
        encode_png(np.zeros((2, 2), np.uint8), 10)


def test_write_is_atomic_and_complete(tmp_path):
    pixels = _speckle((32, 40, 3), seed=3)
    path = tmp_path / "sub" / "frame.png"
    write_png(path, pixels, 1)
    assert [p.name for p in path.parent.iterdir()] == ["frame.png"]  # no temporary left behind
    np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., ::-1], pixels)


def test_write_creates_files_as_open_does_and_leaves_no_temporary_on_failure(tmp_path):
    import os
    import stat

    pixels = _speckle((8, 8), seed=1)
    write_png(tmp_path / "a.png", pixels, 1)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.png").stat().st_mode) == 0o666 & ~umask
    (tmp_path / "b.png").mkdir()  # a folder where the frame should go: the rename fails
    with pytest.raises(OSError):
        write_png(tmp_path / "b.png", pixels, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]
    assert (tmp_path / "a.png").read_bytes() == encode_png(pixels, 1)
