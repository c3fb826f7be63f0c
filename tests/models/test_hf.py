"""Hugging Face ViTMAE interop: import (current and legacy names) and export, equal to 0.0 against transformers."""

from __future__ import annotations

import re

import pytest
import torch

from usfmae.errors import UsfmaeError
from usfmae.models.checkpoint import build_from_checkpoint, read_checkpoint
from usfmae.models.encoder import load_encoder
from usfmae.models.hf import config_from_hf, export_hf, from_hf_state, to_hf_state
from usfmae.models.mae import MAEConfig, MaskedAutoencoderViT

transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)

HF_KW = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, image_size=32,
             patch_size=8, num_channels=1, decoder_hidden_size=16, decoder_num_hidden_layers=1,
             decoder_num_attention_heads=4, decoder_intermediate_size=64, mask_ratio=0.5)
L = 16  # patches of a 32 px image with 8 px patches


def hf_model(cls_name: str = "ViTMAEForPreTraining", **kw):
    torch.manual_seed(0)
    config = transformers.ViTMAEConfig(**{**HF_KW, **kw}, attn_implementation="sdpa")
    model = getattr(transformers, cls_name)(config).eval()
    with torch.no_grad():  # transformers zero-initialises these; random values test their placement
        for name, p in model.named_parameters():
            if "position_embeddings" not in name and "pos_embed" not in name:
                p.add_(torch.randn_like(p) * 0.02)
    return model


def legacy_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 4 key names, written out here from that version's module tree."""
    rules = [(r"^vit\.layers\.", "vit.encoder.layer."), (r"^layers\.", "encoder.layer."),
             (r"attention\.q_proj", "attention.attention.query"), (r"attention\.k_proj", "attention.attention.key"),
             (r"attention\.v_proj", "attention.attention.value"), (r"attention\.o_proj", "attention.output.dense"),
             (r"mlp\.fc1", "intermediate.dense"), (r"mlp\.fc2", "output.dense")]
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def run_both(theirs, ours, seed: int = 3):
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    noise = torch.rand(2, L, generator=torch.Generator().manual_seed(seed))
    out = theirs(pixel_values=x, noise=noise)
    loss, pred, mask = ours(x, generator=torch.Generator().manual_seed(seed))
    return out, (loss, pred, mask)


def assert_same_training_step(theirs, ours):
    """Loss, predictions and mask equal to 0.0; every gradient equal to float32 rounding.

    Gradients cannot be bit-equal: the backward of our fused qkv projection sums the three input
    gradients inside one matrix product, transformers adds three products.
    """
    out, (loss, pred, mask) = run_both(theirs, ours)
    assert (out.loss - loss).abs().item() == 0.0
    assert (out.logits - pred).abs().max().item() == 0.0
    assert torch.equal(out.mask, mask)
    out.loss.backward()
    loss.backward()
    grads = {k: (p.grad if p.grad is not None else torch.zeros_like(p)) for k, p in ours.named_parameters()}
    ours_as_hf = to_hf_state(grads, ours.cfg, legacy=False)
    # Positional tables are fixed sin-cos here (from_pretrained leaves them trainable there).
    theirs_grads = {k: p.grad for k, p in theirs.named_parameters() if p.grad is not None and "pos" not in k}
    assert theirs_grads and set(theirs_grads) <= set(ours_as_hf)
    for key, grad in theirs_grads.items():
        torch.testing.assert_close(grad, ours_as_hf[key], rtol=1e-5, atol=1e-8, msg=key)


def test_import_save_pretrained_folder_equal(tmp_path):
    theirs = hf_model()
    theirs.save_pretrained(tmp_path)  # transformers 5 writes its legacy names + config.json
    ours = build_from_checkpoint(tmp_path).eval()
    assert (ours.cfg.num_heads, ours.cfg.decoder_num_heads, ours.cfg.norm_eps) == (2, 4, 1e-12)
    assert_same_training_step(theirs, ours)


@pytest.mark.parametrize("names", ["current", "legacy"])
def test_import_state_dict_without_config(tmp_path, names):
    theirs = hf_model()
    state = theirs.state_dict() if names == "current" else legacy_names(theirs.state_dict())
    torch.save(state, tmp_path / "pytorch_model.bin")
    # No config.json: heads, epsilon and mask ratio cannot be read from tensors, so they are given.
    ours = build_from_checkpoint(tmp_path / "pytorch_model.bin", num_heads=2, decoder_num_heads=4,
                                 norm_eps=1e-12, mask_ratio=0.5).eval()
    assert_same_training_step(theirs, ours)


def test_import_vitmae_model_as_encoder(tmp_path):
    theirs = hf_model("ViTMAEModel", mask_ratio=0.0)
    theirs.save_pretrained(tmp_path)
    encoder, info = load_encoder(tmp_path)
    assert (info.img_size, info.in_chans, info.source) == (32, 1, f"imported:{tmp_path.name}")
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    ordered = torch.arange(L, dtype=torch.float32).expand(2, L)  # sorted noise keeps the patch order
    with torch.no_grad():
        want = theirs(pixel_values=x, noise=ordered).last_hidden_state
        got = encoder.eval().forward_features(x)
    assert (want - got).abs().max().item() == 0.0


@pytest.mark.parametrize("legacy", [True, False])
def test_export_loads_in_transformers_equal(tmp_path, legacy):
    torch.manual_seed(0)
    ours = MaskedAutoencoderViT(config_from_hf(HF_KW, norm_eps=1e-12, mean=(0.3,), std=(0.2,))).eval()
    export_hf(ours, tmp_path, legacy=legacy)
    theirs = transformers.ViTMAEForPreTraining.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert_same_training_step(theirs, ours)
    processor = transformers.ViTImageProcessor.from_pretrained(tmp_path)
    assert (list(processor.image_mean), list(processor.image_std), processor.size["height"]) == ([0.3], [0.2], 32)
    back = build_from_checkpoint(tmp_path)  # and back, with the mean/std from preprocessor_config.json
    assert back.cfg == ours.cfg


def test_export_encoder_only_is_a_vitmae_model(tmp_path):
    from usfmae.models.mae import VisionTransformerEncoder

    torch.manual_seed(0)
    encoder = VisionTransformerEncoder(MAEConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                                 decoder_embed_dim=16, decoder_num_heads=4)).eval()
    export_hf(encoder, tmp_path)
    theirs = transformers.ViTMAEModel.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert theirs.config.layer_norm_eps == 1e-6
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs.config.mask_ratio = 0.0
        theirs.embeddings.config.mask_ratio = 0.0
        want = theirs(pixel_values=x, noise=torch.arange(L, dtype=torch.float32).expand(2, L)).last_hidden_state
        assert (want - encoder.forward_features(x)).abs().max().item() == 0.0


def test_unplaceable_keys_and_unsupported_configs_are_clear_errors():
    state = hf_model().state_dict()
    state["vit.pooler.dense.weight"] = torch.zeros(2, 2)
    with pytest.raises(UsfmaeError, match="cannot place: vit.pooler.dense.weight"):
        from_hf_state(state)
    with pytest.raises(UsfmaeError, match="hidden_act 'relu'"):
        config_from_hf({**HF_KW, "hidden_act": "relu"})
    state.pop("vit.pooler.dense.weight")
    converted, meta = read_checkpoint({"model": state})
    assert "blocks.1.attn.qkv.weight" in converted and meta == {}


def test_folder_without_weights_is_one_clear_error(tmp_path):
    from usfmae.errors import DataError

    with pytest.raises(DataError, match="folder has no weights file"):
        load_encoder(tmp_path)
