"""The same file gives the same model input on every path (issue 9's first "done when").

A fixed set of images made here (non-square 300x200 and 200x320, 16-bit, RGB, RGBA, palette, JPEG)
arrives from a folder, a Parquet manifest, packed shards, a labelled-dataset loader (folder:, csv:)
or the phantom, for pretraining, fine-tuning, probing, embedding and reconstruction; the tensor the
model sees is compared bit for bit with ``normalise(prepare(read_image(file)))`` at the encoder's
data contract, whose fit policy comes from the checkpoint (pretrained with pad or stretch).
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from torch import nn

from usfmae.cli import main
from usfmae.contract import DataContract, normalise, prepare
from usfmae.data import labelled
from usfmae.data.datasets import build_pretrain_dataset
from usfmae.data.gpu_augment import GpuAugment
from usfmae.data.images import list_images, preload_images
from usfmae.downstream.embed import embed_shards, extract_features_from_files
from usfmae.fileio import RejectLog
from usfmae.imaging import read_image
from usfmae.models.checkpoint import save_model
from usfmae.models.encoder import extract_features, load_encoder
from usfmae.models.registry import create_model
from usfmae.phantom.generate import PhantomConfig, write_phantom_dataset
from usfmae.shards.pack import PackConfig, pack_corpus
from usfmae.shards.store import ShardReader
from usfmae.train import finetune

SIZE = 64


def _smooth(rng: np.random.Generator, h: int, w: int, c: int, high: int = 255) -> np.ndarray:
    """Random image with structure at several scales (so resizing really averages)."""
    coarse = rng.integers(0, high + 1, (max(2, h // 8), max(2, w // 8), c)).astype(np.float64)
    big = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, c)
    return np.clip(big + rng.normal(0, high / 20, (h, w, c)), 0, high)


@pytest.fixture(scope="module")
def image_set(tmp_path_factory) -> Path:
    """root/a/*, root/b/*: two 'classes' so the folder: loader reads the same files."""
    rng = np.random.default_rng(9)
    root = tmp_path_factory.mktemp("same_pixels") / "images"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    cv2.imwrite(str(root / "a" / "wide_300x200.png"), _smooth(rng, 200, 300, 1).astype(np.uint8))
    cv2.imwrite(str(root / "a" / "tall_200x320.png"), _smooth(rng, 320, 200, 1).astype(np.uint8))
    cv2.imwrite(str(root / "a" / "deep16.png"), _smooth(rng, 120, 180, 1, 65535).astype(np.uint16))
    cv2.imwrite(str(root / "b" / "colour.png"), _smooth(rng, 150, 100, 3).astype(np.uint8))
    rgba = np.concatenate([_smooth(rng, 90, 130, 3), _smooth(rng, 90, 130, 1)], axis=2).astype(np.uint8)
    cv2.imwrite(str(root / "b" / "alpha.png"), rgba)
    palette = Image.fromarray(_smooth(rng, 70, 110, 3).astype(np.uint8)).convert("P", palette=Image.ADAPTIVE, colors=32)
    palette.save(root / "b" / "palette.png")
    cv2.imwrite(str(root / "b" / "photo.jpg"), _smooth(rng, 100, 160, 3).astype(np.uint8),
                [cv2.IMWRITE_JPEG_QUALITY, 85])
    return root


def _names(paths) -> list[str]:
    return [Path(p).name for p in paths]


@pytest.fixture(scope="module", params=[("pad", 1), ("stretch", 1), ("pad", 3)], ids=lambda p: f"{p[0]}-{p[1]}ch")
def setting(request, image_set: Path, tmp_path_factory):
    """(contract, checkpoint pretrained with that contract, every source built from the image set)."""
    fit, chans = request.param
    work = tmp_path_factory.mktemp(f"sources_{fit}_{chans}")
    torch.manual_seed(0)
    model = create_model("mae_vit_micro_patch8_64", in_chans=chans, fit=fit)
    weights = save_model(model, work / "encoder.pt")
    contract = model.data_contract
    files = list_images(image_set)
    manifest = image_set.parent / "manifest.parquet"
    pq.write_table(pa.table({"path": [str(p.relative_to(image_set.parent)) for p in files]}), manifest)
    table = image_set.parent / "labels.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows([str(p.relative_to(image_set.parent)), p.parent.name] for p in files)
    shards = work / "shards"
    pack_corpus(image_set, shards, PackConfig(size=SIZE, channels=chans, fit=fit, workers=1), progress=False)
    reference = {p.name: prepare(read_image(p), contract) for p in files}
    return {"contract": contract, "weights": weights, "files": files, "root": image_set, "manifest": manifest,
            "csv": table, "shards": shards, "reference": reference, "work": work}


def _shard_names(s: dict) -> list[str]:
    """File names of the packed frames, in shard order (ids are relative paths without suffix)."""
    stems = {f.relative_to(s["root"]).with_suffix("").as_posix(): f.name for f in s["files"]}
    return [stems[i] for i in ShardReader(s["shards"]).ids]


def _check(names: list[str], fed: torch.Tensor, s: dict, normalised: bool = True) -> None:
    """``fed`` (N, C, S, S) for files ``names`` equals the reference, bit for bit."""
    expected = torch.stack([s["reference"][n] for n in names])
    if normalised:
        expected = normalise(expected, s["contract"])
    assert fed.dtype == expected.dtype and fed.shape == expected.shape
    assert torch.equal(fed, expected), f"differs by {(fed.float() - expected.float()).abs().max()}"


def test_reference_is_the_contract(setting):
    c = setting["contract"]
    assert sorted(setting["reference"]) == sorted(_names(setting["files"])) and len(setting["files"]) == 7
    assert all(x.shape == (c.in_chans, SIZE, SIZE) and x.dtype == torch.uint8 for x in setting["reference"].values())
    wide = setting["reference"]["wide_300x200.png"]
    if c.fit == "pad":  # letterbox: 300x200 -> 64x43 centred, black rows above and below
        assert (wide[:, :10] == 0).all() and (wide[:, -10:] == 0).all() and wide[:, 32].float().mean() > 20
    else:
        assert (wide[:, :10] > 0).float().mean() > 0.9


# ------------------------------------------------------------------------------------ pretraining
@pytest.mark.parametrize("source", ["folder", "manifest", "shards"])
def test_pretraining_datasets_feed_the_same_pixels(setting, source):
    c = setting["contract"]
    path = {"folder": setting["root"], "manifest": setting["manifest"], "shards": setting["shards"]}[source]
    ds = build_pretrain_dataset(path, c.img_size, c.in_chans, fit=c.fit)
    names = _shard_names(setting) if source == "shards" else _names(setting["files"])
    items = torch.stack([ds[i] for i in range(len(ds))])
    _check(names, items, setting, normalised=False)
    # the fast recipe's GPU transform without augmentation is contract.normalise bit for bit
    fast = GpuAugment(None, c.img_size, c.in_chans, c.mean, c.std, enabled=False)(items)
    _check(names, fast, setting)


def test_pretraining_phantom_equals_its_written_images(tmp_path):
    contract = DataContract(SIZE, 1, (0.449,), (0.226,), "pad")
    write_phantom_dataset(tmp_path / "phantom", 6, seed=3, cfg=PhantomConfig(size=SIZE, overlays=False))
    generated = build_pretrain_dataset("phantom:6:3", SIZE, 1)
    clean = list_images(tmp_path / "phantom" / "clean")  # sample i is the i-th id
    from_folder = build_pretrain_dataset(tmp_path / "phantom" / "clean", SIZE, 1)
    gen = torch.stack([generated[i] for i in range(6)])
    assert len(clean) == 6 and torch.equal(gen, torch.stack([from_folder[i] for i in range(6)]))
    task = labelled.load_dataset(f"phantom:{tmp_path / 'phantom'}")  # the labelled loader reads images/
    preloaded, kept = preload_images([r.path for r in task.records], SIZE, 1)
    order = [[p.stem for p in clean].index(Path(r.path).stem) for r in task.records]
    assert len(kept) == 6 and torch.equal(preloaded, gen[order])
    assert torch.equal(normalise(preloaded, contract), normalise(gen[order], contract))


# --------------------------------------------------------------------------- fine-tune and probe
def _downstream_paths(s: dict, source: str) -> list[Path]:
    if source == "folder":
        return list_images(s["root"])
    if source == "manifest":
        table = pq.read_table(s["manifest"])
        return [s["manifest"].parent / p for p in table.column("path").to_pylist()]
    spec = f"folder:{s['root']}" if source == "folder-spec" else f"csv:{s['csv']}"
    return [r.path for r in labelled.load_dataset(spec).records]


@pytest.mark.parametrize("source", ["folder-spec", "csv-spec"])
def test_finetune_feeds_the_same_pixels_with_the_encoders_fit(setting, source, tmp_path):
    spec = f"folder:{setting['root']}" if source == "folder-spec" else f"csv:{setting['csv']}"
    ds = labelled.load_dataset(spec)
    cfg = finetune.FinetuneConfig(data=spec, model="mae_vit_micro_patch8_64", weights=str(setting["weights"]),
                                  out=str(tmp_path))
    _, info = finetune.build_classifier(cfg, len(ds.classes))
    assert info.contract == setting["contract"]  # fit and channels from the checkpoint
    images, row = finetune._images(cfg, ds, info, RejectLog(tmp_path / "rejects.jsonl"), {})
    assert (row >= 0).all()
    _check(_names(r.path for r in ds.records), normalise(images, info.contract), setting)


class _Recorder(nn.Module):
    """An 'encoder' that records the tensors fed to it (and returns their first values as features)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return x.flatten(1)[:, None, :8]


@pytest.mark.parametrize("source", ["folder", "manifest", "folder-spec", "csv-spec"])
def test_probe_feeds_the_same_pixels(setting, source):
    _, info = load_encoder(setting["weights"])
    paths = _downstream_paths(setting, source)
    images, kept = preload_images(paths, info.img_size, info.in_chans, fit=info.fit)
    recorder = _Recorder()
    extract_features(recorder, images, info.mean, info.std, batch_size=4, device="cpu")
    _check(_names(paths[i] for i in kept), torch.cat(recorder.seen), setting)


@pytest.mark.parametrize("source", ["folder", "manifest", "folder-spec", "csv-spec", "shards"])
def test_embed_feeds_the_same_pixels(setting, source):
    _, info = load_encoder(setting["weights"])
    recorder = _Recorder()
    if source == "shards":
        embed_shards(ShardReader(setting["shards"]), recorder, info.contract, batch_size=4, device="cpu")
        names = _shard_names(setting)
    else:
        paths = _downstream_paths(setting, source)
        _, kept = extract_features_from_files(recorder, paths, info.contract, batch_size=4, device="cpu")
        names = _names(paths[i] for i in kept)
    _check(names, torch.cat(recorder.seen), setting)


@pytest.mark.parametrize("source", ["folder", "files"])
def test_reconstruct_feeds_the_same_pixels(setting, source, tmp_path, monkeypatch):
    from usfmae.downstream import reconstruct

    seen = {}

    def grid(model, images, data_config, path, seed=0, mask_ratio=None):
        seen["images"], seen["contract"] = images, DataContract.from_dict(data_config)
        return 0.0

    monkeypatch.setattr(reconstruct, "reconstruction_grid", grid)
    inputs = [str(setting["root"])] if source == "folder" else [str(p) for p in setting["files"]]
    assert main(["reconstruct", "--weights", str(setting["weights"]), "--out", str(tmp_path / "g.png"), *inputs]) == 0
    assert seen["contract"] == setting["contract"]
    _check(_names(setting["files"]), seen["images"], setting)


# ------------------------------------------------------------------------- usfmae embed, CLI level
def test_embed_cli_folder_and_its_packed_shards_agree(image_set, tmp_path):
    torch.manual_seed(1)
    weights = save_model(create_model("mae_vit_micro_patch8_64"), tmp_path / "encoder.pt")
    assert main(["pack", str(image_set), "--out", str(tmp_path / "shards"), "--size", "64", "--no-progress"]) == 0
    assert main(["embed", "--weights", str(weights), str(image_set), "--out", str(tmp_path / "folder.npy")]) == 0
    assert main(["embed", "--weights", str(weights), str(tmp_path / "shards"), "--out", str(tmp_path / "shards.npy")]) == 0
    folder = np.load(tmp_path / "folder.npy")
    shards = np.load(tmp_path / "shards.npy")
    folder_ids = [Path(p).relative_to(image_set).with_suffix("").as_posix()
                  for p in (tmp_path / "folder.paths.txt").read_text().split()]
    shard_ids = (tmp_path / "shards.paths.txt").read_text().split()
    assert folder.shape == shards.shape == (7, 128) and sorted(folder_ids) == sorted(shard_ids)
    order = [shard_ids.index(i) for i in folder_ids]
    np.testing.assert_allclose(shards[order], folder, rtol=0, atol=1e-5)
    assert np.abs(folder).mean() > 0.1  # real features, not zeros
