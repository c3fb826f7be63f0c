"""The MAE model: shapes, patchify, masking, loss, gradients, registry, and parity with timm's ViT."""

from __future__ import annotations

import math

import pytest
import timm  # a hard dependency: the parity tests fail, never skip, without it
import torch

from usfmae.contract import DataContract
from usfmae.errors import ConfigError, UsfmaeError
from usfmae.models.mae import MAEConfig, MaskedAutoencoderViT, sincos_pos_embed_2d
from usfmae.models.registry import create_model, list_models

torch.set_num_threads(1)


def small_model(img_size: int = 32, patch_size: int = 8, in_chans: int = 1, **kw) -> MaskedAutoencoderViT:
    torch.manual_seed(0)
    cfg = MAEConfig(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=32, depth=2, num_heads=2,
                    decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, **kw)
    return MaskedAutoencoderViT(cfg)


SHAPES = [(32, 8, 1), (32, 4, 3), (48, 16, 2), (64, 8, 1), (24, 12, 3)]


@pytest.mark.parametrize("img_size,patch,in_chans", SHAPES)
def test_forward_shapes(img_size, patch, in_chans):
    model = small_model(img_size, patch, in_chans, mask_ratio=0.5)
    imgs = torch.randn(2, in_chans, img_size, img_size)
    loss, pred, mask = model(imgs)
    L = (img_size // patch) ** 2
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert pred.shape == (2, L, patch * patch * in_chans)
    assert mask.shape == (2, L)
    latent, _, ids_restore = model.forward_encoder(imgs, 0.5)
    assert latent.shape == (2, 1 + int(L * 0.5), 32)
    assert ids_restore.shape == (2, L)
    assert model.forward_features(imgs).shape == (2, 1 + L, 32)


@pytest.mark.parametrize("img_size,patch,in_chans", SHAPES)
def test_unpatchify_inverts_patchify_exactly(img_size, patch, in_chans):
    model = small_model(img_size, patch, in_chans)
    imgs = torch.randn(3, in_chans, img_size, img_size, generator=torch.Generator().manual_seed(1))
    patches = model.patchify(imgs)
    assert patches.shape == (3, (img_size // patch) ** 2, patch * patch * in_chans)
    assert torch.equal(model.unpatchify(patches), imgs)


def test_patch_layout_is_row_col_channel():
    # The released decoder_pred expects each patch flattened as (row, col, channel), patches row-major.
    model = small_model(32, 8, 3)
    imgs = torch.arange(3 * 32 * 32, dtype=torch.float32).reshape(1, 3, 32, 32)
    patches = model.patchify(imgs)
    assert torch.equal(patches[0, 0], imgs[0, :, :8, :8].permute(1, 2, 0).reshape(-1))
    assert torch.equal(patches[0, 1], imgs[0, :, :8, 8:16].permute(1, 2, 0).reshape(-1))
    assert torch.equal(patches[0, 4], imgs[0, :, 8:16, :8].permute(1, 2, 0).reshape(-1))


@pytest.mark.parametrize("norm_pix", [False, True])
def test_loss_only_counts_masked_patches(norm_pix):
    model = small_model(32, 8, 1, norm_pix_loss=norm_pix)
    imgs = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    target = model.patchify(imgs)
    if norm_pix:
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    mask = torch.zeros(2, 16)
    mask[:, ::3] = 1
    garbage = torch.randn(target.shape, generator=torch.Generator().manual_seed(3)) * 100
    pred = torch.where(mask.bool().unsqueeze(-1), target, garbage)  # exact on masked, garbage on visible
    assert model.forward_loss(imgs, pred, mask).item() == 0.0
    # One unit of error in every pixel of the masked patches gives exactly 1.
    assert model.forward_loss(imgs, pred + mask.unsqueeze(-1), mask).item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.75, 0.9])
def test_random_masking_keeps_int_L_times_1_minus_r(ratio):
    model = small_model(40, 8, 1)  # L = 25, so int(L * (1 - r)) exercises rounding down
    L, D = 25, 4
    x = torch.randn(3, L, D, generator=torch.Generator().manual_seed(4))
    visible, mask, ids_restore = model.random_masking(x, ratio, generator=torch.Generator().manual_seed(5))
    keep = int(L * (1 - ratio))
    assert visible.shape == (3, keep, D)
    assert torch.equal(mask.sum(1), torch.full((3,), float(L - keep)))
    ids_shuffle = torch.argsort(ids_restore, dim=1)
    # ids_restore inverts the shuffle ...
    shuffled = torch.gather(x, 1, ids_shuffle.unsqueeze(-1).expand(-1, -1, D))
    assert torch.equal(torch.gather(shuffled, 1, ids_restore.unsqueeze(-1).expand(-1, -1, D)), x)
    # ... the visible tokens are the first `keep` of the shuffle, and exactly those are unmasked.
    assert torch.equal(shuffled[:, :keep], visible)
    assert torch.equal(torch.gather(mask, 1, ids_shuffle[:, :keep]), torch.zeros(3, keep))


def test_masking_is_reproducible_with_a_generator():
    model = small_model()
    imgs = torch.randn(2, 1, 32, 32)
    _, _, m1 = model(imgs, generator=torch.Generator().manual_seed(7))
    _, _, m2 = model(imgs, generator=torch.Generator().manual_seed(7))
    _, _, m3 = model(imgs, generator=torch.Generator().manual_seed(8))
    assert torch.equal(m1, m2) and not torch.equal(m1, m3)


@pytest.mark.parametrize("pos_embed", ["sincos", "learned"])
def test_every_trainable_parameter_gets_a_gradient(pos_embed):
    model = small_model(32, 8, 3, pos_embed=pos_embed, mask_ratio=0.5)
    loss, _, _ = model(torch.randn(2, 3, 32, 32))
    loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert ("pos_embed" in trainable) == (pos_embed == "learned")
    no_grad = [n for n, p in trainable.items() if p.grad is None or not torch.any(p.grad != 0)]
    assert no_grad == []


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    model = small_model(mask_ratio=0.5)
    imgs = torch.randn(2, 1, 32, 32)
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        loss, _, _ = model(imgs, generator=torch.Generator().manual_seed(0))
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b)


