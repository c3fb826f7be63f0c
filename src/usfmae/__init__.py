"""usfmae: ultrasound self-supervised foundation models (USF-MAE), from raw data to evaluation.

The Python API (:mod:`usfmae.api`) is available at the top level and loaded on first use, so
``import usfmae`` (and the CLI) stays light::

    import usfmae
    encoder, info = usfmae.load_encoder("export/")
    features, paths = usfmae.embed("my_scans/", encoder=encoder)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Top-level names served by usfmae.api (kept in step with api.__all__ by a test).
_API = ("create_model", "list_models", "load_encoder", "embed", "finetune", "segment", "predict", "explain",
        "FinetuneResult", "SegmentResult", "Embeddings")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module("usfmae.api"), name)
    raise AttributeError(f"module 'usfmae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
