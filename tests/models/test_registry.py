"""Registry variants and decoder heads: the paper's text (8) vs the released weights (16)."""

from __future__ import annotations

import logging

import pytest
import torch

from usfmae.errors import UsfmaeError
from usfmae.models.checkpoint import build_from_checkpoint, load_mae_weights
from usfmae.models.mae import MAEConfig, MaskedAutoencoderViT
from usfmae.models.registry import create_model, describe_model, find_variant, list_models, variant_config
from usfmae.train.pretrain import PretrainConfig, _model_overrides

torch.set_num_threads(1)


def test_both_base_variants_registered_and_labelled():
    paper, released = variant_config("mae_vit_base_patch16"), variant_config("mae_vit_base_patch16_dec16")
    assert (paper.decoder_num_heads, released.decoder_num_heads) == (8, 16)
    assert {k: v for k, v in paper.to_dict().items() if k != "decoder_num_heads"} == {
        k: v for k, v in released.to_dict().items() if k != "decoder_num_heads"}
    assert "8 heads (the paper's text)" in describe_model("mae_vit_base_patch16")
    assert "16 heads (the released USF-MAE weights" in describe_model("mae_vit_base_patch16_dec16")
    assert all(describe_model(name) for name in list_models())
    with pytest.raises(UsfmaeError, match="unknown model 'nope'"):
        describe_model("nope")


def test_find_variant_ignores_data_fields():
    assert find_variant(variant_config("mae_vit_base_patch16_dec16", in_chans=3, img_size=128)) == (
        "mae_vit_base_patch16_dec16")
    assert find_variant(variant_config("mae_vit_base_patch16", mask_ratio=0.75)) == "mae_vit_base_patch16"
    assert find_variant(variant_config("mae_vit_micro_patch8_64", depth=3)) is None


def _wide_decoder(heads: int) -> MaskedAutoencoderViT:
    """A small model with the released decoder width (512), so the head check applies."""
    torch.manual_seed(0)
    return MaskedAutoencoderViT(MAEConfig(img_size=32, patch_size=16, in_chans=1, embed_dim=64, depth=1,
                                          num_heads=2, decoder_embed_dim=512, decoder_depth=1,
                                          decoder_num_heads=heads))


@pytest.fixture(scope="module")
def foreign_file(tmp_path_factory):
    """A facebookresearch-style file: {"model": state_dict} with no recorded config."""
    path = tmp_path_factory.mktemp("foreign") / "checkpoint-99.pth"
    torch.save({"model": _wide_decoder(16).state_dict(), "epoch": 99}, path)
    return path


def test_released_layout_into_8_head_model_is_refused(foreign_file):
    model = _wide_decoder(8)
    with pytest.raises(UsfmaeError, match=r"\(16 heads\) but the model has 8 decoder heads; use "
                                          r"--decoder-num-heads 16"):
        load_mae_weights(model, foreign_file)
    load_mae_weights(model, foreign_file, encoder_only=True)  # the decoder is not used: fine
    result = load_mae_weights(_wide_decoder(16), foreign_file)
    assert result.kept_init == []


def test_released_layout_refusal_names_the_registered_variant(foreign_file, tmp_path):
    from test_checkpoint import released_layout

    path = tmp_path / "USF-MAE_full_pretrain_43dataset_100epochs.pt"
    torch.save(released_layout(torch.Generator().manual_seed(0)), path)
    with torch.device("meta"):
        paper = create_model("mae_vit_base_patch16", in_chans=3)
    with pytest.raises(UsfmaeError, match="mae_vit_base_patch16 has 8 decoder heads; use --model "
                                          "mae_vit_base_patch16_dec16 or --decoder-num-heads 16"):
        load_mae_weights(paper, path)


def test_building_a_paper_variant_from_released_weights_takes_16_heads(foreign_file, caplog):
    from test_checkpoint import released_layout

    state = released_layout(torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING, logger="usfmae.models.checkpoint"):
        model = build_from_checkpoint({"model": state}, model_name="mae_vit_base_patch16", in_chans=3)
    assert model.cfg.decoder_num_heads == 16 and model.model_name == "mae_vit_base_patch16_dec16"
    assert "released USF-MAE / facebookresearch MAE layout (16 heads)" in caplog.text
    assert "mae_vit_base_patch16 (ViT-B/16, decoder 8 x 512 with 8 heads" in caplog.text
    inferred = build_from_checkpoint({"model": state})
    assert inferred.model_name == "mae_vit_base_patch16_dec16" and inferred.cfg == model.cfg
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model.eval()(x, generator=torch.Generator().manual_seed(2))[1]
        want = inferred.eval()(x, generator=torch.Generator().manual_seed(2))[1]
    assert torch.equal(got, want)


def test_explicit_decoder_heads_win_without_a_warning(caplog):
    from test_checkpoint import released_layout

    state = released_layout(torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING, logger="usfmae.models.checkpoint"):
        model = build_from_checkpoint({"model": state}, model_name="mae_vit_base_patch16", in_chans=3,
                                      decoder_num_heads=8)
    assert model.cfg.decoder_num_heads == 8 and model.model_name == "mae_vit_base_patch16"
    assert caplog.text == ""


def test_our_own_checkpoints_keep_their_recorded_heads(tmp_path):
    from usfmae.models.checkpoint import save_model

    model = _wide_decoder(8)
    model.model_name = "custom"
    save_model(model, tmp_path / "ours.pt")
    assert build_from_checkpoint(tmp_path / "ours.pt").cfg.decoder_num_heads == 8


def test_pretrain_decoder_num_heads_option():
    cfg = PretrainConfig(model="mae_vit_base_patch16", decoder_num_heads=16)
    assert _model_overrides(cfg)["decoder_num_heads"] == 16
    assert "decoder_num_heads" not in _model_overrides(PretrainConfig())
    with torch.device("meta"):
        assert create_model(cfg.model, **_model_overrides(cfg)).decoder_blocks[0].attn.num_heads == 16
