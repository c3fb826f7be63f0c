"""Attention rollout, CLS attention and Grad-CAM with exact expectations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from usfmae.errors import UsfmaeError
from usfmae.eval.explain import (
    attention_rollout,
    cls_attention,
    explain,
    grad_cam,
    overlay,
    save_overlays,
    vit_attentions,
)
from usfmae.models.registry import create_model

torch.set_num_threads(1)


def test_rollout_of_identity_attention_is_identity():
    eye = torch.eye(5).expand(2, 3, 5, 5)  # (B, heads, N, N)
    assert torch.equal(attention_rollout([eye, eye, eye]), torch.eye(5).expand(2, 5, 5))


@pytest.mark.parametrize("blocks", [1, 2, 4])
def test_rollout_of_uniform_attention_has_the_closed_form(blocks):
    n = 5
    uniform = torch.full((1, 2, n, n), 1.0 / n)
    # (0.5 U + 0.5 I)^L = 0.5^L I + (1 - 0.5^L) U, since U @ U = U.
    expected = 0.5**blocks * torch.eye(n) + (1 - 0.5**blocks) / n
    torch.testing.assert_close(attention_rollout([uniform] * blocks)[0], expected, rtol=0, atol=1e-7)
    assert torch.equal(attention_rollout([uniform], residual=False)[0], uniform[0, 0])


def test_cls_attention_is_the_head_mean_of_the_last_block():
    first = torch.rand(1, 2, 3, 3)
    last = torch.tensor([[[[0.2, 0.3, 0.5], [1, 0, 0], [1, 0, 0]], [[0.0, 0.5, 0.5], [1, 0, 0], [1, 0, 0]]]])
    torch.testing.assert_close(cls_attention([first, last]), torch.tensor([[0.1, 0.4, 0.5]]))


def test_captured_attention_is_what_the_blocks_apply():
    torch.manual_seed(0)
    model = create_model("mae_vit_micro_patch8_64").eval()
    x = torch.randn(2, 1, 64, 64)
    attentions = vit_attentions(model, x)
    assert len(attentions) == 4 and attentions[0].shape == (2, 4, 65, 65)
    torch.testing.assert_close(attentions[0].sum(-1), torch.ones(2, 4, 65))
    # Recompute block 0's output from the captured weights: equal to the model's own (SDPA) output.
    blk = model.blocks[0]
    tokens = torch.cat([(model.cls_token + model.pos_embed[:, :1]).expand(2, -1, -1),
                        model.patch_embed(x) + model.pos_embed[:, 1:]], dim=1)
    h = blk.norm1(tokens)
    v = blk.attn.qkv(h).reshape(2, 65, 3, 4, 32).permute(2, 0, 3, 1, 4)[2]
    mine = blk.attn.proj((attentions[0] @ v).transpose(1, 2).reshape(2, 65, 128))
    with torch.no_grad():
        torch.testing.assert_close(mine, blk.attn(h), rtol=1e-5, atol=1e-5)


def test_vit_maps_peak_on_the_attended_patch():
    """A block whose CLS query only matches one patch's key: rollout and CLS attention peak there."""
    torch.manual_seed(0)
    model = create_model("mae_vit_micro_patch8_64", depth=1).eval()
    x = torch.zeros(1, 1, 64, 64)
    x[..., 8:16, 40:48] = 5.0  # patch (row 1, col 5) = token 1 + 1 * 8 + 5
    with torch.no_grad():
        attn = model.blocks[0].attn
        attn.qkv.weight.zero_()
        attn.qkv.bias.zero_()
        # keys follow the patch projection's first channel; the CLS query is a large constant.
        model.patch_embed.proj.weight.zero_()
        model.patch_embed.proj.weight[0] = 1.0
        model.patch_embed.proj.bias.zero_()
        model.pos_embed.zero_()
        model.cls_token.zero_()
        model.blocks[0].norm1.weight.fill_(1.0)
        attn.qkv.weight[128, 0] = 1.0  # key channel 0 <- token channel 0
        attn.qkv.bias[0] = 50.0  # every query has channel 0 = 50
    for method in ("rollout", "cls"):
        maps = explain(model, x, method=method)
        assert maps.shape == (1, 64, 64) and maps.max() == 1.0 and maps.min() == 0.0
        peak = np.unravel_index(maps[0].argmax().item(), (64, 64))
        assert 8 <= peak[0] < 16 and 40 <= peak[1] < 48, method
        assert torch.all(maps[0, 8:16, 40:48] == 1.0)


class _TwoRegions(nn.Module):
    """features: channel 0 = image on the left half, channel 1 = right half; logit 0 reads channel 0."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Identity()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        left = torch.zeros_like(x)
        left[..., :, :8] = 1
        feats = self.features(torch.cat([x * left, x * (1 - left)], dim=1) * self.scale)
        pooled = feats.mean(dim=(2, 3))
        return torch.stack([pooled[:, 0], pooled[:, 1] * 0.0], dim=1)


def test_grad_cam_peaks_where_the_logit_looks():
    model = _TwoRegions()
    x = torch.ones(2, 1, 16, 16)
    cams = grad_cam(model, x, target=0, layer=model.features)
    assert cams.shape == (2, 16, 16)
    assert torch.all(cams[:, :, :7] == 1.0) and torch.all(cams[:, :, 9:] == 0.0)


def test_grad_cam_on_a_cnn_baseline_finds_its_last_feature_map():
    from usfmae.models.baselines import create_baseline

    torch.manual_seed(0)
    model = create_baseline("resnet50", num_classes=2, in_chans=1, img_size=64, small_input=True)
    maps = explain(model, torch.randn(2, 1, 64, 64), method="rollout")  # a CNN always gets Grad-CAM
    assert maps.shape == (2, 64, 64) and float(maps.min()) >= 0.0 and float(maps.max()) == 1.0


def test_bad_method_and_overlay_files(tmp_path):
    with pytest.raises(UsfmaeError, match="unknown explanation method 'saliency'"):
        explain(create_model("mae_vit_micro_patch8_64"), torch.zeros(1, 1, 64, 64), method="saliency")
    image = np.full((32, 48), 100, np.uint8)
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0] = 1.0
    out = overlay(image, heat)
    assert out.shape == (32, 48, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] > out[-1, -1, 0]  # red where the map is hot, blue where it is cold
    paths = save_overlays([image], heat[None], tmp_path, ["a/scan_1.png"])
    import cv2

    assert paths == [tmp_path / "scan_1.png"] and cv2.imread(str(paths[0])).shape == (32, 48, 3)
