"""Encoder classifier, layer-wise lr decay groups, and the CNN/ViT baselines."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

from usfmae.errors import ConfigError, UsfmaeError
from usfmae.models.baselines import create_baseline
from usfmae.models.classifier import EncoderClassifier, encoder_from_mae, param_groups_layer_decay
from usfmae.models.registry import create_model

torch.set_num_threads(1)


@pytest.fixture()
def mae():
    torch.manual_seed(0)
    return create_model("mae_vit_micro_patch8_64").eval()


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_encoder_classifier_shapes_and_features(mae, pool):
    clf = EncoderClassifier(mae, num_classes=3, pool=pool, head_dropout=0.1).eval()
    x = torch.randn(4, 1, 64, 64)
    assert clf(x).shape == (4, 3)
    with torch.no_grad():
        tokens = mae.forward_features(x)
        expected = tokens[:, 0] if pool == "cls" else tokens[:, 1:].mean(1)
        torch.testing.assert_close(clf.forward_features(x), expected)
    names = [n for n, _ in clf.named_parameters()]
    assert not any("decoder" in n or "mask_token" in n for n in names)
    assert clf.data_contract == mae.data_contract


def test_encoder_copy_is_independent_of_the_mae(mae):
    encoder = encoder_from_mae(mae)
    with torch.no_grad():
        encoder.blocks[0].attn.qkv.weight.add_(1.0)
    assert not torch.equal(encoder.blocks[0].attn.qkv.weight, mae.blocks[0].attn.qkv.weight)
    assert torch.equal(encoder.norm.weight, mae.norm.weight)


def test_classifier_accepts_a_timm_vit():
    vit = timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=8, in_chans=1, embed_dim=32,
                                                           depth=2, num_heads=2, num_classes=0)
    clf = EncoderClassifier(vit, num_classes=2, pool="mean")
    assert clf(torch.randn(2, 1, 32, 32)).shape == (2, 2)


def test_classifier_rejects_bad_options(mae):
    with pytest.raises(ConfigError, match="pool"):
        EncoderClassifier(mae, 2, pool="max")
    with pytest.raises(ConfigError, match="num_classes"):
        EncoderClassifier(mae, 0)


@pytest.fixture()
def decay_groups(mae):
    clf = EncoderClassifier(mae, num_classes=2)  # micro: 4 blocks, so the top layer id is 5
    return clf, param_groups_layer_decay(clf, weight_decay=0.05, layer_decay=0.5)


def test_layer_decay_groups_cover_every_trainable_parameter_once(decay_groups):
    clf, groups = decay_groups
    by_name = {name: g for g in groups for name in g["param_names"]}
    trainable = [n for n, p in clf.named_parameters() if p.requires_grad]
    assert sorted(by_name) == sorted(trainable)
    assert sum(len(g["params"]) for g in groups) == len(trainable)
    assert "encoder.pos_embed" not in by_name  # fixed sin-cos: frozen, not optimised
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    clf(torch.randn(2, 1, 64, 64)).sum().backward()
    optimizer.step()


@pytest.mark.parametrize(("name", "layer", "scale", "wd"), [
    ("encoder.patch_embed.proj.weight", 0, 0.5**5, 0.05),
    ("encoder.patch_embed.proj.bias", 0, 0.5**5, 0.0),
    ("encoder.cls_token", 0, 0.5**5, 0.0),
    ("encoder.blocks.0.attn.qkv.weight", 1, 0.5**4, 0.05),
    ("encoder.blocks.0.norm1.weight", 1, 0.5**4, 0.0),
    ("encoder.blocks.3.mlp.fc2.weight", 4, 0.5, 0.05),
    ("encoder.norm.weight", 5, 1.0, 0.0),
    ("head.weight", 5, 1.0, 0.05),
    ("head.bias", 5, 1.0, 0.0),
])
def test_layer_decay_group_of_a_parameter(decay_groups, name: str, layer: int, scale: float, wd: float):
    _, groups = decay_groups
    group = next(g for g in groups if name in g["param_names"])
    assert (group["layer_id"], group["lr_scale"], group["weight_decay"]) == (layer, pytest.approx(scale), wd)


# ----------------------------------------------------------------------------------------------------
# Baselines


@pytest.mark.parametrize("name,in_chans,size,kwargs", [
    ("vgg19", 1, 32, {}),
    ("resnet50", 1, 64, {"small_input": True}),
    ("resnet50", 3, 64, {}),
    ("vit_b16", 1, 32, {"img_size": 32}),
])
def test_baseline_forward_shapes(name, in_chans, size, kwargs):
    torch.manual_seed(0)
    model = create_baseline(name, num_classes=3, in_chans=in_chans, **kwargs).eval()
    with torch.no_grad():
        assert model(torch.randn(2, in_chans, size, size)).shape == (2, 3)


def test_resnet_small_input_keeps_resolution():
    fast = create_baseline("resnet50", 2, small_input=True)
    plain = create_baseline("resnet50", 2)
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        stem = lambda m: m.maxpool(m.relu(m.bn1(m.conv1(x))))  # noqa: E731
        assert stem(fast).shape[-1] == 64 and stem(plain).shape[-1] == 16


def test_resnet_loads_local_imagenet_weights_with_summed_filters(tmp_path):
    torch.manual_seed(0)
    imagenet = torchvision.models.resnet50(weights=None)  # stands in for resnet50-0676ba61.pth
    torch.save(imagenet.state_dict(), tmp_path / "resnet50.pth")
    model = create_baseline("resnet50", num_classes=4, in_chans=1, weights_path=tmp_path / "resnet50.pth")
    torch.testing.assert_close(model.conv1.weight, imagenet.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(model.layer4[2].conv3.weight, imagenet.layer4[2].conv3.weight)
    assert model.fc.out_features == 4
    with pytest.raises(UsfmaeError, match="resnet50.pth: not VGG weights"):
        create_baseline("vgg19", 2, weights_path=tmp_path / "resnet50.pth")


@pytest.mark.slow
def test_vit_b16_loads_local_timm_weights(tmp_path):
    torch.manual_seed(0)
    imagenet = timm.create_model("vit_base_patch16_224", pretrained=False)  # 3 channels, 1000 classes
    torch.save(imagenet.state_dict(), tmp_path / "vit.pth")
    model = create_baseline("vit_b16", num_classes=2, in_chans=1, weights_path=tmp_path / "vit.pth", img_size=64)
    torch.testing.assert_close(model.patch_embed.proj.weight, imagenet.patch_embed.proj.weight.sum(1, keepdim=True))
    assert torch.equal(model.blocks[5].attn.qkv.weight, imagenet.blocks[5].attn.qkv.weight)
    assert model.pos_embed.shape == (1, 17, 768) and model.head.out_features == 2


def test_unknown_baseline_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown baseline 'resnet18'"):
        create_baseline("resnet18", 2)
