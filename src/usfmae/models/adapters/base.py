"""What every foundation-model adapter shares: its description, the encoder face it returns, reading
a published file as it is downloaded, and the one key check.

An adapter turns another project's released checkpoint into an encoder our heads accept:
``forward_features(x (B, C, H, W)) -> (B, 1 + L, D)``. Token 0 is the model's *own* pooled feature,
computed the way its project's classifier computes it (the CLS token for DINOv2, the mean of the
patch tokens for SAM, mean + ``fc_norm`` for USFM); tokens 1..L are the patch tokens. So ``--pool
cls`` reproduces each project's protocol and ``--pool mean`` averages the patch tokens for all of
them, and :class:`usfmae.models.classifier.EncoderClassifier` / :class:`usfmae.models.encoder.
PooledEncoder` work unchanged.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from usfmae.contract import DataContract
from usfmae.errors import DataError, UsfmaeError
from usfmae.models.checkpoint import adapt_input_conv

StateDict = dict[str, torch.Tensor]
Source = str | os.PathLike | dict | None


@dataclass(frozen=True)
class AdapterSpec:
    """One supported foundation model.

    Attributes:
        name: registry name (``--model NAME``).
        title: row title in reports.
        contract: the input protocol of the model's own fine-tuning code (size, channels, mean, std, fit).
        weights: where the project publishes its weights (one line, shown when a file is missing).
        source: the public code the key layout was read from (repository: file, ...).
        pooled: what token 0 of ``forward_features`` is (the model's own pooled feature).
        note: caveats a comparison must state (data leakage, licence, unpublished weights).
    """

    name: str
    title: str
    contract: DataContract
    weights: str
    source: str
    pooled: str
    note: str = ""


class AdaptedEncoder(nn.Module):
    """A foreign backbone behind our encoder face (see the module docstring).

    Subclasses implement :meth:`forward_tokens`; :meth:`forward_intermediates` uses the backbone's
    timm ``forward_intermediates`` (NCHW feature maps of the chosen blocks).
    """

    num_prefix_tokens = 1  # token 0: the model's own pooled feature

    def __init__(self, backbone: nn.Module, spec: AdapterSpec, contract: DataContract, embed_dim: int,
                 patch_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        self.data_contract = contract
        self.num_features = int(embed_dim)
        self.patch_size = int(patch_size)
        self.model_name = spec.name

    @property
    def data_config(self) -> dict[str, Any]:
        """The contract as the legacy ``data_config`` dict (``usfmae.models.encoder.data_contract`` reads it)."""
        return self.data_contract.to_dict()

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pooled (B, D), patch tokens (B, L, D))`` for normalised images ``x (B, C, H, W)``."""
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1 + L, D)``: the model's own pooled feature, then the patch tokens."""
        pooled, patches = self.forward_tokens(x)
        return torch.cat([pooled[:, None], patches], dim=1)

    @property
    def blocks(self) -> nn.Module:
        """The backbone's transformer blocks (dense heads pick their taps by depth)."""
        return self.backbone.blocks

    @property
    def embed_dim(self) -> int:
        return self.num_features

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int], norm: bool = False,
                              intermediates_only: bool = True) -> list[torch.Tensor]:
        """Feature maps ``[(B, D, H/p, W/p)]`` after the blocks ``indices`` (an int: the last n blocks);
        ``norm`` applies the backbone's final norm where it has one (SAM, USFM and TinyUSFM have none)."""
        if not intermediates_only:
            raise UsfmaeError("adapters return the intermediate maps only")
        if isinstance(indices, int):
            return self.backbone.forward_intermediates(x, indices=indices, norm=norm, output_fmt="NCHW",
                                                       intermediates_only=True)
        # timm returns one map per distinct block; give one per requested index, in the order asked.
        depth = len(self.blocks)
        wanted = [i % depth for i in indices]
        distinct = sorted(set(wanted))
        maps = self.backbone.forward_intermediates(x, indices=distinct, norm=norm, output_fmt="NCHW",
                                                   intermediates_only=True)
        by_block = dict(zip(distinct, maps, strict=True))
        return [by_block[i] for i in wanted]