def test_bf16_autocast_keeps_a_float32_loss_and_mask():
    model = create_model("mae_vit_micro_patch8_64")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, pred, mask = model(torch.randn(2, 1, 64, 64))
    assert pred.dtype == torch.bfloat16 and loss.dtype == mask.dtype == torch.float32
    assert torch.isfinite(loss) and mask.sum().item() == 96


def test_sincos_table_layout():
    table = sincos_pos_embed_2d(16, 3)  # quarter = 4 frequencies; patch k is at row k // 3, col k % 3
    assert table.shape == (10, 16)
    assert torch.equal(table[0], torch.zeros(16))  # CLS row
    first = table[1]  # row 0, col 0: every sin is 0, every cos is 1
    assert torch.equal(first, torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4))
    col1 = table[2]  # row 0, col 1: the first half encodes the column with frequencies 10000^(-k/4)
    freqs = [10000 ** (-k / 4) for k in range(4)]
    assert col1[:4].tolist() == pytest.approx([math.sin(f) for f in freqs])
    assert col1[8:].tolist() == first[8:].tolist()  # row part unchanged
    assert table[4][8:12].tolist() == pytest.approx([math.sin(f) for f in freqs])  # row 1, col 0


def test_config_validation_and_defaults():
    assert MAEConfig(in_chans=1).mean == (0.449,) and MAEConfig(in_chans=3).std == (0.229, 0.224, 0.225)
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        MAEConfig(img_size=30, patch_size=8)
    with pytest.raises(ConfigError, match="mask_ratio"):
        MAEConfig(mask_ratio=1.0)
    with pytest.raises(ConfigError, match="mean/std"):
        MAEConfig(in_chans=3, mean=(0.5,))
    cfg = MAEConfig(in_chans=3, pos_embed="learned")
    assert MAEConfig.from_dict(cfg.to_dict()) == cfg


def test_wrong_input_size_is_a_clear_error():
    with pytest.raises(UsfmaeError, match=r"expects images \(B, 1, 32, 32\)"):
        small_model()(torch.randn(1, 1, 64, 64))


# ----------------------------------------------------------------------------------------------------
# Registry

EXPECTED_PARAMS_M = {  # millions of parameters, 1 input channel
    "mae_vit_base_patch16": 111.25, "mae_vit_base_patch16_dec16": 111.25, "mae_vit_large_patch16": 328.75, "mae_vit_small_patch16": 24.84,
    "mae_vit_tiny_patch16": 6.30, "mae_vit_tiny_patch8_64": 2.24, "mae_vit_micro_patch8_64": 0.93,
}


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_builds(name):
    with torch.device("meta"):  # shapes only: large variants would take seconds to initialise on CPU
        model = create_model(name)
    assert model.model_name == name
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(EXPECTED_PARAMS_M[name], abs=0.01)
    assert model.data_contract == DataContract(model.cfg.img_size, 1, (0.449,), (0.226,), "pad")


@pytest.mark.parametrize("name", ["mae_vit_tiny_patch8_64", "mae_vit_micro_patch8_64"])
def test_cpu_variants_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name)
    loss, pred, mask = model(torch.randn(2, 1, 64, 64))
    loss.backward()
    assert pred.shape == (2, 64, 64) and mask.sum().item() == 2 * 48  # mask 0.75 of 64 patches
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_paper_variant_and_overrides():
    with torch.device("meta"):
        base = create_model("mae_vit_base_patch16")
        rgb = create_model("mae_vit_base_patch16", in_chans=3, mask_ratio=0.75)
    cfg = base.cfg
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.decoder_embed_dim, cfg.decoder_depth,
            cfg.decoder_num_heads, cfg.mask_ratio, cfg.img_size) == (768, 12, 12, 512, 8, 8, 0.25, 224)
    assert rgb.data_contract.mean == (0.485, 0.456, 0.406) and rgb.cfg.mask_ratio == 0.75
    assert tuple(rgb.decoder_pred.weight.shape) == (16 * 16 * 3, 512)
    with pytest.raises(UsfmaeError, match="unknown model 'nope'"):
        create_model("nope")
    with pytest.raises(ConfigError, match="unknown model option"):
        create_model("mae_vit_micro_patch8_64", widht=3)


# ----------------------------------------------------------------------------------------------------
# Parity with timm


@pytest.mark.slow
def test_encoder_parity_with_timm_vit_base():
    torch.manual_seed(0)
    ours = create_model("mae_vit_base_patch16", in_chans=3).eval()
    theirs = timm.create_model("vit_base_patch16_224", num_classes=0, pretrained=False).eval()
    theirs.load_state_dict(ours.encoder_state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(x), theirs.forward_features(x))
        torch.testing.assert_close(ours.forward_features(x)[:, 0], theirs(x))


def test_encoder_parity_with_timm_small_grayscale():
    model = small_model(32, 8, 1, pos_embed="learned")
    theirs = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, in_chans=1, embed_dim=32, depth=2, num_heads=2, num_classes=0).eval()
    theirs.load_state_dict(model.encoder_state_dict(), strict=True)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().forward_features(x), theirs.forward_features(x))
