"""Encoder feature maps at several depths (equal to timm's), the segmentation heads and the U-Net baseline."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from usfmae.errors import ConfigError
from usfmae.models.classifier import encoder_from_mae
from usfmae.models.mae import default_feature_indices
from usfmae.models.registry import create_model
from usfmae.models.seg_linear import LinearSegmenter
from usfmae.models.seg_pyramid import PyramidSegmenter
from usfmae.models.seg_unet import create_unet


def _micro():
    torch.manual_seed(0)
    return encoder_from_mae(create_model("mae_vit_micro_patch8_64")).eval()


def _timm_twin(encoder):
    cfg = encoder.cfg
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, img_size=cfg.img_size,
                            patch_size=cfg.patch_size, in_chans=cfg.in_chans, embed_dim=cfg.embed_dim,
                            depth=cfg.depth, num_heads=cfg.num_heads)
    vit.load_state_dict(encoder.state_dict())
    return vit.eval()


@pytest.mark.parametrize("depth,expected", [(12, [3, 5, 7, 11]), (24, [7, 11, 15, 23]), (4, [0, 1, 2, 3])])
def test_default_feature_indices(depth: int, expected: list[int]) -> None:
    assert default_feature_indices(depth) == expected


@pytest.mark.parametrize("norm", [False, True])
def test_forward_intermediates_equal_timm(norm: bool) -> None:
    encoder = _micro()
    x = torch.randn(2, 1, 64, 64)
    ours = encoder.forward_intermediates(x, [0, 2, 3], norm=norm)
    theirs = _timm_twin(encoder).forward_intermediates(x, indices=[0, 2, 3], norm=norm, intermediates_only=True)
    assert [t.shape for t in ours] == [(2, 128, 8, 8)] * 3
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # The last normed map is forward_features' patch tokens on the grid; no masking anywhere.
    tokens = encoder.forward_features(x)[:, 1:].transpose(1, 2).reshape(2, 128, 8, 8)
    torch.testing.assert_close(encoder.forward_intermediates(x, 1, norm=True)[0], tokens)


@pytest.mark.parametrize("head", [LinearSegmenter, PyramidSegmenter])
@pytest.mark.parametrize("backbone", ["ours", "timm"])
def test_heads_give_image_sized_logits_and_train_the_encoder(head, backbone: str) -> None:
    encoder = _micro() if backbone == "ours" else _timm_twin(_micro())
    model = head(encoder, num_classes=3).train()
    x = torch.randn(2, 1, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 3, 64, 64)
    logits.square().mean().backward()
    assert encoder.blocks[-1].mlp.fc2.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for n, p in model.named_parameters() if not n.startswith("encoder."))


def test_pyramid_levels_and_bad_indices() -> None:
    model = PyramidSegmenter(_micro(), 2)
    assert model.indices == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="four blocks"):
        PyramidSegmenter(_micro(), 2, indices=[1, 2])


def test_unet_resnet50_shapes_and_local_weights(tmp_path: Path) -> None:
    model = create_unet(2, in_chans=1, img_size=64)
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 2, 64, 64)
    torch.manual_seed(1)
    state = torchvision.models.resnet50(weights=None).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "r50.safetensors"))
    loaded = create_unet(2, in_chans=1, weights_path=tmp_path / "r50.safetensors", img_size=64)
    torch.testing.assert_close(loaded.encoder.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])
    torch.testing.assert_close(loaded.encoder.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    with pytest.raises(ConfigError, match="multiple of 32"):
        create_unet(2, img_size=48)
