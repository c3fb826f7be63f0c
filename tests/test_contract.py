"""usfmae.contract: one data contract (dict forms, resolution, overrides) and one normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from usfmae.contract import DataContract, imagenet_contract, normalise, prepare, resolve_contract
from usfmae.errors import ConfigError

C64 = DataContract(64, 1, (0.5,), (0.25,), "stretch")


def test_round_trip_and_defaults():
    assert DataContract.from_dict(C64.to_dict()) == C64
    assert C64.to_dict() == {"img_size": 64, "in_chans": 1, "mean": [0.5], "std": [0.25], "fit": "stretch"}
    assert DataContract(8, 1, [0.1], [0.2]).fit == "pad"


def test_from_legacy_data_config_and_timm():
    legacy = {"img_size": 64, "in_chans": 1, "mean": [0.449], "std": [0.226]}
    assert DataContract.from_dict(legacy) == DataContract(64, 1, (0.449,), (0.226,), "pad")
    timm = {"input_size": [3, 224, 224], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert DataContract.from_dict(timm) == imagenet_contract(224, 3)
    assert DataContract.from_dict(C64.timm_cfg()) == C64.replace(fit="pad")  # timm has no fit field


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(img_size=8, in_chans=1, mean=(0.1, 0.2), std=(0.3,)), "mean/std"),
    (dict(img_size=8, in_chans=1, mean=(0.1,), std=(0.0,)), "positive"),
    (dict(img_size=8, in_chans=1, mean=(0.1,), std=(0.2,), fit="crop"), "fit"),
])
def test_invalid(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DataContract(**kwargs)


def test_imagenet_contract():
    assert imagenet_contract() == DataContract(224, 1, (0.449,), (0.226,), "pad")
    assert imagenet_contract(64, 3, "stretch").mean == (0.485, 0.456, 0.406)


class _WithContract(torch.nn.Module):
    data_contract = C64


class _Timm(torch.nn.Module):
    pretrained_cfg = {"input_size": (3, 96, 96), "mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6)}


@pytest.mark.parametrize(("source", "expected"), [
    (C64, C64),
    (_WithContract(), C64),
    ({"model": {}, "data_contract": C64.to_dict()}, C64),
    ({"model": {}, "data_config": {"img_size": 32, "in_chans": 1, "mean": [0.5], "std": [0.25]}},
     DataContract(32, 1, (0.5,), (0.25,), "pad")),
    ({"model_cfg": {"img_size": 64, "patch_size": 8, "in_chans": 1, "mean": [0.5], "std": [0.25], "fit": "stretch"}},
     C64),
    (_Timm(), DataContract(96, 3, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6))),
    (None, imagenet_contract(224, 3)),
    (torch.nn.Linear(2, 2), imagenet_contract(224, 3)),
])
def test_resolve_contract_sources(source, expected):
    assert resolve_contract(source) == expected


def test_resolve_contract_overrides():
    assert resolve_contract(C64, fit="pad").fit == "pad"
    assert resolve_contract(C64, img_size=32).img_size == 32
    rgb = resolve_contract(C64, in_chans=3)  # statistics belong to the channel count
    assert rgb.in_chans == 3 and rgb.mean == (0.485, 0.456, 0.406)
    assert resolve_contract(None, img_size=64, in_chans=1) == imagenet_contract(64, 1)


def test_normalise_golden_uint8_and_float():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    assert normalise(x, C64).flatten().tolist() == pytest.approx([-2.0, -1.2, 2.0], abs=1e-6)
    f = x.float() / 255.0
    assert torch.allclose(normalise(f, C64), normalise(x, C64), atol=1e-6)
    assert normalise(x, C64).dtype == torch.float32
    assert normalise(x[0], C64).shape == (1, 1, 3)  # one (C, H, W) image works too


def test_normalise_per_channel_matches_formula():
    c = imagenet_contract(4, 3)
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor(c.mean).view(1, 3, 1, 1)
    std = torch.tensor(c.std).view(1, 3, 1, 1)
    assert torch.allclose(normalise(x, c), (x / 255.0 - mean) / std, atol=1e-5)
    with pytest.raises(ValueError, match="channels"):
        normalise(x, C64)


def test_prepare_fits_and_transposes():
    img = np.zeros((20, 40, 3), np.uint8)
    img[..., 1] = 255
    out = prepare(img, DataContract(8, 1, (0.5,), (0.25,), "pad"))
    assert out.dtype == torch.uint8 and out.shape == (1, 8, 8)
    assert out[0, 0].tolist() == [0] * 8 and out[0, 4].tolist() == [150] * 8  # luma of pure green: 150
    assert prepare(img, DataContract(8, 3, (0.5,) * 3, (0.25,) * 3, "stretch"))[:, 0, 0].tolist() == [0, 255, 0]
