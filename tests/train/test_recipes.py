"""The fast recipe (shards/in-memory uint8 batches + batched augmentation) trains like the paper's.

Same model, seed, data and schedule; only the data path differs. The two loss curves must agree
within the noise of different augmentation draws, and both must fall.
"""

from __future__ import annotations

import numpy as np

from usfmae.fileio import read_jsonl
from usfmae.train.pretrain import PretrainConfig, run


def _losses(tmp_path, recipe: str) -> np.ndarray:
    cfg = PretrainConfig(data="phantom:64:3", out=str(tmp_path / recipe), model="mae_vit_micro_patch8_64", steps=24,
                         batch_size=16, blr=6e-3, seed=0, ckpt_every=24, log_every=1, recipe=recipe, num_workers=0,
                         device="cpu", progress=False)
    run(cfg)
    records = [r for r in read_jsonl(tmp_path / recipe / "log.jsonl") if "loss" in r]
    return np.array([r["loss"] for r in records])


def test_fast_recipe_loss_curve_matches_paper_recipe(tmp_path) -> None:
    paper, fast = _losses(tmp_path, "paper"), _losses(tmp_path, "fast")
    assert len(paper) == len(fast) == 24
    for curve in (paper, fast):
        assert curve[-6:].mean() < 0.8 * curve[:3].mean()  # both learn
    # Windows of 6 steps average out the per-batch augmentation noise.
    windows = lambda c: c.reshape(4, 6).mean(axis=1)  # noqa: E731
    np.testing.assert_allclose(windows(fast), windows(paper), rtol=0.12)
