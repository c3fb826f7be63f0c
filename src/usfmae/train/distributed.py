"""Data-parallel set-up detected from the environment (``torchrun``), and deterministic sharding.

``torchrun --nproc_per_node 8 -m usfmae.cli pretrain ...`` (or ``--nnodes``/``--rdzv-endpoint`` for
several machines) sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_from_env` reads them,
starts the process group (NCCL on CUDA, Gloo on CPU) and returns a :class:`DistInfo`. Without those
variables it returns a single-process DistInfo and starts nothing.

Which images each rank sees is the batch plan of :mod:`usfmae.data.sampling`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from usfmae.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes files, logs progress and shows bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_from_env(device: str | None = None) -> DistInfo:
    """Join the ``torchrun`` process group if the environment says so.

    Args:
        device: "cpu" or "cuda" to force one; None picks CUDA when available.

    Returns:
        DistInfo with this process's rank, world size, local rank and device
        (``cuda:LOCAL_RANK`` on GPU machines).
    """
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for, but PyTorch sees no CUDA GPU here; use --device cpu")
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        kwargs = {"device_id": dev} if use_cuda else {}
        dist.init_process_group(backend=backend, **kwargs)
        log.debug("rank %d/%d joined the %s process group", rank, world_size, backend)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup() -> None:
    """Leave the process group (safe to call when none was started)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Average ``t`` over ranks in place and return it (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t
