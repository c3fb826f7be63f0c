"""Foundation-model adapters: published layouts load, features have the right shapes, bad files are named."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_checkpoints import dinov2, dinov2_teacher, published, sam_image_encoder, sam_to_ultrasam, usfm

from usfmae.errors import DataError, UsfmaeError
from usfmae.models.adapters import ADAPTERS, SPECS
from usfmae.models.classifier import EncoderClassifier
from usfmae.models.encoder import PooledEncoder, load_encoder

# name -> (input size used in the test, width, patch grid at that size, prefix tokens in the backbone)
CASES = {
    "ultrasam": (128, 32, 8), "sam_vit_b": (128, 32, 8), "usfm": (224, 32, 14), "tinyusfm": (224, 48, 14),
    "dinov2_vitb14": (112, 64, 8), "ultradino": (224, 64, 14),
}


def _state_of(ckpt: dict) -> dict:
    """The flat tensor dict inside a published checkpoint (mmdet ``state_dict``, DINOv2 ``teacher``)."""
    return ckpt.get("state_dict") or ckpt.get("teacher") or ckpt


def test_every_adapter_is_described() -> None:
    assert sorted(ADAPTERS) == sorted(SPECS) == sorted(CASES)
    for spec in SPECS.values():
        assert spec.weights and spec.source and spec.pooled


@pytest.mark.parametrize("name", sorted(CASES))
def test_published_layout_loads_and_gives_tokens(name: str) -> None:
    size, width, grid = CASES[name]
    model, contract = ADAPTERS[name](published(name), img_size=size)
    native = SPECS[name].contract
    assert (contract.img_size, contract.in_chans, contract.mean, contract.std, contract.fit) == (
        size, native.in_chans, native.mean, native.std, native.fit)
    assert model.data_contract == contract and model.num_features == width
    x = torch.randn(2, contract.in_chans, size, size)
    with torch.no_grad():
        tokens = model.forward_features(x)
        maps = model.forward_intermediates(x, [1, 0, 1])
        (last,) = model.forward_intermediates(x, [len(model.blocks) - 1], norm=True, intermediates_only=True)
        pooled = PooledEncoder(model, "cls")(x)
        logits = EncoderClassifier(model, num_classes=3)(x)
    assert tokens.shape == (2, 1 + grid * grid, width)
    assert [tuple(m.shape) for m in maps] == [(2, width, grid, grid)] * 3 and model.embed_dim == width
    torch.testing.assert_close(maps[0], maps[2])  # one map per requested index, in the order asked
    assert not torch.equal(maps[0], maps[1])
    # the last block's normed map is the patch tokens of forward_features, laid out on the grid
    torch.testing.assert_close(last.flatten(2).transpose(1, 2), tokens[:, 1:])
    torch.testing.assert_close(pooled, tokens[:, 0])
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", sorted(CASES))
def test_missing_key_is_named(name: str) -> None:
    ckpt = published(name)
    state = _state_of(ckpt)
    dropped = next(k for k in state if re.search(r"(?:^|\.)(?:blocks|layers)\.(?:\d+\.)?1\.(?:norm2|ln2)\.weight$", k))
    del state[dropped]
    with pytest.raises(UsfmaeError, match=r"missing keys \[blocks\.1\.norm2\.weight\]"):
        ADAPTERS[name](ckpt, img_size=CASES[name][0])


@pytest.mark.parametrize("name", sorted(CASES))
def test_unexpected_key_is_named_as_the_file_spells_it(name: str) -> None:
    ckpt = published(name)
    state = _state_of(ckpt)
    first = next(k for k in state if ".0." in k)
    extra = first.rsplit(".", 1)[0] + ".lora_A"
    state[extra] = torch.zeros(2)
    with pytest.raises(UsfmaeError, match=r"unexpected keys \[" + extra.replace(".", r"\.")):
        ADAPTERS[name](ckpt, img_size=CASES[name][0])


def test_ultrasam_equals_sam_through_ultrasams_own_conversion() -> None:
    """UltraSam's file is SAM's encoder renamed by its convert script: both must give the same features."""
    sam = sam_image_encoder(seed=3)
    from_sam, _ = ADAPTERS["sam_vit_b"](sam, img_size=128)
    from_mmdet, _ = ADAPTERS["ultrasam"](sam_to_ultrasam(sam), img_size=128)
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(from_mmdet.forward_features(x), from_sam.forward_features(x), rtol=0, atol=0)


def test_ultrasam_positions_resampled_for_another_size() -> None:
    ckpt = sam_to_ultrasam(sam_image_encoder(grid=8, window=3, global_blocks=(1, 3)))
    native, contract = ADAPTERS["ultrasam"](ckpt)
    assert contract.img_size == 1024 and native.backbone.pos_embed.shape == (1, 64, 64, 32)
    # 1024 px with 16 px patches is a 64 grid: the 8-grid tables are stretched to it.
    assert native.backbone.blocks[1].attn.rel_pos_h.shape == (2 * 64 - 1, 16)
    small, _ = ADAPTERS["ultrasam"](ckpt, img_size=128)  # 8 x 8: the file's own grid, nothing resampled
    torch.testing.assert_close(small.backbone.pos_embed, ckpt["state_dict"]["backbone.pos_embed"])
    torch.testing.assert_close(small.backbone.blocks[3].attn.rel_pos_w, ckpt["state_dict"]["backbone.layers.3.attn.rel_pos_w"])
    # windowed blocks keep their window tables at every size
    assert native.backbone.blocks[0].attn.rel_pos_h.shape == small.backbone.blocks[0].attn.rel_pos_h.shape == (5, 16)


def test_usfm_shared_table_is_copied_into_every_block() -> None:
    state = usfm(depth=3)
    model, _ = ADAPTERS["usfm"](state)
    for block in model.backbone.blocks:
        torch.testing.assert_close(block.attn.relative_position_bias_table,
                                   state["rel_pos_bias.relative_position_bias_table"])
    assert torch.equal(model.backbone.fc_norm.weight, torch.ones(32))  # absent from the file: initialised


def test_dinov2_registers_and_chunked_teacher() -> None:
    model, contract = ADAPTERS["ultradino"](dinov2_teacher(dinov2(patch=16, grid=14, in_chans=1, registers=4, chunks=2)))
    assert (contract.in_chans, contract.mean) == (1, (0.1842924807,))
    assert model.backbone.num_prefix_tokens == 5 and model.backbone.reg_token.shape == (1, 4, 64)
    meta, _ = ADAPTERS["dinov2_vitb14"](dinov2(grid=37))  # 518 px table resampled to 224 px (16 x 16)
    assert meta.backbone.pos_embed.shape == (1, 1 + 16 * 16, 64)


def test_gray_input_sums_rgb_filters() -> None:
    model, contract = ADAPTERS["tinyusfm"](published("tinyusfm"), in_chans=1)
    rgb = published("tinyusfm")["module.model.patch_embed.proj.weight"]
    torch.testing.assert_close(model.backbone.patch_embed.proj.weight, rgb.sum(dim=1, keepdim=True))
    assert contract.mean == pytest.approx((sum(SPECS["tinyusfm"].contract.mean) / 3,))


def test_missing_file_says_where_the_project_publishes_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="s3.unistra.fr/camma_public/github/ultrasam/UltraSam.pth"):
        ADAPTERS["ultrasam"](tmp_path / "UltraSam.pth")
    with pytest.raises(DataError, match="usfm needs --weights FILE; USFM publishes"):
        load_encoder(None, "usfm")


@pytest.fixture
def fake_mmengine(monkeypatch: pytest.MonkeyPatch) -> type:
    """A class pickled under an mmengine module path, like the message hub mmengine checkpoints carry."""
    module = types.ModuleType("mmengine_history_buffer_stand_in")

    class HistoryBuffer:
        def __init__(self) -> None:
            self.log = [1.0, 2.0]

    HistoryBuffer.__module__, HistoryBuffer.__qualname__ = module.__name__, "HistoryBuffer"
    module.HistoryBuffer = HistoryBuffer
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return HistoryBuffer


def test_mmengine_file_loads_without_mmengine_and_without_unpickling_code(tmp_path: Path, fake_mmengine: type,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = sam_to_ultrasam(sam_image_encoder())
    ckpt["meta"]["seed"] = np.int64(7)
    ckpt["message_hub"] = {"log_scalars": {"train/loss": fake_mmengine()}}
    path = tmp_path / "UltraSam.pth"
    torch.save(ckpt, path)
    monkeypatch.delitem(sys.modules, fake_mmengine.__module__)  # the framework is not installed here
    model, info = load_encoder(path, "ultrasam", img_size=128)
    assert info.source == "ultrasam:UltraSam.pth" and (info.img_size, info.in_chans, info.fit) == (128, 3, "pad")
    torch.testing.assert_close(model.backbone.pos_embed, ckpt["state_dict"]["backbone.pos_embed"])


def test_load_encoder_refuses_other_options() -> None:
    with pytest.raises(UsfmaeError, match="only img_size, in_chans and fit"):
        load_encoder(None, "ultrasam", mask_ratio=0.5)


@pytest.mark.slow
def test_ultrasam_real_vit_b_shapes_at_224(tmp_path: Path) -> None:
    """The released ViT-B shapes (1024 px, window 14, global 2/5/8/11) load and run at 224 px."""
    sam = sam_image_encoder(dim=768, depth=12, heads=12, grid=64, window=14, global_blocks=(2, 5, 8, 11), neck=256)
    path = tmp_path / "UltraSam.pth"
    torch.save(sam_to_ultrasam(sam), path)
    del sam
    model, info = load_encoder(path, "ultrasam", img_size=224)
    # 12 blocks x 7,087,872 + patch embedding 590,592 + positions 14*14*768 + rel. tables 12*2*27*64
    assert sum(p.numel() for p in model.parameters()) == 12 * 7_087_872 + 590_592 + 150_528 + 41_472
    assert model.backbone.pos_embed.shape == (1, 14, 14, 768)
    assert [model.backbone.blocks[i].attn.rel_pos_h.shape[0] for i in (0, 2)] == [27, 27]
    with torch.no_grad():
        tokens = model.forward_features(torch.zeros(1, 3, 224, 224))
    assert tokens.shape == (1, 197, 768) and info.mean == (0.485, 0.456, 0.406)


def test_finetune_runs_an_adapter_with_our_protocol(tmp_path: Path) -> None:
    """``usfmae finetune --model ultrasam --weights FILE``: same folds, head and results record as our encoder."""
    from fixtures_datasets import make_busbra

    from usfmae.eval import report
    from usfmae.train import finetune

    weights = tmp_path / "UltraSam.pth"
    torch.save(sam_to_ultrasam(sam_image_encoder()), weights)
    root = make_busbra(tmp_path).root
    cfg = finetune.FinetuneConfig(data=f"busbra:{root}", model="ultrasam", weights=str(weights), img_size=64,
                                  epochs=1, batch_size=8, bootstrap=0, folds=[0], out=str(tmp_path / "out"))
    summary = finetune.run(cfg)
    (result,) = report.load_results(tmp_path / "out")
    assert summary["skipped"] == 0 and result["model"] == "ultrasam" and result["fold"] == 0
    protocol = result["protocol"]
    assert (protocol["input_size"], protocol["in_chans"], protocol["architecture"]) == (64, 3, "ultrasam")
    assert protocol["pretraining"] == "ultrasam:UltraSam.pth"
    assert finetune.run(cfg)["skipped"] == 1  # resumes: the finished cell is not run again


def test_tinyusfm_released_shapes_have_the_papers_parameter_count() -> None:
    """TinyUSFM at its released shapes (192 wide, 12 blocks, 12 heads): 5.5M parameters, as its paper says."""
    from fixtures_checkpoints import tinyusfm

    model, _ = ADAPTERS["tinyusfm"](tinyusfm(dim=192, depth=12))
    # 12 blocks x 444,864 + patch embedding 147,648 + positions 197*192 + CLS 192 + fc_norm 384
    assert sum(p.numel() for p in model.parameters()) == 12 * 444_864 + 147_648 + 37_824 + 192 + 384


@pytest.mark.parametrize(("name", "other"), [("ultrasam", "usfm"), ("sam_vit_b", "ultrasam"), ("usfm", "ultrasam"),
                                             ("tinyusfm", "usfm"), ("dinov2_vitb14", "tinyusfm"),
                                             ("ultradino", "sam_vit_b")])
def test_another_projects_file_is_refused_in_one_line(name: str, other: str) -> None:
    with pytest.raises(UsfmaeError) as info:
        ADAPTERS[name](published(other), img_size=CASES[name][0])
    assert "\n" not in str(info.value) and f"({SPECS[name].title})" in str(info.value)


def test_export_refuses_another_projects_encoder_in_one_line(tmp_path: Path) -> None:
    from usfmae.downstream.export import export

    with pytest.raises(UsfmaeError, match="export writes our MAE encoders; usfm is published by its project"):
        export(tmp_path / "USFM_latest.pth", tmp_path / "out", model_name="usfm")
    assert not (tmp_path / "out").exists()


def test_load_encoder_carries_the_adapters_fit_unless_told_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "USFM_latest.pth"
    torch.save(usfm(), path)
    _, native = load_encoder(path, "usfm")
    model, padded = load_encoder(path, "usfm", fit="pad")
    assert (native.fit, native.contract.fit) == ("stretch", "stretch")  # USFM resizes without keeping the aspect
    assert (padded.fit, model.data_contract.fit) == ("pad", "pad")
