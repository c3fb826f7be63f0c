"""The paper's augmentations: exact geometry, zoom-out padding, seeding, per-image == per-batch."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from usfmae.contract import DataContract, normalise
from usfmae.data import transforms as T

NO_GEOMETRY = T.AugmentConfig(rotation=(0.0, 0.0), hflip=0.0, vflip=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0))


def _params(**values: float) -> T.AugmentParams:
    base = dict(angle=0.0, hflip=0.0, vflip=0.0, crop_w=1.0, crop_h=1.0, crop_x0=0.0, crop_y0=0.0, gamma=1.0, gain=1.0)
    base.update(values)
    return T.AugmentParams(**{k: torch.tensor([v], dtype=torch.float64) for k, v in base.items()})


def _image(seed: int = 0, shape: tuple[int, ...] = (1, 32, 32)) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize(("params", "expected"), [
    (dict(), lambda x: x),
    (dict(hflip=1.0), lambda x: x.flip(-1)),
    (dict(vflip=1.0), lambda x: x.flip(-2)),
    (dict(angle=90.0), lambda x: torch.rot90(x, 1, (-2, -1))),  # counter-clockwise on screen
    (dict(angle=90.0, hflip=1.0), lambda x: torch.rot90(x.flip(-1), 1, (-2, -1))),  # flip, then rotate
    # 2x zoom into the centre of a bright square: only the square is seen (bilinear taps included).
    (dict(crop_w=0.5, crop_h=0.5, crop_x0=0.25, crop_y0=0.25), lambda x: torch.full_like(x, 200)),
])
@pytest.mark.parametrize("path", ["image", "batch"])
def test_exact_geometry(params: dict, expected, path: str) -> None:
    x = _image()
    x[:, 6:26, 6:26] = 200 if "crop_w" in params else x[:, 6:26, 6:26]
    p = _params(**params)
    out = T.apply_params_image(x, p) if path == "image" else T.apply_params_batch(x[None], p)[0]
    torch.testing.assert_close(out, expected(x).float() / 255, atol=1e-6, rtol=0)


@pytest.mark.parametrize("path", ["image", "batch"])
def test_scale_above_one_zooms_out_with_zero_padding(path: str) -> None:
    """Area scale 4 (window twice the image per side), centred: the image fills exactly the middle."""
    x = torch.full((1, 32, 32), 255, dtype=torch.uint8)
    p = _params(crop_w=2.0, crop_h=2.0, crop_x0=-0.5, crop_y0=-0.5)
    out = T.apply_params_image(x, p) if path == "image" else T.apply_params_batch(x[None], p)[0]
    expected = torch.zeros(1, 32, 32)
    expected[:, 8:24, 8:24] = 1.0
    assert torch.equal(out, expected)


def test_paper_scale_range_really_zooms_out() -> None:
    p = T.sample_params(20000, torch.Generator().manual_seed(0), T.PAPER)
    area = p.crop_w * p.crop_h
    assert torch.allclose(area.min(), torch.tensor(0.5, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(area.max(), torch.tensor(2.0, dtype=torch.float64), atol=1e-3)
    assert 0.65 < (area > 1).double().mean().item() < 0.69  # P(s > 1) = 1/1.5 for s ~ U(0.5, 2)
    # A window larger than the image contains it: its left edge is at or left of the image's.
    wide = p.crop_w > 1
    assert (p.crop_x0[wide] <= 0).all() and (p.crop_x0[wide] + p.crop_w[wide] >= 1).all()
    assert (p.angle >= 0).all() and (p.angle <= 90).all()
    assert 0.48 < p.hflip.mean().item() < 0.52 and 0.48 < p.vflip.mean().item() < 0.52


def test_seeded_and_reproducible() -> None:
    x = _image(1)
    a = T.augment_image(x, torch.Generator().manual_seed(3), T.PAPER, (0.5,), (0.25,))
    b = T.augment_image(x, torch.Generator().manual_seed(3), T.PAPER, (0.5,), (0.25,))
    c = T.augment_image(x, torch.Generator().manual_seed(4), T.PAPER, (0.5,), (0.25,))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32 and a.shape == (1, 32, 32)


def test_batch_path_equals_per_image_path_for_the_same_draws() -> None:
    x = _image(2, (6, 3, 32, 32))
    cfg = dataclasses.replace(T.PAPER, gamma=(0.7, 1.4), gain=(0.8, 1.2))
    batch = T.augment_batch(x, torch.Generator().manual_seed(5), cfg)
    params = T.sample_params(6, torch.Generator().manual_seed(5), cfg)
    per_image = torch.stack([T.apply_params_image(x[i], params, i) for i in range(6)])
    torch.testing.assert_close(batch, per_image, atol=1e-4, rtol=0)


def test_identity_config_is_plain_normalisation() -> None:
    x = _image(3, (2, 1, 16, 16))
    out = T.augment_batch(x, torch.Generator().manual_seed(0), NO_GEOMETRY, (0.5,), (0.25,))
    torch.testing.assert_close(out, (x.float() / 255 - 0.5) / 0.25, atol=1e-5, rtol=0)  # float32 grid
    white = torch.tensor([[[255]]], dtype=torch.uint8)  # normalisation is usfmae.contract's, the one for every path
    assert normalise(white, DataContract(1, 1, (0.5,), (0.5,))).item() == pytest.approx(1.0, abs=1e-6)


def test_generator_consumption_is_fixed() -> None:
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    T.sample_params(4, g1, T.PAPER)
    T.sample_params(4, g2, T.IDENTITY)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))
