"""Pretraining: datasets, an end-to-end CLI run whose loss falls, exact resume, the non-finite guard."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from usfmae import cli
from usfmae.config import build_config
from usfmae.data.datasets import build_pretrain_dataset
from usfmae.errors import ConfigError, DataError
from usfmae.fileio import RejectLog, read_jsonl
from usfmae.models.mae import MaskedAutoencoderViT
from usfmae.models.registry import create_model
from usfmae.shards.store import ShardWriter
from usfmae.train.engine import NonFiniteLossError, evaluate
from usfmae.train.pretrain import PretrainConfig, read_run_state, run

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "pretrain"


def _cfg(out: Path, **overrides) -> PretrainConfig:
    values = dict(data="phantom:32", out=str(out), model="mae_vit_micro_patch8_64", steps=8, batch_size=8,
                  ckpt_every=4, log_every=1, num_workers=0, blr=1e-2, recon_images=2, progress=False)
    values.update(overrides)
    return PretrainConfig(**values)


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    cv2.imwrite(str(root / "a_gray.png"), rng.integers(0, 256, (40, 50), dtype=np.uint8))
    cv2.imwrite(str(root / "sub" / "b_rgb.jpg"), rng.integers(0, 256, (30, 30, 3), dtype=np.uint8))
    cv2.imwrite(str(root / "c_16bit.png"), (np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16))
    (root / "d_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.mark.parametrize("in_chans", [1, 3])
def test_folder_dataset_resizes_converts_and_skips_bad_files(image_folder: Path, tmp_path: Path, in_chans: int) -> None:
    rejects = RejectLog(tmp_path / "rejects.jsonl")
    ds = build_pretrain_dataset(image_folder, 32, in_chans, rejects)
    assert len(ds) == 4  # three images + the corrupt one; notes.txt is not listed
    items = [ds[i] for i in range(4)]
    assert all(x.shape == (in_chans, 32, 32) and x.dtype == torch.uint8 for x in items)
    # 16-bit mapped by bit depth (usfmae.imaging): the brightest value 61380 -> 61380 >> 8 = 239
    assert (items[1].min().item(), items[1].max().item()) == (0, 239)
    assert torch.equal(items[2], items[3])  # the corrupt file (sorted 3rd) is replaced by the next readable one
    ds[2]
    assert [r["file"].endswith("d_corrupt.png") for r in rejects.read()] == [True]  # rejected once


def test_manifest_status_filter_and_errors(image_folder: Path, tmp_path: Path) -> None:
    manifest = image_folder / "list.parquet"
    pq.write_table(pa.table({"path": ["a_gray.png", "sub/b_rgb.jpg", "c_16bit.png"],
                             "status": ["ok", "ok", "duplicate"]}), manifest)
    ds = build_pretrain_dataset(manifest, 16, 1)
    assert len(ds) == 2 and ds[1].shape == (1, 16, 16)
    pq.write_table(pa.table({"file": ["a_gray.png"]}), tmp_path / "bad.parquet")
    for source, message in [(tmp_path / "bad.parquet", "no 'path' column"), (tmp_path / "missing", "not an image"),
                            ("phantom:x", "phantom:N"), ("phantom:0", "N > 0")]:
        with pytest.raises(DataError, match=message):
            build_pretrain_dataset(source, 16, 1)


def test_phantom_folder_shards_and_generator(phantom_dataset: Path, tmp_path: Path) -> None:
    folder = build_pretrain_dataset(phantom_dataset, 64, 1)
    assert len(folder) == 32  # read through manifest.parquet, not clean/ and masks/ as well
    gen = build_pretrain_dataset("phantom:4:7", 64, 3)
    assert len(gen) == 4 and gen[2].shape == (3, 64, 64)
    assert torch.equal(gen[2], build_pretrain_dataset("phantom:9:7", 64, 3)[2])  # item i independent of N
    frames = np.random.default_rng(1).integers(0, 256, (5, 64, 64, 1), dtype=np.uint8)
    with ShardWriter(tmp_path / "shards", (64, 64, 1), shard_size=2) as writer:
        for i, frame in enumerate(frames):
            writer.add(frame, f"f{i}")
    shards = build_pretrain_dataset(tmp_path / "shards", 64, 1)
    assert len(shards) == 5 and torch.equal(shards[4], torch.from_numpy(frames[4]).permute(2, 0, 1))


@pytest.mark.parametrize("name", ["usfmae_vit_b16.yaml", "tiny_cpu.yaml", "demo_cpu.yaml"])
def test_presets_are_valid(name: str) -> None:
    cfg = build_config(PretrainConfig, CONFIGS / name)
    assert cfg.clip_grad == 1.0 and cfg.warmup_fraction == 0.1
    if name == "usfmae_vit_b16.yaml":  # the paper's recipe
        assert (cfg.model, cfg.mask_ratio, cfg.batch_size, cfg.blr, cfg.weight_decay, cfg.epochs) == \
            ("mae_vit_base_patch16", 0.25, 64, 1e-3, 0.01, 100)
        assert (tuple(cfg.rotation), tuple(cfg.crop_scale), cfg.flip_p) == ((0.0, 90.0), (0.5, 2.0), 0.5)


@pytest.mark.slow
def test_cli_end_to_end_loss_falls_and_reconstruct(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    rc = cli.main(["pretrain", "--data", "phantom:64", "--out", str(out), "--model", "mae_vit_micro_patch8_64",
                   "--steps", "32", "--batch-size", "16", "--log-every", "4", "--ckpt-every", "16",
                   "--num-workers", "0", "--blr", "0.01", "--recon-images", "3", "--no-progress"])
    assert rc == 0
    losses = [r["loss"] for r in read_jsonl(out / "log.jsonl")]
    assert len(losses) == 8 and losses[-1] < 0.6 * losses[0]
    for name in ("config.yaml", "loss_curve.png", "recon_0000016.png", "recon_0000032.png",
                 "checkpoints/last.pt", "checkpoints/final.pt"):
        assert (out / name).is_file(), name
    state = read_run_state(out / "checkpoints" / "final.pt")
    assert state["step"] == 32 and state["config"]["batch_size"] == 16
    assert state["data_contract"]["img_size"] == 64 and state["data_contract"]["fit"] == "pad" and set(state["rng"]) >= {"torch", "numpy", "python"}
    sample = tmp_path / "scan.png"
    cv2.imwrite(str(sample), np.random.default_rng(0).integers(0, 256, (80, 90), dtype=np.uint8))
    (tmp_path / "broken.png").write_bytes(b"nope")
    rc = cli.main(["reconstruct", "--weights", str(out / "checkpoints" / "final.pt"), "--out",
                   str(tmp_path / "grid.png"), str(sample), str(tmp_path / "broken.png")])
    assert rc == 0 and (tmp_path / "grid.png").is_file()
    assert "1 images" in capsys.readouterr().out


@pytest.mark.parametrize(("stop", "workers"), [pytest.param(3, 1, marks=pytest.mark.slow), (4, 0)])
def test_resume_reproduces_uninterrupted_run(tmp_path: Path, stop: int, workers: int) -> None:
    """Stop mid-epoch (3) or on a checkpoint (4); loader workers change nothing (per-image seeds)."""
    run(_cfg(tmp_path / "full"))
    first = run(_cfg(tmp_path / "split", stop_after=stop, num_workers=workers))
    assert first["step"] == stop and not (tmp_path / "split" / "checkpoints" / "final.pt").exists()
    with pytest.raises(ConfigError, match="--resume"):
        run(_cfg(tmp_path / "split"))
    run(_cfg(tmp_path / "split", num_workers=workers), resume=True)
    full, split = (read_jsonl(tmp_path / d / "log.jsonl") for d in ("full", "split"))
    assert [(r["step"], r["loss"], r["lr"]) for r in split] == [(r["step"], r["loss"], r["lr"]) for r in full]
    a, b = (read_run_state(tmp_path / d / "checkpoints" / "final.pt") for d in ("full", "split"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(x, y) for x, y in zip(a["optimizer"]["state"][0].values(),
                                                  b["optimizer"]["state"][0].values(), strict=True))


def test_gradient_accumulation_matches_the_full_batch(tmp_path: Path) -> None:
    run(_cfg(tmp_path / "one", steps=3, log_every=3, ckpt_every=3, recon_images=0))
    run(_cfg(tmp_path / "two", steps=3, log_every=3, ckpt_every=3, recon_images=0, accum_steps=2))
    a, b = (read_run_state(tmp_path / d / "checkpoints" / "final.pt")["model"] for d in ("one", "two"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-4)


def test_activation_checkpointing_trains_identically(tmp_path: Path) -> None:
    run(_cfg(tmp_path / "plain", steps=3, ckpt_every=3, recon_images=0))
    run(_cfg(tmp_path / "ckpt", steps=3, ckpt_every=3, recon_images=0, grad_checkpointing=True))
    plain, ckpt = (read_jsonl(tmp_path / d / "log.jsonl") for d in ("plain", "ckpt"))
    assert [r["loss"] for r in ckpt] == pytest.approx([r["loss"] for r in plain], rel=1e-5)
    a, b = (read_run_state(tmp_path / d / "checkpoints" / "final.pt")["model"] for d in ("plain", "ckpt"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path, monkeypatch) -> None:
    original = MaskedAutoencoderViT.forward_loss
    calls = {"train": 0}

    def poisoned(self, imgs, pred, mask):
        loss = original(self, imgs, pred, mask)
        if self.training:
            calls["train"] += 1
            if calls["train"] > 5:  # steps 0-4 are fine, step 5 diverges
                return loss * float("nan")
        return loss

    monkeypatch.setattr(MaskedAutoencoderViT, "forward_loss", poisoned)
    # The loss is read back every 3 steps: the guard still names the first bad step.
    with pytest.raises(NonFiniteLossError, match=r"at step 5;.*the last good checkpoint is .*last\.pt"):
        run(_cfg(tmp_path, ckpt_every=2, log_every=3))
    state = read_run_state(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (tmp_path / "checkpoints" / "final.pt").exists()


def test_evaluate_is_the_batch_weighted_mean_loss() -> None:
    torch.manual_seed(0)
    model = create_model("mae_vit_micro_patch8_64")
    batches = [torch.randn(3, 1, 64, 64), torch.randn(1, 1, 64, 64)]
    gen = lambda step, micro: torch.Generator().manual_seed(step)  # noqa: E731
    result = evaluate(model, batches, device=torch.device("cpu"), batch_transform=lambda x, s, m: x,
                      mask_generator=gen)
    with torch.no_grad():
        losses = [model(x, None, gen(i, 0))[0].item() for i, x in enumerate(batches)]
    assert result["images"] == 4 and result["loss"] == pytest.approx((3 * losses[0] + losses[1]) / 4, rel=1e-6)
    assert model.training  # evaluate restores the mode it found


def test_init_from_released_format_adapts_rgb_weights(tmp_path: Path) -> None:
    """A plain 3-channel MAE state dict (the released USF-MAE layout) starts a grayscale run."""
    torch.manual_seed(1)
    released = create_model("mae_vit_micro_patch8_64", in_chans=3).state_dict()
    torch.save(released, tmp_path / "released.pt")
    # Step 0 of 10 (warmup lr 0) leaves the weights as loaded (AdamW's decay is scaled by lr too).
    run(_cfg(tmp_path / "run", steps=10, stop_after=1, recon_images=0, init_from=str(tmp_path / "released.pt")))
    state = read_run_state(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    torch.testing.assert_close(state["patch_embed.proj.weight"],
                               released["patch_embed.proj.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(state["blocks.3.mlp.fc2.weight"], released["blocks.3.mlp.fc2.weight"])


# Golden absolute losses (CPU, one thread, seed 0) of a 4-step run of each data recipe. A change
# that moves these moves every pretraining result, including both arms of a recipe comparison:
# update them only for a change meant to alter training, and say so in its commit.
GOLDEN_PRETRAIN = {
    "paper": [2.8773727416992188, 2.4618494510650635, 2.318678140640259, 2.199078321456909],
    "fast": [3.0934536457061768, 2.7403948307037354, 2.4654152393341064, 2.2953760623931885],
}


@pytest.mark.parametrize("recipe", sorted(GOLDEN_PRETRAIN))
def test_golden_losses_of_a_tiny_run(tmp_path: Path, recipe: str) -> None:
    run(_cfg(tmp_path, data="phantom:16", steps=4, recon_images=0, recipe=recipe, device="cpu"))
    losses = [r["loss"] for r in read_jsonl(tmp_path / "log.jsonl")]
    np.testing.assert_allclose(losses, GOLDEN_PRETRAIN[recipe], rtol=1e-5, atol=0)
