"""Batched on-device augmentation: same pixels as the per-image CPU path, same distribution, seeded."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from usfmae.data.gpu_augment import GpuAugment, batch_theta, coerce_config
from usfmae.data.transforms import (
    IDENTITY,
    PAPER,
    AugmentConfig,
    AugmentParams,
    apply_params_image,
    augment_image,
)

torch.set_num_threads(1)
RAW = {"mean": [0.0], "std": [1.0]}  # output = pixels / 255, to compare with the [0, 1] CPU path


def _smooth_images(n: int, size: int, channels: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    imgs = [cv2.GaussianBlur(rng.uniform(0, 255, (size, size, channels)).astype(np.float32), (0, 0), 1.5)
            for _ in range(n)]
    arr = np.stack([i.reshape(size, size, channels) for i in imgs])
    arr = (arr - arr.min()) / (arr.max() - arr.min()) * 255
    return torch.from_numpy(arr.round().astype(np.uint8)).permute(0, 3, 1, 2).contiguous()


def _params(**values: float) -> AugmentParams:
    base = {"angle": 0.0, "hflip": 0.0, "vflip": 0.0, "crop_w": 1.0, "crop_h": 1.0, "crop_x0": 0.0,
            "crop_y0": 0.0, "gamma": 1.0, "gain": 1.0}
    base.update(values)
    return AugmentParams(**{k: torch.tensor([v], dtype=torch.float64) for k, v in base.items()})


@pytest.mark.parametrize("channels, cfg", [
    (1, PAPER), (3, PAPER), (1, AugmentConfig(gamma=(0.7, 1.4), gain=(0.8, 1.2))),  # + intensity jitter
])
def test_same_params_give_the_cpu_paths_pixels(channels, cfg):
    imgs = _smooth_images(6, 32, channels)
    aug = GpuAugment(cfg, 32, channels, [0.0] * channels, [1.0] * channels)
    params = aug.sample(6, torch.Generator().manual_seed(3))
    out = aug(imgs, params=params)
    for i in range(6):
        ref = apply_params_image(imgs[i], params, index=i)  # cv2.warpAffine, one image
        torch.testing.assert_close(out[i], ref, atol=2e-3, rtol=0)


@pytest.mark.parametrize("values, reference", [
    ({"hflip": 1.0}, lambda img: img[:, ::-1]),
    ({"vflip": 1.0}, lambda img: img[::-1]),
    ({"hflip": 1.0, "vflip": 1.0}, lambda img: img[::-1, ::-1]),
    ({"angle": 90.0}, lambda img: np.rot90(img, k=1)),  # counter-clockwise on screen, like torchvision
    # explicit OpenCV rotation about the centre (positive cv2 angles are counter-clockwise too)
    ({"angle": 37.0}, lambda img: cv2.warpAffine(img, cv2.getRotationMatrix2D((15.5, 15.5), 37.0, 1.0), (32, 32),
                                                 flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)),
    # top-left quadrant zoomed in x2: bilinear resize of the quadrant (border rows differ: skipped)
    ({"crop_w": 0.5, "crop_h": 0.5}, lambda img: cv2.resize(img[:16, :16], (32, 32), interpolation=cv2.INTER_LINEAR)),
])
def test_fixed_parameters_match_explicit_opencv(values, reference):
    img = _smooth_images(1, 32, 1)
    out = GpuAugment(PAPER, 32, 1, **RAW)(img, params=_params(**values))[0, 0].numpy() * 255
    ref = np.ascontiguousarray(reference(img[0, 0].numpy().astype(np.float32)))
    inner = (slice(1, -1),) * 2
    np.testing.assert_allclose(out[inner], ref[inner], atol=0.05)


def test_zoom_out_pads_with_zeros():
    white = torch.full((1, 1, 32, 32), 255, dtype=torch.uint8)
    # crop box twice the image side (scale 4), image placed at the box's centre
    out = GpuAugment(PAPER, 32, 1, **RAW)(white, params=_params(crop_w=2.0, crop_h=2.0, crop_x0=-0.5, crop_y0=-0.5))
    out = out[0, 0]
    assert torch.equal(out[8:24, 8:24], torch.ones(16, 16))  # the image, shrunk to half size
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[7:25, 7:25] = False  # one pixel of bilinear blending around the image edge
    assert torch.count_nonzero(out[outside]) == 0
    normalised = GpuAugment(PAPER, 32, 1, mean=[0.5], std=[0.25])(white, params=_params(crop_w=2.0, crop_h=2.0))
    assert torch.allclose(normalised[0, 0, -1, -1], torch.tensor(-2.0))  # padding = -mean / std


def test_seeded_determinism():
    imgs = _smooth_images(4, 32, 1)
    aug = GpuAugment(None, 24, 1, mean=[0.3], std=[0.2])
    a = aug(imgs, torch.Generator().manual_seed(7))
    b = aug(imgs, torch.Generator().manual_seed(7))
    c = aug(imgs, torch.Generator().manual_seed(8))
    assert a.shape == (4, 1, 24, 24) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="uint8"):
        aug(imgs.float())


def test_sampled_parameters_follow_the_paper_ranges():
    aug = GpuAugment(None, 32, 1, **RAW)
    p = aug.sample(2000, torch.Generator().manual_seed(0))
    assert stats.kstest(p.angle.numpy(), stats.uniform(0, 90).cdf).pvalue > 0.01
    for flip in (p.hflip, p.vflip):
        assert abs(flip.mean().item() - 0.5) < 4 * 0.5 / np.sqrt(2000)  # 4 sigma of a fair coin
    # |det| of the 2x2 part of theta is the crop area: it must be uniform on the paper's 0.5-2.0
    area = torch.linalg.det(batch_theta(p, 32, 32)[:, :, :2]).abs().numpy()
    assert stats.kstest(area, stats.uniform(0.5, 1.5).cdf).pvalue > 0.01
    assert (area > 1).mean() == pytest.approx(2 / 3, abs=0.05)  # zoom-out really happens


def _coverage_and_centroid(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: fraction of pixels showing the image, and the x centroid of its bright band."""
    xs = np.arange(batch.shape[-1])
    mass = batch.sum(axis=(-2, -1)) + 1e-9
    return (batch > 0.01).mean(axis=(-2, -1)), (batch.sum(axis=-2) * xs).sum(-1) / mass


