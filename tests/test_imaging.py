"""usfmae.imaging: decoding policy (16-bit, palette, alpha, colour), fit golden values, unfit on masks."""

from __future__ import annotations

import os
import zlib

import cv2
import numpy as np
import pytest
from fixtures_images import jpeg_file, spoiled_jpeg
from PIL import Image

from usfmae.errors import DataError
from usfmae.imaging import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    FitGeometry,
    decode_pixels,
    encoded_damage,
    fit,
    fit_geometry,
    read_image,
    to_channels,
    to_uint8,
    unfit,
)

U8 = np.uint8


@pytest.mark.parametrize(("values", "bit_depth", "expected"), [
    # 16-bit: the top 8 bits; 8-bit data stored as 16 (v * 257 or v << 8) comes back exactly
    ([0, 257, 65535, 32768, 255, 129 * 257, 136 << 8], None, [0, 1, 255, 128, 0, 129, 136]),
    # 12 significant bits (e.g. DICOM BitsStored): 4095 is white, larger values saturate
    ([0, 4095, 2048, 5000], 12, [0, 255, 128, 255]),
    # fewer than 8 bits in a wide container: stretched up
    ([0, 7, 15], 4, [0, 119, 255]),
])
def test_to_uint8_unsigned_maps_by_bit_depth(values, bit_depth, expected):
    out = to_uint8(np.array(values, np.uint16), bit_depth)
    assert out.dtype == U8 and out.tolist() == expected


def test_to_uint8_content_does_not_change_unsigned_pixels():
    # a dark 16-bit image stays dark (no per-image stretching)
    dark = np.array([[0, 1000], [2000, 3000]], np.uint16)
    assert to_uint8(dark).tolist() == [[0, 3], [7, 11]]


@pytest.mark.parametrize(("values", "expected"), [
    ([0.0, 0.5, 2.0], [0, 64, 255]),           # float: finite min-max
    ([-100.0, np.nan, 100.0], [0, 0, 255]),    # NaN -> 0
    ([3.0, 3.0], [0, 0]),                      # constant -> 0
])
def test_to_uint8_float_stretches_finite_range(values, expected):
    assert to_uint8(np.array(values, np.float32)).tolist() == expected


def test_to_uint8_signed_stretches_range():
    assert to_uint8(np.array([-1000, 0, 1000], np.int16)).tolist() == [0, 128, 255]


def test_to_uint8_keeps_uint8_object():
    a = np.arange(5, dtype=U8)
    assert to_uint8(a) is a


def _write(path, image):
    assert cv2.imwrite(str(path), image)
    return path


def test_read_image_gray_16bit_png(tmp_path):
    img = np.array([[0, 257 * 10], [65535, 32768]], np.uint16)
    out = read_image(_write(tmp_path / "a.png", img))
    assert out.dtype == U8 and out.shape == (2, 2, 1)
    assert out[:, :, 0].tolist() == [[0, 10], [255, 128]]


def test_read_image_rgb_is_rgb_order(tmp_path):
    bgr = np.zeros((2, 3, 3), U8)
    bgr[..., 0], bgr[..., 2] = 200, 50  # blue 200, red 50 in OpenCV's order
    out = read_image(_write(tmp_path / "c.png", bgr))
    assert out.shape == (2, 3, 3) and out[0, 0].tolist() == [50, 0, 200]


def test_read_image_equal_channels_become_gray(tmp_path):
    gray = np.arange(12, dtype=U8).reshape(3, 4)
    out = read_image(_write(tmp_path / "g.png", np.stack([gray] * 3, axis=2)))
    assert out.shape == (3, 4, 1) and np.array_equal(out[:, :, 0], gray)


def test_read_image_rgba_composites_over_black(tmp_path):
    bgra = np.zeros((1, 3, 4), U8)
    bgra[0, :, :3] = [[0, 0, 200], [0, 0, 200], [100, 100, 100]]
    bgra[0, :, 3] = [255, 0, 128]
    out = read_image(_write(tmp_path / "a.png", bgra))
    # opaque red kept, transparent -> black, half alpha: round(100 * 128 / 255) = 50 (gray pixel)
    assert out.shape == (1, 3, 3)
    assert out[0].tolist() == [[200, 0, 0], [0, 0, 0], [50, 50, 50]]


