"""A batch loader over packed shards that keeps an accelerator fed, and the fast pretraining pipeline.

:class:`ShardBatchLoader` draws whole batches: a seeded permutation per (seed, epoch) is split
between DDP ranks (disjoint), cut into batches, and each batch's indices are sorted so that
``ShardReader.read_batch`` gathers it with one NumPy fancy-index per shard straight from the memory
map. No per-image decode, no per-image Python. A background thread reads ahead ``prefetch``
batches into pinned host buffers; the consumer copies them to the device with
``non_blocking=True``, so the copy overlaps compute. Iteration can start at any step of an epoch,
which is how a resumed run continues mid-epoch with exactly the batches it would have seen.

The reading machinery (:class:`BatchFetcher`) takes any plan of index arrays, so it also serves:

- :func:`build_fast_pipeline`: loader + the batched on-device augmentation of
  :mod:`usfmae.data.gpu_augment`, yielding normalised float batches ready for the model;
- :func:`pretrain_pipeline`: ``usfmae pretrain --recipe fast``, on the paper recipe's own batch
  plan (``StepBatchSampler``), so both recipes feed the same images to the same step.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from usfmae.data.gpu_augment import GpuAugment
from usfmae.data.sampling import DataPipeline, StepBatchSampler, local_rows, mix_seed
from usfmae.data.transforms import AugmentConfig
from usfmae.errors import ConfigError
from usfmae.shards.store import ShardReader

_END = object()


class FrameArray:
    """In-memory stand-in for :class:`ShardReader` (same ``read_batch``), for small unpacked sources."""

    def __init__(self, frames: np.ndarray) -> None:
        if frames.ndim != 4 or frames.dtype != np.uint8:
            raise ValueError(f"expected (N, H, W, C) uint8 frames, got {frames.dtype} {frames.shape}")
        self.frames = np.ascontiguousarray(frames)
        self.frame_shape: tuple[int, int, int] = tuple(frames.shape[1:])  # type: ignore[assignment]

    @classmethod
    def from_dataset(cls, dataset: Any, max_bytes: int = 2 << 30) -> FrameArray:
        """Stack a map-style dataset of (C, H, W) uint8 tensors (e.g. ``phantom:N``) into memory."""
        first = dataset[0]
        need = len(dataset) * first.numel()
        if need > max_bytes:
            raise ConfigError(f"the fast recipe would hold {need / 2**30:.1f} GiB of frames in memory; "
                              "pack the corpus with `usfmae pack` and train from the shard folder")
        frames = np.empty((len(dataset), *first.shape[1:], first.shape[0]), dtype=np.uint8)
        for i in range(len(dataset)):
            frames[i] = dataset[i].permute(1, 2, 0).numpy()
        return cls(frames)

    def __len__(self) -> int:
        return len(self.frames)

    def read_batch(self, indices: Sequence[int] | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return np.take(self.frames, np.asarray(indices, dtype=np.int64), axis=0, out=out)


class BatchFetcher:
    """Reads planned batches from a reader and delivers them on a device, ``prefetch`` batches ahead.

    A background thread gathers each batch into host memory (page-locked when ``pin_memory``); the
    consumer copies it to the device with ``non_blocking=True`` and hands the buffer back once a
    CUDA event says the copy is done. Delivered tensors are (B, C, H, W) uint8 views of NHWC memory.

    Args:
        reader: :class:`ShardReader` or :class:`FrameArray`.
        device: where batches are delivered.
        pin_memory: stage batches in page-locked memory (default: when ``device`` is CUDA).
        prefetch: batches read ahead by the background thread (0 reads in the caller's thread).
    """

    def __init__(self, reader: ShardReader | FrameArray, device: str | torch.device = "cpu",
                 pin_memory: bool | None = None, prefetch: int = 2) -> None:
        self.reader = reader
        self.device = torch.device(device)
        self.pin_memory = self.device.type == "cuda" if pin_memory is None else bool(pin_memory)
        self.prefetch = int(prefetch)

    def fetch(self, batches: Iterable[np.ndarray]) -> Iterator[torch.Tensor]:
        """Yield one device batch per index array of ``batches`` (rows in the given order)."""
        if self.prefetch <= 0:
            for idx in batches:
                host = torch.from_numpy(self.reader.read_batch(idx))
                yield self._deliver(host, host, None)
            return
        yield from self._threaded(batches)

    def _new_buffer(self, rows: int) -> torch.Tensor:
        buf = torch.empty((rows, *self.reader.frame_shape), dtype=torch.uint8)
        return buf.pin_memory() if self.pin_memory else buf

    def _deliver(self, host: torch.Tensor, buf: torch.Tensor, free: queue.Queue | None) -> torch.Tensor:
        """Move one NHWC host batch to the device; hand its buffer back to the producer."""
        if self.device.type == "cpu":
            return host.permute(0, 3, 1, 2)
        dev = host.to(self.device, non_blocking=self.pin_memory)
        if free is not None:
            # the producer may refill ``buf`` only after this copy has run on the stream
            done = torch.cuda.Event() if self.device.type == "cuda" else None
            if done is not None:
                done.record()
            free.put((buf, done))
        return dev.permute(0, 3, 1, 2)

    def _threaded(self, batches: Iterable[np.ndarray]) -> Iterator[torch.Tensor]:
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        # on CPU every batch gets fresh memory (the caller may keep it); on an accelerator a small
        # ring of (pinned) buffers is reused once the copy out of it has completed
        free: queue.Queue | None = queue.Queue() if self.device.type != "cpu" else None
        if free is not None:
            for _ in range(self.prefetch + 2):
                free.put((None, None))  # allocated on first use, at the size of the batches
        stop = threading.Event()

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def take_buffer(rows: int) -> torch.Tensor | None:
            assert free is not None
            while not stop.is_set():
                try:
                    buf, event = free.get(timeout=0.1)
                except queue.Empty:
                    continue
                if event is not None:
                    event.synchronize()  # waits in this thread, never in the training loop
                return buf if buf is not None and len(buf) >= rows else self._new_buffer(rows)
            return None

        def produce() -> None:
            try:
                for idx in batches:
                    idx = np.asarray(idx, dtype=np.int64)
                    if free is None:
                        buf = torch.empty((len(idx), *self.reader.frame_shape), dtype=torch.uint8)
                    elif (buf := take_buffer(len(idx))) is None:
                        return
                    view = buf[: len(idx)]
                    self.reader.read_batch(idx, out=view.numpy())
                    if not put((buf, view)):
                        return
                put(_END)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                put(exc)

        thread = threading.Thread(target=produce, name="shard-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                item = ready.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                buf, view = item
                yield self._deliver(view, buf, free)
        finally:
            stop.set()
            thread.join()


class ShardBatchLoader:
    """Batches of uint8 frames (B, C, H, W) from a shard folder, deterministic per (seed, epoch).

    Args:
        shards: shard folder, an open :class:`ShardReader`, or a :class:`FrameArray`.
        batch_size: frames per batch on this rank.
        seed: base seed; the order of epoch ``e`` depends on (seed, e) only.
        rank, world_size: this process's share; ranks get disjoint indices and equal step counts.
        shuffle: False keeps index order (e.g. for feature extraction).
        drop_last: True (training) drops the frames that do not fill equal rank shares and the final
            short batch; False pads the rank shares by wrapping around (as ``DistributedSampler``)
            and keeps a final short batch.
        device, pin_memory, prefetch: as :class:`BatchFetcher`.
    """

    def __init__(self, shards: str | os.PathLike | ShardReader | FrameArray, batch_size: int, *, seed: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True, drop_last: bool = True,
                 device: str | torch.device = "cpu", pin_memory: bool | None = None, prefetch: int = 2) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.reader = shards if isinstance(shards, (ShardReader, FrameArray)) else ShardReader(shards)
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.shuffle, self.drop_last = shuffle, drop_last
        self.fetcher = BatchFetcher(self.reader, device, pin_memory, prefetch)
        self.epoch, self.start_step = 0, 0

    @property
    def device(self) -> torch.device:
        return self.fetcher.device

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch's order and the step to start from (for a resumed run)."""
        self.epoch, self.start_step = int(epoch), int(start_step)

    def _rank_indices(self, epoch: int) -> np.ndarray:
        n = len(self.reader)
        order = (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                 else np.arange(n, dtype=np.int64))
        if self.drop_last:
            order = order[: (n // self.world_size) * self.world_size]
        elif n % self.world_size:
            pad = self.world_size - n % self.world_size
            order = np.concatenate([order, np.resize(order, pad)])
        return order[self.rank::self.world_size]

    def batch_indices(self, epoch: int | None = None) -> list[np.ndarray]:
        """This rank's batches of epoch ``epoch`` (default: the current one), each sorted ascending."""
        mine = self._rank_indices(self.epoch if epoch is None else epoch)
        stop = (len(mine) // self.batch_size) * self.batch_size if self.drop_last else len(mine)
        # sorted inside a batch: each shard's rows are one contiguous read (batch order is random anyway)
        return [np.sort(mine[i:i + self.batch_size]) for i in range(0, stop, self.batch_size)]

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        per_rank = len(self.reader) // self.world_size if self.drop_last else -(-len(self.reader) // self.world_size)
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Yield (B, C, H, W) uint8 tensors on the device, from ``start_step`` of the epoch on."""
        yield from self.fetcher.fetch(self.batch_indices()[self.start_step:])


class FastPipeline:
    """Shard loader + on-device augmentation: iterate for normalised float batches.

    Yields (B, in_chans, img_size, img_size) float32 tensors on the device. The augmentation of
    batch ``k`` of epoch ``e`` on rank ``r`` is seeded by (seed, e, r, k), so a run resumed at step
    ``k`` sees exactly the batches an uninterrupted run would have seen.
    """

    def __init__(self, loader: ShardBatchLoader, augment: GpuAugment) -> None:
        self.loader, self.augment = loader, augment
        self._generator = torch.Generator()

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.loader.set_epoch(epoch, start_step)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[torch.Tensor]:
        epoch, step = self.loader.epoch, self.loader.start_step
        for batch in self.loader:
            seed = np.random.SeedSequence([self.loader.seed, epoch, self.loader.rank, step]).generate_state(1)[0]
            self._generator.manual_seed(int(seed))
            yield self.augment(batch, self._generator)
            step += 1


def build_fast_pipeline(shards: str | os.PathLike | ShardReader, batch_size: int, img_size: int, in_chans: int,
                        mean: Sequence[float], std: Sequence[float],
                        aug_cfg: AugmentConfig | Mapping[str, Any] | None = None, seed: int = 0,
                        rank: int = 0, world_size: int = 1, device: str | torch.device = "cpu", *,
                        augment: bool = True, shuffle: bool = True, drop_last: bool = True,
                        prefetch: int = 2) -> FastPipeline:
    """The fast pretraining input pipeline: shards -> pinned batches -> device -> augment -> normalise.

    Args:
        shards: shard folder written by ``usfmae pack`` (or an open ShardReader).
        batch_size: per-rank batch size.
        img_size, in_chans, mean, std: the model's data contract (``model.data_contract``).
        aug_cfg: ``transforms.AugmentConfig`` or a mapping of its fields (None = the paper's:
            rotation 0-90, flips 0.5, crop scale 0.5-2.0).
        seed: run seed; epoch order and augmentation derive from it.
        rank, world_size: from ``usfmae.train.distributed.init_from_env()``.
        device: the training device.
        augment: False gives resize + normalise only (e.g. for embedding).

    Returns:
        An iterable with ``set_epoch(epoch, start_step=0)`` and ``len()`` (steps per epoch); each
        item is a (batch_size, in_chans, img_size, img_size) float32 tensor on ``device``.
    """
    loader = ShardBatchLoader(shards, batch_size, seed=seed, rank=rank, world_size=world_size, shuffle=shuffle,
                              drop_last=drop_last, device=device, prefetch=prefetch)
    return FastPipeline(loader, GpuAugment(aug_cfg, img_size, in_chans, mean, std, enabled=augment))


def pretrain_pipeline(cfg: Any, dataset: Any, data_config: Mapping[str, Any], dist: Any) -> DataPipeline:
    """The ``--recipe fast`` data pipeline for ``usfmae.train.pretrain``.

    The batch plan is the paper recipe's own ``StepBatchSampler`` (same epoch order, same
    micro-batch/rank layout, same mid-epoch resume), so switching recipe changes how images are
    read and augmented, not which images a step sees. Rows keep the plan's order. Each block of a
    global batch is augmented with a generator seeded by (seed, step, first global row of the
    block), so 1 process with accumulation and N processes draw identical augmentations.

    Args:
        cfg: ``PretrainConfig`` (uses batch_size, accum_steps, seed, augment, augment_config()).
        dataset: from ``build_pretrain_dataset``; a shard folder's ``ShardDataset`` is read through
            its memory-mapped ``reader``; any other small dataset is stacked into memory once.
        data_config: the model's ``{"img_size", "in_chans", "mean", "std"}``.
        dist: anything with ``rank``, ``world_size`` and ``device`` (``usfmae.train.distributed.DistInfo``).

    Returns:
        A :class:`usfmae.data.sampling.DataPipeline`.
    """
    reader = getattr(dataset, "reader", None)
    if not isinstance(reader, ShardReader):
        reader = FrameArray.from_dataset(dataset)
    sampler = StepBatchSampler(len(reader), cfg.batch_size, cfg.seed, rank=dist.rank, world_size=dist.world_size,
                               accum_steps=cfg.accum_steps)
    fetcher = BatchFetcher(reader, dist.device)
    augment = GpuAugment(cfg.augment_config(), int(data_config["img_size"]), int(data_config["in_chans"]),
                         list(data_config["mean"]), list(data_config["std"]), enabled=bool(cfg.augment))
    generator = torch.Generator()

    def batches(epoch: int, start_step: int) -> Iterator[torch.Tensor]:
        sampler.set_epoch(epoch, start_step)
        return fetcher.fetch(np.fromiter((i for i, _ in batch), dtype=np.int64) for batch in sampler)

    def transform(x: torch.Tensor, step: int, micro: int) -> torch.Tensor:
        rows = local_rows(cfg.batch_size, dist.world_size, cfg.accum_steps, dist.rank, micro)
        generator.manual_seed(mix_seed(cfg.seed, step, rows.start, 0xA06))
        return augment(x, generator)

    return DataPipeline(sampler.steps_per_epoch, batches, transform)
