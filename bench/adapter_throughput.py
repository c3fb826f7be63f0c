"""Foundation-model adapters at their real sizes: file -> encoder load time and forward images/s (one JSON line).

Each model's published layout is written with random values at the released shapes (ViT-B; TinyUSFM
192 wide), loaded through ``load_encoder`` exactly as ``--model NAME --weights FILE`` does, then
timed on ``--batch`` images at the adapter's input size (eval mode, no grad; bf16 autocast on CUDA).

    python bench/adapter_throughput.py --models ultrasam usfm --device cpu --batch 2 --repeats 2
    python bench/adapter_throughput.py --device cuda --batch 32     # every adapter, UltraSam at 1024 and 224
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the published-layout builders
import fixtures_checkpoints as fc  # noqa: E402

from usfmae.models.encoder import load_encoder, pick_device  # noqa: E402

REAL = {  # name -> (builder of the released layout, load options)
    "ultrasam": (lambda: fc.sam_to_ultrasam(fc.sam_image_encoder(768, 12, 12, 64, 14, (2, 5, 8, 11), 256)), {}),
    "ultrasam@224": (lambda: fc.sam_to_ultrasam(fc.sam_image_encoder(768, 12, 12, 64, 14, (2, 5, 8, 11), 256)),
                     {"img_size": 224}),
    "usfm": (lambda: fc.usfm(768, 12, 12, 14), {}),
    "tinyusfm": (lambda: fc.tinyusfm(192, 12), {}),
    "dinov2_vitb14": (lambda: fc.dinov2(768, 12, 14, 37), {}),
    "ultradino": (lambda: fc.dinov2_teacher(fc.dinov2(768, 12, 16, 14, in_chans=1, registers=4)), {}),
}


def measure(name: str, batch: int, repeats: int, device: torch.device, folder: Path) -> dict:
    builder, options = REAL[name]
    path = folder / f"{name.replace('@', '_')}.pth"
    torch.save(builder(), path)
    start = time.perf_counter()
    model, info = load_encoder(path, name.split("@")[0], **options)
    load_s = time.perf_counter() - start
    path.unlink()
    model = model.eval().to(device)
    x = torch.randn(batch, info.in_chans, info.img_size, info.img_size, device=device)
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
        model.forward_features(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            model.forward_features(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return {"load_s": round(load_s, 2), "img_size": info.img_size, "params_m": round(
        sum(p.numel() for p in model.parameters()) / 1e6, 2), "images_per_s": round(batch * repeats / seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(REAL), choices=list(REAL))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        results = {name: measure(name, args.batch, args.repeats, device, Path(tmp)) for name in args.models}
    print(json.dumps({"bench": "adapter_throughput", "device": str(device), "batch": args.batch,
                      "threads": args.threads, "models": results}))


if __name__ == "__main__":
    main()
