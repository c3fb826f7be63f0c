"""Checkpoint interop: released USF-MAE layout, facebookresearch MAE, timm export/import, adaptation, errors."""

from __future__ import annotations

import argparse
import json

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from usfmae.errors import UsfmaeError
from usfmae.models.checkpoint import (
    adapt_input_conv,
    adapt_pred_channels,
    build_from_checkpoint,
    checkpoint_metadata,
    export_encoder,
    load_mae_weights,
    read_checkpoint,
    resample_pos_embed,
    save_model,
)
from usfmae.models.encoder import load_encoder
from usfmae.models.registry import create_model

torch.set_num_threads(1)


def released_layout(gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A state dict written from the key list of the released USF-MAE file (not from our model)."""
    sd: dict[str, torch.Tensor] = {}

    def add(name, *shape):
        sd[name] = torch.randn(*shape, generator=gen) * 0.02

    add("cls_token", 1, 1, 768)
    add("pos_embed", 1, 197, 768)
    add("patch_embed.proj.weight", 768, 3, 16, 16)
    add("patch_embed.proj.bias", 768)
    for prefix, dim, depth in (("blocks", 768, 12), ("decoder_blocks", 512, 8)):
        for i in range(depth):
            for norm in ("norm1", "norm2"):
                add(f"{prefix}.{i}.{norm}.weight", dim)
                add(f"{prefix}.{i}.{norm}.bias", dim)
            add(f"{prefix}.{i}.attn.qkv.weight", 3 * dim, dim)
            add(f"{prefix}.{i}.attn.qkv.bias", 3 * dim)
            add(f"{prefix}.{i}.attn.proj.weight", dim, dim)
            add(f"{prefix}.{i}.attn.proj.bias", dim)
            add(f"{prefix}.{i}.mlp.fc1.weight", 4 * dim, dim)
            add(f"{prefix}.{i}.mlp.fc1.bias", 4 * dim)
            add(f"{prefix}.{i}.mlp.fc2.weight", dim, 4 * dim)
            add(f"{prefix}.{i}.mlp.fc2.bias", dim)
    add("norm.weight", 768)
    add("norm.bias", 768)
    add("mask_token", 1, 1, 512)
    add("decoder_embed.weight", 512, 768)
    add("decoder_embed.bias", 512)
    add("decoder_pos_embed", 1, 197, 512)
    add("decoder_norm.weight", 512)
    add("decoder_norm.bias", 512)
    add("decoder_pred.weight", 16 * 16 * 3, 512)
    add("decoder_pred.bias", 16 * 16 * 3)
    return sd


@pytest.fixture(scope="module")
def released_file(tmp_path_factory):
    state = released_layout(torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("released") / "USF-MAE_full_pretrain_43dataset_100epochs.pt"
    torch.save(state, path)
    return path, state


def micro(**kw):
    torch.manual_seed(0)
    return create_model("mae_vit_micro_patch8_64", **kw)


def test_import_released_checkpoint_as_is(released_file):
    path, state = released_file
    model = build_from_checkpoint(path)  # architecture inferred from shapes
    cfg = model.cfg
    assert (cfg.in_chans, cfg.img_size, cfg.patch_size, cfg.depth, cfg.decoder_depth, cfg.decoder_num_heads) == (
        3, 224, 16, 12, 8, 16)
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    # Fixed sin-cos tables stay frozen; everything else trains.
    assert not model.pos_embed.requires_grad and not model.decoder_pos_embed.requires_grad
    assert isinstance(model.cls_token, torch.nn.Parameter) and model.cls_token.requires_grad
    assert loaded["cls_token"].data_ptr() != state["cls_token"].data_ptr()  # no aliasing of the caller's tensors


def test_import_released_checkpoint_into_grayscale_paper_model(released_file):
    path, state = released_file
    model = build_from_checkpoint(path, model_name="mae_vit_base_patch16")  # in_chans=1
    # The released decoder has 16 heads; the paper-text variant's 8 would misuse its weights.
    assert model.cfg.in_chans == 1 and model.cfg.decoder_num_heads == 16
    torch.testing.assert_close(model.patch_embed.proj.weight, state["patch_embed.proj.weight"].sum(1, keepdim=True))
    pred_w = state["decoder_pred.weight"].reshape(256, 3, 512).mean(1)
    torch.testing.assert_close(model.decoder_pred.weight, pred_w)
    assert torch.equal(model.blocks[11].attn.qkv.weight, state["blocks.11.attn.qkv.weight"])
    assert torch.equal(model.decoder_pos_embed, state["decoder_pos_embed"])


class _Opaque:
    """Stands for any pickled object that is not on the checkpoint allow-list."""


def test_facebook_mae_wrapper_with_pickled_args_loads_safely(tmp_path):
    src = micro(in_chans=3)
    path = tmp_path / "mae_pretrain.pth"
    args = argparse.Namespace(lr=1e-3, model="mae_vit_base_patch16", input_size=224, norm_pix_loss=True)
    torch.save({"model": src.state_dict(), "optimizer": {}, "epoch": 4, "args": args}, path)
    model = micro(in_chans=3)
    model.load_state_dict({k: torch.zeros_like(v) for k, v in model.state_dict().items()})
    result = load_mae_weights(model, path)  # weights_only loading: Namespace is allow-listed
    assert result.kept_init == [] and result.adapted == []
    for key, value in src.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_unknown_pickled_objects_need_explicit_trust(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"model": micro().state_dict(), "extra": _Opaque()}, path)
    with pytest.raises(UsfmaeError, match="allow_pickle=True"):
        read_checkpoint(path)
    state, _ = read_checkpoint(path, allow_pickle=True)
    assert "cls_token" in state


def test_own_checkpoint_round_trip_keeps_name_and_config(tmp_path):
    src = micro(pos_embed="learned", mask_ratio=0.5)
    path = save_model(src, tmp_path / "ckpt.pt", step=7)
    raw = torch.load(path, weights_only=True)
    assert raw["model_name"] == "mae_vit_micro_patch8_64" and raw["step"] == 7
    assert raw["data_contract"] == src.data_contract.to_dict()
    model = build_from_checkpoint(path)
    assert model.cfg == src.cfg and model.model_name == src.model_name
    for key, value in src.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_ddp_and_compile_prefixes_are_stripped():
    src = micro()
    wrapped = {f"module._orig_mod.{k}": v for k, v in src.state_dict().items()}
    state, _ = read_checkpoint({"model": wrapped})
    assert set(state) == set(src.state_dict())


def test_adapt_input_conv_sums_rgb_and_preserves_the_gray_response():
    w = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    gray_w = adapt_input_conv(w, 1)
    assert torch.equal(gray_w, w.sum(dim=1, keepdim=True))
    gray = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(F.conv2d(gray, gray_w), F.conv2d(gray.repeat(1, 3, 1, 1), w))
    back = adapt_input_conv(gray_w, 3)  # 1 -> 3: repeated / 3, same response to replicated gray
    torch.testing.assert_close(F.conv2d(gray.repeat(1, 3, 1, 1), back), F.conv2d(gray, gray_w))
    assert adapt_input_conv(w, 3) is w


def test_adapt_pred_channels_averages_and_repeats():
    w = torch.randn(4 * 3, 5)  # patch area 4, 3 channels, width 5; layout (p, p, C)
    one = adapt_pred_channels(w, 4, 1)
    assert torch.equal(one, w.reshape(4, 3, 5).mean(1))
    three = adapt_pred_channels(one, 4, 3)
    assert torch.equal(three.reshape(4, 3, 5)[:, 2], one)


def test_resample_pos_embed_keeps_cls_and_constant_grids():
    pos = torch.cat([torch.full((1, 1, 6), 9.0), torch.arange(6.0).expand(1, 16, 6)], dim=1)  # 4x4 grid
    out = resample_pos_embed(pos, 7)
    assert out.shape == (1, 1 + 49, 6)
    assert torch.equal(out[:, 0], pos[:, 0])
    torch.testing.assert_close(out[0, 1:], torch.arange(6.0).expand(49, 6))
    assert resample_pos_embed(pos, 4) is pos


def test_load_into_another_image_size_resamples_positions():
    src = micro(pos_embed="learned")
    model = build_from_checkpoint({"model": src.state_dict()}, model_name="mae_vit_micro_patch8_64", img_size=32)
    assert model.pos_embed.shape == (1, 1 + 16, 128) and model.decoder_pos_embed.shape == (1, 17, 64)
    assert torch.equal(model.pos_embed[:, 0], src.pos_embed[:, 0])
    torch.testing.assert_close(model.pos_embed, resample_pos_embed(src.pos_embed.detach(), 4))


def test_clear_errors_name_keys_and_shapes(tmp_path):
    model = micro()
    state = model.state_dict()
    bad = dict(state)
    del bad["blocks.1.attn.qkv.weight"]
    bad["blocks.9.extra"] = torch.zeros(1)
    bad["norm.weight"] = torch.zeros(7)
    with pytest.raises(UsfmaeError) as err:
        load_mae_weights(micro(), {"model": bad})
    message = str(err.value)
    assert "missing keys [blocks.1.attn.qkv.weight]" in message
    assert "unexpected keys [blocks.9.extra]" in message
    assert "norm.weight (7,) vs model (128,)" in message and "\n" not in message
    with pytest.raises(UsfmaeError, match="weights do not fit mae_vit_tiny_patch8_64"):
        load_mae_weights(create_model("mae_vit_tiny_patch8_64"), state)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UsfmaeError, match="junk.pt: not a readable PyTorch checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(UsfmaeError, match="checkpoint file not found"):
        read_checkpoint(tmp_path / "missing.pt")
    torch.save({"epoch": 3}, tmp_path / "nomodel.pt")
    with pytest.raises(UsfmaeError, match="no model weights found"):
        read_checkpoint(tmp_path / "nomodel.pt")


def test_export_encoder_loads_into_timm_and_back(tmp_path):
    src = micro().eval()
    sidecar = export_encoder(src, tmp_path / "encoder.safetensors", metadata={"licence": "MIT"})
    tensors = load_file(tmp_path / "encoder.safetensors")
    assert set(tensors) == set(src.encoder_state_dict())
    assert not any(k.startswith("decoder") or k == "mask_token" for k in tensors)
    config = json.loads(sidecar.read_text())
    assert config["pretrained_cfg"]["input_size"] == [1, 64, 64] and config["pretrained_cfg"]["mean"] == [0.449]
    assert config["usfmae"]["licence"] == "MIT" and config["usfmae"]["data_contract"] == src.data_contract.to_dict()

    # timm loads the file itself (local file, no network) with the sidecar's arguments.
    theirs = timm.create_model(config["architecture"], pretrained=True, num_classes=0, **config["model_args"],
                               pretrained_cfg_overlay=dict(file=str(tmp_path / "encoder.safetensors"))).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(theirs.forward_features(x), src.forward_features(x))

    # ... and a timm encoder state dict comes back into an MAE (decoder left at its initialisation).
    back = build_from_checkpoint(tmp_path / "encoder.safetensors")
    assert back.cfg == src.cfg
    result = load_mae_weights(micro(), {k: v for k, v in theirs.state_dict().items()})
    assert "mask_token" in result.kept_init and "decoder_pred.weight" in result.kept_init
    with torch.no_grad():
        torch.testing.assert_close(back.eval().forward_features(x), src.forward_features(x))


def test_load_encoder_reads_a_pretraining_checkpoint_through_the_one_reader(tmp_path):
    """Weights, architecture, and the run's config and step all come from one read of the file."""
    src = micro(mask_ratio=0.5)
    torch.save({"format": "usfmae-pretrain/1", "step": 7, "model": src.state_dict(), "config": {"data": "phantom:8"},
                "optimizer": {"state": {}, "param_groups": []}, **checkpoint_metadata(src)}, tmp_path / "run.pt")
    model, info = load_encoder(tmp_path / "run.pt")
    assert info.source == "usfmae-pretrain" and info.pretrain == {"data": "phantom:8", "step": 7}
    assert info.describe() == "usfmae-pretrain phantom:8, 7 steps, mask 0.5"
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in model.state_dict().items())
