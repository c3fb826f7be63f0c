"""Trained task models kept and applied: safetensors weights + a JSON card that rebuilds the network.

``save_task_model`` writes ``OUT/model.safetensors`` (all weights, encoder and head) and
``OUT/model.json``::

    {"format": "usfmae.task_model/1", "kind": "classifier" | "segmenter",
     "arch": {...how to rebuild the network, see build_task_model...},
     "data_contract": {"img_size", "in_chans", "mean", "std", "fit"},
     "classes": [...], "protocol": {...the run's protocol record...}}

``load_task_model`` rebuilds the network from ``arch`` (random init, nothing downloaded) and loads
the weights strictly, so a reloaded model gives exactly the outputs it gave at the end of training.

``arch`` families: ``mae`` (our ViT encoder: ``encoder_cfg`` is its MAEConfig) with ``head``
``cls``/``mean`` (classifier pooling) or ``linear``/``pyramid`` (segmentation heads); ``timm_vit``
(the ViT-B/16 baseline, ``img_size``/``in_chans``) with a segmentation head;
``baseline`` classifiers (``name``: resnet50, vgg19, vit_b16; ``small_input``); ``unet_resnet50``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from usfmae.contract import DataContract
from usfmae.errors import DataError, UsfmaeError
from usfmae.fileio import ensure_output_dir, read_json, write_json
from usfmae.models.serialize import save_safetensors

FORMAT = "usfmae.task_model/1"
KINDS = ("classifier", "segmenter")
WEIGHTS, CARD = "model.safetensors", "model.json"


def _mae_encoder(arch: dict[str, Any]) -> nn.Module:
    from usfmae.models.mae import MAEConfig, VisionTransformerEncoder

    return VisionTransformerEncoder(MAEConfig.from_dict(dict(arch["encoder_cfg"])))


def _timm_vit(arch: dict[str, Any]) -> nn.Module:
    import timm

    return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0,
                             img_size=int(arch["img_size"]), in_chans=int(arch["in_chans"]))


def build_task_model(arch: dict[str, Any]) -> nn.Module:
    """A randomly initialised network of the architecture ``arch`` describes (see the module docstring)."""
    family, head, k = arch.get("family"), arch.get("head"), int(arch.get("num_classes", 0))
    if family in ("mae", "timm_vit") and head in ("linear", "pyramid"):
        from usfmae.models.seg_linear import LinearSegmenter
        from usfmae.models.seg_pyramid import PyramidSegmenter

        encoder = _mae_encoder(arch) if family == "mae" else _timm_vit(arch)
        if head == "linear":
            return LinearSegmenter(encoder, k)
        return PyramidSegmenter(encoder, k, indices=arch.get("indices"), channels=arch.get("channels"))
    if family == "mae" and head in ("cls", "mean"):
        from usfmae.models.classifier import EncoderClassifier

        return EncoderClassifier(_mae_encoder(arch), k, pool=head)
    if family == "baseline":
        from usfmae.models.baselines import create_baseline

        return create_baseline(arch["name"], num_classes=k, in_chans=int(arch["in_chans"]),
                               img_size=int(arch.get("img_size", 224)), small_input=bool(arch.get("small_input")))
    if family == "unet_resnet50":
        from usfmae.models.seg_unet import create_unet

        return create_unet(k, in_chans=int(arch["in_chans"]), img_size=int(arch["img_size"]))
    raise UsfmaeError(f"unknown task-model architecture {arch!r}")


def save_task_model(out_dir: str | os.PathLike, model: nn.Module, *, kind: str, arch: dict[str, Any],
                    contract: DataContract, classes: list[str], protocol: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` + ``model.json`` into ``out_dir`` (atomically); returns the card's path.

    Args:
        model: the trained network (its full state dict is saved).
        kind: "classifier" or "segmenter".
        arch: how to rebuild ``model`` (checked here: it must rebuild to the same parameter names).
        contract: the input contract the model was trained with.
        classes: class names (segmenters: index 0 is the background).
        protocol: the run's protocol record (dataset, fold, seed, recipe ...).
    """

    if kind not in KINDS:
        raise UsfmaeError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    out = ensure_output_dir(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    expected = set(build_task_model(arch).state_dict())
    if expected != set(state):
        raise UsfmaeError(f"arch {arch.get('family')}/{arch.get('head')} does not describe this model "
                          f"({len(expected ^ set(state))} parameter names differ)")
    card = {"format": FORMAT, "kind": kind, "arch": arch, "data_contract": contract.to_dict(),
            "classes": [str(c) for c in classes], "protocol": protocol or {}}
    save_safetensors(state, out / WEIGHTS, metadata={"format": "pt", "usfmae": json.dumps(card, default=str)})
    write_json(out / CARD, card)
    return out / CARD


def _card_path(path: Path) -> Path:
    if path.is_dir():
        return path / CARD
    return path.with_name(CARD) if path.suffix == ".safetensors" else path


def load_task_model(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild and load a saved task model (its folder, ``model.json`` or ``model.safetensors``).

    Returns:
        ``(model in eval mode on the CPU, card)``; ``card["data_contract"]`` is a :class:`DataContract`.

    Raises:
        DataError: the files are missing or are not a usfmae task model.
    """
    from safetensors.torch import load_file

    card_path = _card_path(Path(path).expanduser())
    weights = card_path.with_name(WEIGHTS)
    if not card_path.is_file() or not weights.is_file():
        raise DataError(f"{path}: not a saved usfmae model (needs {CARD} and {WEIGHTS})")
    try:
        card = read_json(card_path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{card_path}: not readable JSON") from exc
    if not isinstance(card, dict) or card.get("format") != FORMAT or card.get("kind") not in KINDS:
        raise DataError(f"{card_path}: not a usfmae task model ({FORMAT})")
    model = build_task_model(card["arch"])
    state = load_file(str(weights))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DataError(f"{weights}: weights do not fit the architecture in {CARD} "
                        f"({str(exc).splitlines()[0]})") from exc
    card = {**card, "data_contract": DataContract.from_dict(card["data_contract"])}
    return model.eval(), card


def classifier_arch(model: nn.Module, num_classes: int, *, baseline: str | None = None, in_chans: int = 3,
                    img_size: int = 224, small_input: bool = False) -> dict[str, Any] | None:
    """The ``arch`` record of a ``finetune`` classifier: an EncoderClassifier on our ViT or a named
    baseline; None for other encoders (foundation-model adapters), which this format cannot rebuild."""
    from usfmae.models.mae import VisionTransformerEncoder

    if baseline is not None:
        return {"family": "baseline", "name": baseline, "num_classes": num_classes, "in_chans": in_chans,
                "img_size": img_size, "small_input": small_input}
    if not isinstance(getattr(model, "encoder", None), VisionTransformerEncoder):
        return None
    return {"family": "mae", "head": model.pool, "num_classes": num_classes,
            "encoder_cfg": model.encoder.cfg.to_dict()}
