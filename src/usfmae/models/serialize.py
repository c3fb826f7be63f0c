"""Writing weight files: atomically, and with a failed write reported as the ``OSError`` it is.

Every file of weights the product writes goes through here: training checkpoints (``torch.save``
zip archives) and safetensors (saved task models, encoder exports, Hugging Face folders). Both
libraries hide a failed write behind their own exception types: torch's zip writer raises
``RuntimeError("... unexpected pos ...")`` and safetensors ``SafetensorError("... (os error 28)")``,
which the CLI would print as a traceback. Here they become the ``OSError`` (errno, naming the final
file), so a full disk is one line with exit 2 like every other writer's, and the previous file is
left whole (the new one is written under a temporary name and renamed only when complete).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from usfmae.fileio import atomic_path

_OS_ERROR = re.compile(r"os error (\d+)")


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save(payload)`` to ``path`` atomically.

    Raises:
        OSError: the write failed (disk full, permissions), naming ``path``.
    """
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as handle:  # a Python file: the write's OSError survives as the context
                torch.save(payload, handle)
        except RuntimeError as exc:
            cause = exc.__context__
            if isinstance(cause, OSError):
                raise OSError(cause.errno, cause.strerror, str(path)) from None
            raise
    return Path(path)


def save_safetensors(state: dict[str, torch.Tensor], path: str | os.PathLike,
                     metadata: dict[str, str] | None = None) -> Path:
    """``safetensors.torch.save_file(state, metadata=metadata)`` to ``path`` atomically.

    Raises:
        OSError: the write failed (disk full, permissions), naming ``path``.
    """
    with atomic_path(path) as tmp:
        try:
            save_file(state, str(tmp), metadata=metadata)
        except SafetensorError as exc:
            found = _OS_ERROR.search(str(exc))
            if found:
                code = int(found.group(1))
                raise OSError(code, os.strerror(code), str(path)) from None
            raise
    return Path(path)