def test_read_image_palette_expanded(tmp_path):
    pal = Image.new("P", (3, 2))
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    pal.putpixel((1, 0), 1)
    pal.putpixel((2, 1), 2)
    pal.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    assert out.shape == (2, 3, 3)
    assert out[0, 1].tolist() == [255, 0, 0] and out[1, 2].tolist() == [0, 0, 255] and out[0, 0].tolist() == [0, 0, 0]


def test_read_image_gray_alpha(tmp_path):
    la = np.zeros((1, 2, 2), U8)
    la[0, :, 0], la[0, :, 1] = 200, [255, 0]
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert read_image(tmp_path / "la.png")[:, :, 0].tolist() == [[200, 0]]


@pytest.mark.parametrize("content", [b"", b"not an image at all", None])
def test_read_image_bad_files_raise_one_line(tmp_path, content):
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as info:
        read_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def _spoil(data: bytes, how: str) -> bytes:
    if how == "cut":
        return data[:200]
    if how == "tall":  # the header claims 65535 rows, every CRC right (IHDR's recomputed)
        header = data[12:16] + data[16:20] + (65535).to_bytes(4, "big") + data[24:29]
        return data[:8] + data[8:12] + header + zlib.crc32(header).to_bytes(4, "big") + data[33:]
    if how == "no_end":
        return data[:-12]  # every chunk whole, IEND missing
    spoiled = bytearray(data)
    spoiled[len(data) // 2] ^= 0xFF  # one byte inside IDAT
    return bytes(spoiled)


@pytest.mark.parametrize(("how", "reason"), [("cut", "truncated PNG (chunk IDAT cut off)"),
                                             ("no_end", "truncated PNG (no IEND chunk)"),
                                             ("flip", "damaged PNG (CRC mismatch in chunk IDAT)"),
                                             ("tall", "truncated PNG ({} bytes of image data cannot hold 16x65535)")])
def test_read_image_damaged_png_is_one_reason_and_libpng_stays_quiet(tmp_path, capfd, how, reason):
    side = 16 if how == "tall" else 64
    path = _write(tmp_path / "t.png", np.random.default_rng(0).integers(0, 255, (side, side), dtype=U8))
    idat = path.read_bytes().find(b"IDAT")
    reason = reason.format(int.from_bytes(path.read_bytes()[idat - 4:idat], "big"))
    path.write_bytes(_spoil(path.read_bytes(), how))
    with pytest.raises(DataError) as info:
        read_image(path)
    assert str(info.value) == f"{path}: {reason}"
    assert capfd.readouterr().err == ""  # libpng prints its errors to fd 2; it never saw this file


@pytest.mark.parametrize("shape", [(4096, 4096), (1, 65535), (65535, 1), (2000, 3000, 3)])
def test_encoded_damage_passes_the_most_compressible_pngs(shape):
    """All-black images at zlib level 9 come close to deflate's 1032:1 limit and are intact."""
    data = cv2.imencode(".png", np.zeros(shape, U8), [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()
    assert encoded_damage(data) is None


def test_encoded_damage_passes_intact_files_and_names_a_cut_jpeg():
    image = np.random.default_rng(1).integers(0, 255, (32, 48, 3), dtype=U8)
    png, jpeg = (cv2.imencode(ext, image)[1].tobytes() for ext in (".png", ".jpg"))
    assert encoded_damage(png) is None and encoded_damage(np.frombuffer(png, U8)) is None
    assert encoded_damage(jpeg) is None and encoded_damage(jpeg + bytes(100)) is None  # zero padding is fine
    assert encoded_damage(jpeg[:-50]) == "truncated JPEG (no end-of-image marker)"
    assert encoded_damage(b"BM" + bytes(60)) is None  # other formats: their decoder decides


@pytest.mark.parametrize("kind", ["420", "422", "444", "411", "progressive", "gray", "pillow", "cmyk"])
def test_decode_pixels_equals_opencv_on_valid_jpegs(kind):
    data = jpeg_file(kind)
    expected = cv2.imdecode(np.frombuffer(data, U8), cv2.IMREAD_UNCHANGED)
    pixels = decode_pixels(data)
    assert pixels.dtype == U8 and pixels.shape == expected.shape
    np.testing.assert_array_equal(pixels, expected)


def test_read_image_refuses_corrupt_jpeg_data_in_one_line(tmp_path, capfd):
    intact, spoiled = spoiled_jpeg()
    path = tmp_path / "spoiled.jpg"
    path.write_bytes(spoiled)
    assert encoded_damage(spoiled) is None  # every marker is still there
    with pytest.raises(DataError) as info:
        read_image(path)
    assert str(info.value) == f"{path}: corrupt JPEG data: premature end of data segment"
    assert capfd.readouterr().err == ""
    path.write_bytes(intact)
    assert read_image(path).shape == (97, 131, 3)


def test_read_image_max_pixels(tmp_path):
    path = _write(tmp_path / "big.png", np.zeros((100, 120), U8))
    assert read_image(path, max_pixels=12000).shape == (100, 120, 1)
    with pytest.raises(DataError, match="12000 pixels, more than the limit of 11999"):
        read_image(path, max_pixels=11999)
    assert DEFAULT_MAX_PIXELS >= 4096 * 4096


def test_suffixes():
    assert ".png" in IMAGE_SUFFIXES and ".tiff" in IMAGE_SUFFIXES and ".jpg" in IMAGE_SUFFIXES


@pytest.mark.parametrize(("hw", "size", "policy", "expected"), [
    ((200, 300), 60, "pad", FitGeometry(200, 300, 60, "pad", 10, 0, 40, 60)),
    ((320, 200), 64, "pad", FitGeometry(320, 200, 64, "pad", 0, 12, 64, 40)),
    ((50, 50), 64, "pad", FitGeometry(50, 50, 64, "pad", 0, 0, 64, 64)),
    ((200, 300), 60, "stretch", FitGeometry(200, 300, 60, "stretch", 0, 0, 60, 60)),
])
def test_fit_geometry(hw, size, policy, expected):
    assert fit_geometry(*hw, size, policy) == expected


def test_fit_pad_golden():
    img = np.array([[10, 20, 30, 40], [50, 60, 70, 80]], U8)
    out = fit(img, 4, 1, "pad")
    assert out.shape == (4, 4, 1)
    assert out[:, :, 0].tolist() == [[0, 0, 0, 0], [10, 20, 30, 40], [50, 60, 70, 80], [0, 0, 0, 0]]


def test_fit_pad_shrinks_by_area():
    img = np.array([[10, 20], [30, 40], [50, 60], [70, 80]], U8)
    assert fit(img, 2, 1, "pad")[:, :, 0].tolist() == [[25, 0], [65, 0]]


def test_fit_stretch_golden():
    img = np.array([[10, 20, 30, 40], [50, 60, 70, 80]], U8)
    assert fit(img, 2, 1, "stretch")[:, :, 0].tolist() == [[15, 35], [55, 75]]


def test_fit_channels():
    rgb = np.zeros((2, 2, 3), U8)
    rgb[..., 0] = 100  # pure red: BT.601 luma 0.299 * 100 = 30
    assert fit(rgb, 2, 1)[:, :, 0].tolist() == [[30, 30], [30, 30]]
    gray = np.full((2, 2), 7, U8)
    assert fit(gray, 2, 3).tolist() == [[[7, 7, 7]] * 2] * 2
    assert to_channels(gray, 1).shape == (2, 2, 1)


def test_fit_rejects_unknown_policy():
    with pytest.raises(ValueError, match="pad"):
        fit(np.zeros((2, 2), U8), 4, 1, "crop")


def _label_mask(h, w):
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4:h // 2, w // 5:w // 2] = 1
    mask[h // 2:, w // 2:] = 2
    mask[: h // 5, -w // 4:] = 7
    return mask


@pytest.mark.parametrize("policy", ["pad", "stretch"])
def test_fit_unfit_mask_round_trip_exact_when_enlarging(policy):
    mask = _label_mask(20, 30)
    fitted = fit(mask, 60, 1, policy, interpolation="nearest")
    geo = fit_geometry(20, 30, 60, policy)
    if policy == "pad":  # scale 2, centred: 10 rows of background above and below
        assert (fitted[:10] == 0).all() and (fitted[50:] == 0).all()
    back = unfit(fitted[:, :, 0], geo)
    assert back.shape == (20, 30) and np.array_equal(back, mask)


@pytest.mark.parametrize("policy", ["pad", "stretch"])
def test_fit_unfit_mask_keeps_label_values_when_shrinking(policy):
    mask = _label_mask(64, 96)
    fitted = fit(mask, 32, 1, policy, interpolation="nearest")
    assert set(np.unique(fitted)) <= {0, 1, 2, 7}
    back = unfit(fitted, fit_geometry(64, 96, 32, policy))
    assert back.shape == (64, 96, 1) and set(np.unique(back)) == {0, 1, 2, 7}
    # most pixels come back to their own label (a third of the resolution was kept)
    assert (back[:, :, 0] == mask).mean() > 0.9


def test_unfit_checks_size():
    with pytest.raises(ValueError, match="32x32"):
        unfit(np.zeros((16, 16), U8), fit_geometry(64, 96, 32, "pad"))


def test_read_image_jpeg_gray_and_colour(tmp_path):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 255, (16, 24), dtype=U8)
    assert cv2.imwrite(str(tmp_path / "g.jpg"), gray)
    out = read_image(tmp_path / "g.jpg")
    assert out.shape == (16, 24, 1) and np.array_equal(out[:, :, 0], cv2.imread(str(tmp_path / "g.jpg"), 0))
    colour = rng.integers(0, 255, (16, 24, 3), dtype=U8)
    assert cv2.imwrite(str(tmp_path / "c.jpg"), colour)
    expected = cv2.cvtColor(cv2.imread(str(tmp_path / "c.jpg"), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    assert np.array_equal(read_image(tmp_path / "c.jpg"), expected)


def test_image_files_names_what_it_leaves_out_in_one_line(tmp_path, caplog):
    from usfmae.imaging import image_files

    for name in ("b.png", "sub/a.JPG", "scan.dcm", "clip.mp4", "notes.txt", ".lock", "sub/.a.png.tmp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    with caplog.at_level("WARNING"):
        assert image_files(tmp_path) == [tmp_path / "b.png", tmp_path / "sub" / "a.JPG"]
    (line,) = [r.getMessage() for r in caplog.records]
    assert "3 file(s) that are not images left out (e.g. clip.mp4)" in line and "usfmae ingest" in line


def test_image_listing_matches_sorted_rglob_on_awkward_trees(tmp_path):
    """The scandir listing gives what sorted ``rglob`` + ``is_file`` gave, as strings, in the same order."""
    from usfmae.imaging import IMAGE_SUFFIXES, image_files, image_relpaths

    root = tmp_path / "root"
    for name in ("a/b.png", "a-c.png", "a.png", "A.PNG", "z/y/x.tif", "x.png/inner.jpg", ".hidden/h.png",
                 "file.", ".png", "nested/deep/er/img.jpeg", "sp ace/é.bmp"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.png").write_bytes(b"x")
    (root / "link_to_file.png").symlink_to(root / "a.png")           # counts, like is_file()
    (root / "link_to_dir").symlink_to(outside, target_is_directory=True)  # not followed, like rglob
    (root / "dangling.png").symlink_to(tmp_path / "missing.png")
    (root / "loop.png").symlink_to(root / "loop.png")
    os.mkfifo(root / "fifo.png")
    expected = [p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    assert image_files(root) == expected
    assert image_relpaths(root) == [p.relative_to(root).as_posix() for p in expected]
    listed = image_relpaths(root)
    assert listed[:4] == [".hidden/h.png", "A.PNG", "a/b.png", "a-c.png"]  # part by part: "a" < "a-c"
    assert all(type(rel) is str for rel in listed)