def test_batch_and_per_image_paths_have_the_same_output_distribution():
    # a left band brighter than the rest makes flips and rotations visible in the centroid
    img = np.full((1, 24, 24), 40, np.uint8)
    img[:, :, :6] = 255
    n = 300
    batch = torch.from_numpy(img)[None].expand(n, 1, 24, 24).contiguous()
    gpu = GpuAugment(PAPER, 24, 1, **RAW)(batch, torch.Generator().manual_seed(1))[:, 0].numpy()
    gen = torch.Generator().manual_seed(2)  # an independent stream for the per-image path
    cpu = np.stack([augment_image(torch.from_numpy(img), gen)[0].numpy() for _ in range(n)])
    for a, b in zip(_coverage_and_centroid(gpu), _coverage_and_centroid(cpu), strict=True):
        assert stats.ks_2samp(a, b).pvalue > 0.01


@pytest.mark.parametrize("size, antialias", [(24, False), (16, True)])  # shrink >= 1.5x is antialiased
def test_resize_and_channel_adaptation_without_augmentation(size, antialias):
    imgs = _smooth_images(2, 32, 1)
    out = GpuAugment(IDENTITY, size, 3, mean=[0.0] * 3, std=[1.0] * 3, enabled=False)(imgs)
    ref = F.interpolate(imgs.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)
    torch.testing.assert_close(out, ref.expand(-1, 3, -1, -1) / 255, atol=1e-5, rtol=0)
    rgb = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 8, 8).contiguous()
    luma = GpuAugment(None, 8, 1, **RAW, enabled=False)(rgb)
    torch.testing.assert_close(luma, torch.full((1, 1, 8, 8), 0.299))


def test_config_coercion():
    assert coerce_config(None) is PAPER
    assert coerce_config({"rotation": [0, 30], "hflip": 0.0}) == AugmentConfig(rotation=(0, 30), hflip=0.0)
    with pytest.raises(ValueError, match="unknown augmentation"):
        coerce_config({"rotate": 3})
    with pytest.raises(ValueError, match="mean/std"):
        GpuAugment(None, 8, 3, mean=[0.5], std=[0.5])