# ------------------------------------------------------------------------------------ reading files
class _StandIn:
    """Inert replacement for a class a checkpoint pickles beside its tensors (mmengine's
    HistoryBuffer, numpy scalars in ``meta``): accepts any construction and state, runs no code."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _StandIn:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def read_raw(path: str | os.PathLike, spec: AdapterSpec) -> Any:
    """The whole object of a downloaded weight file, tensors memory-mapped, no code executed.

    ``.safetensors`` files are read as they are. PyTorch files are read with ``weights_only=True``;
    the foreign classes some training frameworks pickle beside the weights (mmengine writes its
    message hub and numpy values into ``meta``) are replaced by inert stand-ins, so such files load
    without that framework and without trusting the pickle.

    Raises:
        DataError: the file is missing (the message says where ``spec`` publishes it) or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {spec.title} weights not found; {spec.weights}")
    with open(path, "rb") as handle:
        head = handle.read(9)
    try:
        if path.suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{"):
            from safetensors.torch import load_file

            return load_file(str(path))
        is_zip = zipfile.is_zipfile(path)
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) if is_zip else []
        stand_ins = [(type(name.rsplit(".", 1)[-1], (_StandIn,), {}), name) for name in names]
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except Exception as exc:  # noqa: BLE001 - any reader failure is one line about this file
        raise DataError(f"{path}: not a readable {spec.title} checkpoint "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc


def tensors_of(obj: Any, *wrappers: str) -> StateDict:
    """The flat ``{name: tensor}`` dict inside ``obj``: the first of ``wrappers`` present is unwrapped
    (e.g. ``"state_dict"`` for mmengine files), non-tensor entries are dropped."""
    for key in wrappers:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise UsfmaeError(f"expected a state dict, got {type(obj).__name__}")
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _listing(items: list[str], n: int = 6) -> str:
    shown = ", ".join(items[:n])
    return f"[{shown}{f', ... (+{len(items) - n} more)' if len(items) > n else ''}]"


def check_keys(state: StateDict, model: nn.Module, label: str, *, optional: Iterable[str] = (),
               origin: dict[str, str] | None = None) -> list[str]:
    """Refuse a state dict that does not fit ``model`` exactly; returns the optional keys left at init.

    Args:
        state: converted weights (our names).
        model: the target (may live on the meta device).
        label: the file or model named in the error.
        optional: regexes of model keys the published file may lack (they keep their initialisation).
        origin: our key -> its name in the file, so unexpected keys are named as the file spells them.

    Raises:
        UsfmaeError: one line naming missing keys, unexpected keys and shape mismatches.
    """
    target = model.state_dict()
    patterns = [re.compile(p) for p in optional]
    absent = [k for k in target if k not in state]
    missing = [k for k in absent if not any(p.fullmatch(k) for p in patterns)]
    unexpected = sorted((origin or {}).get(k, k) for k in set(state) - set(target))
    mismatched = [f"{k} {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
                  for k in state if k in target and state[k].shape != target[k].shape]
    if missing or unexpected or mismatched:
        problems = [f"{what} {_listing(items)}" for what, items in
                    (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", mismatched))
                    if items]
        raise UsfmaeError(f"{label}: weights do not fit: " + "; ".join(problems)
                          + (" (missing keys in timm names)" if missing and origin else ""))
    return [k for k in absent if k not in missing]


def load_checked(model: nn.Module, state: StateDict, label: str, *, optional: Iterable[str] = (),
                 origin: dict[str, str] | None = None) -> None:
    """:func:`check_keys`, then copy the tensors in as float32 (nothing aliases the file's memory map)."""
    check_keys(state, model, label, optional=optional, origin=origin)
    owned = {k: v.detach().to(torch.float32 if v.is_floating_point() else v.dtype, copy=True)
             for k, v in state.items()}
    model.load_state_dict(owned, strict=False)


def adapt_channels(state: StateDict, key: str, in_chans: int) -> StateDict:
    """Fit the patch projection ``key`` to ``in_chans`` (RGB filters summed for gray, see
    :func:`usfmae.models.checkpoint.adapt_input_conv`)."""
    weight = state.get(key)
    if weight is not None and weight.ndim == 4 and weight.shape[1] != in_chans:
        state = {**state, key: adapt_input_conv(weight, in_chans)}
    return state


def grid_of(contract: DataContract, patch_size: int) -> int:
    """Patch grid side at the contract's size; refuses sizes the patch does not divide."""
    if contract.img_size % patch_size:
        raise UsfmaeError(f"image size {contract.img_size} is not a multiple of the patch size {patch_size}")
    return contract.img_size // patch_size


def count_blocks(state: StateDict, pattern: str) -> int:
    """Number of blocks: 1 + the largest index captured by ``pattern`` (e.g. ``r"blocks\\.(\\d+)\\."``)."""
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    if not found:
        raise UsfmaeError(f"no transformer blocks found (expected keys like {pattern!r})")
    return max(found) + 1


Loader = Callable[..., tuple[nn.Module, DataContract]]


def contract_for(spec: AdapterSpec, img_size: int | None = None, in_chans: int | None = None) -> DataContract:
    """The adapter's native contract, at another size or channel count when asked.

    Another channel count keeps the native statistics: RGB -> gray averages them (the patch filters
    are summed to match), gray -> N repeats them.
    """
    native = spec.contract
    chans = int(in_chans or native.in_chans)
    mean, std = native.mean, native.std
    if chans != native.in_chans:
        if chans == 1:
            mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
        elif native.in_chans == 1:
            mean, std = mean * chans, std * chans
        else:
            raise UsfmaeError(f"{spec.name}: cannot change {native.in_chans} input channels to {chans}")
    return DataContract(int(img_size or native.img_size), chans, mean, std, native.fit)


def require_weights(spec: AdapterSpec, weights: Source) -> None:
    """Foundation models are only run with their published weights: none given is one line saying where."""
    if weights is None:
        raise DataError(f"{spec.name} needs --weights FILE; {spec.weights}")
