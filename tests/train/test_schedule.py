"""Learning-rate schedule values and AdamW parameter groups."""

from __future__ import annotations

import math

import pytest
import torch

from usfmae.models.registry import create_model
from usfmae.train.schedule import effective_lr, lr_at, param_groups, set_lr, warmup_steps_for


@pytest.mark.parametrize(("step", "expected"), [
    (0, 0.0),            # warmup starts at zero (MAE convention)
    (5, 5e-4),           # half way through the warmup
    (10, 1e-3),          # peak at the end of the warmup
    (55, 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 0.5))),  # half-way down the cosine
    (100, 1e-5),         # floor at the end
])
def test_lr_at_known_steps(step: int, expected: float) -> None:
    assert lr_at(step, 100, 1e-3, 10, 1e-5) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_lr_is_monotone_after_warmup_and_scaled_in_one_place() -> None:
    values = [lr_at(s, 50, 2.5e-4, 5) for s in range(5, 51)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert effective_lr(1e-3, 64) == 2.5e-4  # the paper: nominal 1e-3 at batch 64
    assert warmup_steps_for(1000) == 100 and warmup_steps_for(7, 0.1) == 1
    assert lr_at(3, 3, 1.0, 3) == 1.0  # all warmup: no cosine to run


def test_lr_rejects_bad_warmup() -> None:
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_at(0, 10, 1e-3, 11)


@pytest.mark.parametrize("pos_embed", ["sincos", "learned"])
def test_param_groups_no_decay_on_biases_norms_tokens_positions(pos_embed: str) -> None:
    model = create_model("mae_vit_micro_patch8_64", pos_embed=pos_embed)
    decay, no_decay = param_groups(model, 0.05)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.05, 0.0)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    not_decayed = {names[id(p)] for p in no_decay["params"]}
    assert all(model.get_parameter(n).ndim >= 2 and not n.endswith("_token") and "pos_embed" not in n for n in decayed)
    assert {"cls_token", "mask_token", "norm.weight", "norm.bias", "blocks.0.attn.qkv.bias",
            "decoder_norm.weight"} <= not_decayed
    assert {"blocks.0.attn.qkv.weight", "patch_embed.proj.weight", "decoder_pred.weight"} <= decayed
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert decayed | not_decayed == trainable and not decayed & not_decayed
    # Fixed sin-cos tables are frozen and left out; learned ones are trained without decay.
    assert ("pos_embed" in not_decayed) == (pos_embed == "learned")


def test_set_lr_honours_lr_scale() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([{"params": [p], "lr_scale": 0.5}, {"params": [torch.nn.Parameter(torch.zeros(1))]}])
    set_lr(opt, 1e-3)
    assert [g["lr"] for g in opt.param_groups] == [5e-4, 1e-3]
