"""Foundation-model adapters: other projects' released encoders behind our encoder face.

``ADAPTERS[name](weights, img_size=None, in_chans=None) -> (encoder, DataContract)`` loads the file
as its project publishes it (key layouts and sources in each module's docstring) and returns an
:class:`~usfmae.models.adapters.base.AdaptedEncoder`: ``forward_features(x) -> (B, 1 + L, D)`` with
token 0 the model's own pooled feature, ``forward_intermediates`` for dense heads, ``num_features``
and ``data_contract`` (its input protocol). ``usfmae.models.encoder.load_encoder`` consults this
registry, so ``--model ultrasam --weights UltraSam.pth`` works in finetune, probe, embed, export and
benchmark with our heads, folds, seeds and metrics. ``SPECS[name]`` says where each project
publishes its weights and what input it expects.
"""

from __future__ import annotations

from usfmae.models.adapters import dino, sam, tinyusfm, usfm
from usfmae.models.adapters.base import AdaptedEncoder, AdapterSpec, Loader

ADAPTERS: dict[str, Loader] = {
    "ultrasam": sam.load_ultrasam,
    "sam_vit_b": sam.load_sam,
    "usfm": usfm.load,
    "tinyusfm": tinyusfm.load,
    "dinov2_vitb14": dino.load_dinov2,
    "ultradino": dino.load_ultradino,
}

SPECS: dict[str, AdapterSpec] = {spec.name: spec for spec in (
    sam.ULTRASAM, sam.SAM, usfm.USFM, tinyusfm.TINYUSFM, dino.DINOV2, dino.ULTRADINO)}

__all__ = ["ADAPTERS", "SPECS", "AdaptedEncoder", "AdapterSpec"]
