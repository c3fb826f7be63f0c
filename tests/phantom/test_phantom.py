"""The phantom simulator: determinism, physics statistics, exact overlay ground truth, manifest, CLI."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from usfmae import cli
from usfmae.errors import ConfigError, DataError
from usfmae.phantom.generate import (
    PHANTOM_CLASSES,
    PhantomConfig,
    generate_sample,
    sample_rng,
    simulate_bmode,
    speckle_field,
    write_phantom_dataset,
)

SMALL = PhantomConfig(size=96)


def _png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image.ndim == 3 else image


def test_same_seed_same_bytes_and_other_seed_differs() -> None:
    a, b = generate_sample(7, 3, SMALL), generate_sample(7, 3, SMALL)
    assert a.image.tobytes() == b.image.tobytes() and a.overlay_mask.tobytes() == b.overlay_mask.tobytes()
    assert generate_sample(8, 3, SMALL).clean.tobytes() != a.clean.tobytes()


def test_float_intermediates_are_bit_exact_across_calls() -> None:
    """Guards against library kernels whose last bit depends on memory alignment (seen with cv2.magnitude)."""
    runs = [simulate_bmode(sample_rng(5, 1), SMALL, "convex", "malignant") for _ in range(8)]
    assert all(np.array_equal(runs[0].envelope, r.envelope) for r in runs[1:])


def test_written_files_identical_across_runs_and_independent_of_n(tmp_path: Path) -> None:
    cfg = PhantomConfig(size=64)
    write_phantom_dataset(tmp_path / "a", n=3, seed=5, cfg=cfg, progress=False)
    write_phantom_dataset(tmp_path / "b", n=6, seed=5, cfg=cfg, progress=False)
    for sub in ("images", "clean", "masks"):
        names = sorted(p.name for p in (tmp_path / "a" / sub).iterdir())
        assert len(names) == 3
        for name in names:
            assert (tmp_path / "a" / sub / name).read_bytes() == (tmp_path / "b" / sub / name).read_bytes()
    # Sample i written to disk is exactly generate_sample(seed, i).
    assert np.array_equal(_png(tmp_path / "b" / "images" / "s5_0000004.png"), generate_sample(5, 4, cfg).image)


def test_overlays_do_not_change_the_clean_image() -> None:
    on, off = generate_sample(2, 9, SMALL), generate_sample(2, 9, PhantomConfig(size=96, overlays=False))
    assert np.array_equal(on.clean, off.clean)
    assert not off.overlay_mask.any() and np.array_equal(off.image, np.repeat(off.clean[..., None], 3, axis=2))


@pytest.mark.parametrize("index", range(6))
def test_overlay_mask_is_exactly_the_changed_pixels(index: int) -> None:
    s = generate_sample(11, index, PhantomConfig(size=128))
    changed = (s.image != np.repeat(s.clean[..., None], 3, axis=2)).any(axis=2)
    assert s.overlay_mask.sum() > 100
    assert np.array_equal(changed, s.overlay_mask)


def test_fixture_masks_match_image_minus_clean(phantom_dataset: Path) -> None:
    table = pq.read_table(phantom_dataset / "manifest.parquet").to_pylist()
    assert len(table) == 32
    for row in table:
        image, clean = _png(phantom_dataset / row["path"]), _png(phantom_dataset / row["clean_path"])
        mask = _png(phantom_dataset / row["mask_path"])
        assert image.shape == (64, 64, 3) and clean.shape == mask.shape == (64, 64)
        assert set(np.unique(mask)) <= {0, 255}
        assert np.array_equal((image != clean[..., None]).any(axis=2), mask == 255)


def test_black_outside_the_fan_and_fan_shapes() -> None:
    lin = generate_sample(0, 0, PhantomConfig(size=96, geometry="linear", overlays=False))
    cvx = generate_sample(0, 0, PhantomConfig(size=96, geometry="convex", overlays=False))
    for s in (lin, cvx):
        assert not s.clean[~s.fan_mask].any() and s.clean[s.fan_mask].mean() > 40
    ys, xs = np.nonzero(lin.fan_mask)
    assert lin.fan_mask.sum() == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)   # a rectangle
    top_row = np.nonzero(cvx.fan_mask.any(axis=1))[0][0]
    assert cvx.fan_mask.sum(axis=1).max() > 1.5 * cvx.fan_mask[top_row + 2].sum()     # widens with depth


@pytest.mark.parametrize("geometry", ["linear", "convex"])
def test_malignant_taller_than_wide_and_benign_wider_than_tall(geometry: str) -> None:
    ratios = {}
    for label, fraction in (("benign", 0.0), ("malignant", 1.0)):
        cfg = PhantomConfig(size=96, overlays=False, geometry=geometry, malignant_fraction=fraction)
        samples = [generate_sample(3, i, cfg) for i in range(12)]
        assert {s.label for s in samples} == {label}
        ratios[label] = np.mean([(b[3] - b[1]) / (b[2] - b[0]) for b in (s.lesion_box for s in samples)])
    assert ratios["malignant"] > 1.05 and ratios["benign"] < 0.85


@pytest.mark.parametrize("label_fraction", [0.0, 1.0])
def test_lesion_darker_than_surrounding_tissue(label_fraction: float) -> None:
    cfg = PhantomConfig(size=128, overlays=False, malignant_fraction=label_fraction)
    ring_kernel = np.ones((9, 9), np.uint8)
    for i in range(8):
        s = generate_sample(4, i, cfg)
        ring = cv2.dilate(s.lesion_mask.astype(np.uint8), ring_kernel, iterations=2).astype(bool)
        ring &= ~s.lesion_mask & s.fan_mask
        assert s.clean[s.lesion_mask].mean() + 15 < s.clean[ring].mean()


def _lesion_contrast(s) -> float:
    ring = cv2.dilate(s.lesion_mask.astype(np.uint8), np.ones((9, 9), np.uint8), iterations=2).astype(bool)
    ring &= ~s.lesion_mask & s.fan_mask
    return float(s.clean[ring].mean() - s.clean[s.lesion_mask].mean())


def test_contrast_knob_controls_lesion_conspicuity() -> None:
    def mean_contrast(c: float) -> float:
        return float(np.mean([_lesion_contrast(generate_sample(4, i, PhantomConfig(size=96, overlays=False, contrast=c)))
                              for i in range(8)]))

    easy, hard, none = mean_contrast(1.0), mean_contrast(0.4), mean_contrast(0.0)
    assert easy > hard + 15 and hard > none and abs(none) < 6


def test_noise_knob_adds_receiver_noise_that_grows_with_depth() -> None:
    quiet = simulate_bmode(sample_rng(5, 0), PhantomConfig(size=96, noise=0.0), "linear", "normal")
    loud = simulate_bmode(sample_rng(5, 0), PhantomConfig(size=96, noise=5.0), "linear", "normal")
    assert np.array_equal(quiet.speckle, loud.speckle)            # same anatomy and speckle
    rel = np.abs(loud.envelope - quiet.envelope) / quiet.envelope.mean(axis=1, keepdims=True)
    assert rel[-10:].mean() > 3 * rel[:10].mean() and rel[-10:].mean() > 0.1


def test_speckle_field_envelope_snr_is_rayleigh() -> None:
    rng = np.random.default_rng(0)
    iq = speckle_field(rng, np.ones((256, 256), np.float32), 0.8, 1.1, 2.5, np.linspace(0, 1, 256))
    env = np.hypot(iq[..., 0], iq[..., 1])
    assert env.mean() / env.std() == pytest.approx(1.91, abs=0.04)
    assert (env ** 2).mean() == pytest.approx(1.0, abs=0.05)      # unit power at every depth blend


def test_simulated_speckle_snr_in_homogeneous_tissue() -> None:
    """In the liver-like parenchyma of convex frames the envelope before log compression is Rayleigh."""
    snrs = []
    for i in range(4):
        b = simulate_bmode(sample_rng(21, i), PhantomConfig(size=160), "convex", "normal")
        region = b.speckle[100:150] / np.sqrt(cv2.GaussianBlur(b.echogenicity, (0, 0), 3)[100:150])
        snrs.append(region.mean() / region.std())
    assert np.mean(snrs) == pytest.approx(1.91, abs=0.12)


def test_class_balance_and_normal() -> None:
    normal = [generate_sample(0, i, PhantomConfig(size=64, include_normal=True, normal_fraction=1.0)) for i in range(3)]
    assert all(s.label == "normal" and s.lesion_box is None and s.label_index == 2 for s in normal)
    labels = [generate_sample(1, i, PhantomConfig(size=64, overlays=False)).label for i in range(40)]
    assert 10 <= labels.count("malignant") <= 30 and set(labels) == {"benign", "malignant"}
    assert PHANTOM_CLASSES == ("benign", "malignant", "normal")


def test_manifest_round_trips(tmp_path: Path) -> None:
    cfg = PhantomConfig(size=64)
    manifest = write_phantom_dataset(tmp_path, n=5, seed=2, cfg=cfg, progress=False)
    rows = pq.read_table(manifest).to_pylist()
    assert [r["index"] for r in rows] == list(range(5))
    for r in rows:
        s = generate_sample(2, r["index"], cfg)
        box = (r["lesion_x0"], r["lesion_y0"], r["lesion_x1"], r["lesion_y1"])
        assert (r["label"], r["label_index"], r["geometry"], r["seed"]) == (s.label, s.label_index, s.geometry, 2)
        assert box == (s.lesion_box or (None,) * 4)
        assert all((tmp_path / r[k]).is_file() for k in ("path", "mask_path", "clean_path"))
    # Resume: a second run rewrites nothing and gives the same manifest; other settings are refused.
    mtime = (tmp_path / rows[0]["path"]).stat().st_mtime_ns
    assert pq.read_table(write_phantom_dataset(tmp_path, n=5, seed=2, cfg=cfg, progress=False)).to_pylist() == rows
    assert (tmp_path / rows[0]["path"]).stat().st_mtime_ns == mtime
    with pytest.raises(DataError, match="other settings or seed"):
        write_phantom_dataset(tmp_path, n=5, seed=3, cfg=cfg, progress=False)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="size"):
        PhantomConfig(size=8)
    with pytest.raises(ConfigError, match="malignant_fraction"):
        PhantomConfig(malignant_fraction=1.5)


def _cli(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exc:       # argparse usage errors exit from inside parse_args
        return int(exc.code)


@pytest.mark.parametrize("argv", [
    ["--n", "-1", "--out", "{tmp}/o"],
    ["--n", "2", "--out", "{tmp}/a_file/sub"],
    ["--n", "2", "--out", "{tmp}/o", "--geometry", "sector"],
    ["--n", "2", "--out", "{tmp}/o", "--size", "4"],
    ["--n", "two", "--out", "{tmp}/o"],
    ["--n", "2"],
])
def test_cli_bad_arguments_exit_2_with_one_line(argv: list[str], tmp_path: Path, capsys) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    code = _cli(["phantom", *[a.format(tmp=tmp_path) for a in argv]])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_writes_dataset_and_sheet(tmp_path: Path, capsys) -> None:
    code = _cli(["phantom", "--n", "3", "--out", str(tmp_path / "set"), "--size", "64", "--no-overlays",
                 "--geometry", "convex", "--sheet", str(tmp_path / "sheet.png")])
    assert code == 0
    rows = pq.read_table(tmp_path / "set" / "manifest.parquet").to_pylist()
    assert [r["geometry"] for r in rows] == ["convex"] * 3
    assert not _png(tmp_path / "set" / rows[0]["mask_path"]).any()
    sheet = _png(tmp_path / "sheet.png")
    assert sheet.ndim == 3 and sheet.shape[1] == 4 * (64 + 4)


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_lesion_masks_written_exactly_and_match_the_lesion_geometry(tmp_path: Path) -> None:
    cfg = PhantomConfig(size=96, include_normal=True, normal_fraction=0.25)
    manifest = write_phantom_dataset(tmp_path, n=16, seed=6, cfg=cfg, progress=False)
    rows = pq.read_table(manifest).to_pylist()
    shapes = {"benign": [], "malignant": []}
    for r in rows:
        s = generate_sample(6, r["index"], cfg)
        mask = _png(tmp_path / r["lesion_mask_path"])
        assert mask.shape == (96, 96) and set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask == 255, s.lesion_mask)               # the exact truth, bit for bit
        assert not (s.lesion_mask & ~s.fan_mask).any()                  # never outside the scan sector
        if r["label"] == "normal":
            assert not mask.any() and r["lesion_x0"] is None
            continue
        assert _mask_box(mask) == (r["lesion_x0"], r["lesion_y0"], r["lesion_x1"], r["lesion_y1"])
        x0, y0, x1, y1 = _mask_box(mask)
        shapes[r["label"]].append((y1 - y0) / (x1 - x0))
        # The mask is the lesion itself: darker than the tissue ring around it in the clean image.
        ring = cv2.dilate(s.lesion_mask.astype(np.uint8), np.ones((5, 5), np.uint8), iterations=2).astype(bool)
        ring &= ~s.lesion_mask & s.fan_mask
        assert s.clean[s.lesion_mask].mean() < s.clean[ring].mean()
    assert {r["label"] for r in rows} == {"benign", "malignant", "normal"}
    assert np.mean(shapes["malignant"]) > 1.0 > np.mean(shapes["benign"])  # taller than wide vs wider than tall
