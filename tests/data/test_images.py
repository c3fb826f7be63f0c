"""usfmae.data.images: batches of image files for embed / predict, with DataLoader workers or without."""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from usfmae.data.images import iter_image_batches
from usfmae.fileio import RejectLog
from usfmae.runtime import init_worker_threads, worker_start_method


class WorkerProbe(Dataset):
    """Each item says where it was made: the process's parent and its thread counts."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> tuple[int, int, int]:
        return os.getppid(), torch.get_num_threads(), cv2.getNumThreads()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forkserver is the Linux choice")
def test_workers_are_not_forked_from_the_caller_and_run_one_thread_each():
    """Forked from a process whose OpenCV pool was in use, a worker could deadlock; forkserver
    children are the forkserver's, not this process's."""
    assert worker_start_method(0) is None and worker_start_method(2) == "forkserver"
    cv2.setNumThreads(2)
    loader = DataLoader(WorkerProbe(), batch_size=None, num_workers=2, worker_init_fn=init_worker_threads,
                        multiprocessing_context=worker_start_method(2))
    for parent, torch_threads, cv_threads in loader:
        assert parent != os.getpid()
        assert (torch_threads, cv_threads) == (1, 1)


def test_batches_with_workers_equal_batches_without(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"scan{i}.png")
        cv2.imwrite(str(paths[-1]), rng.integers(0, 255, (40 + 8 * i, 50), dtype=np.uint8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    paths.insert(2, tmp_path / "broken.png")
    runs = {}
    for workers in (0, 2):
        rejects = RejectLog(tmp_path / f"rejects{workers}.jsonl")
        batches = list(iter_image_batches(paths, 32, 1, batch_size=2, num_workers=workers, rejects=rejects))
        runs[workers] = (torch.cat([i for i, _ in batches]), torch.cat([x for _, x in batches]), rejects.read())
    assert runs[0][0].tolist() == [0, 1, 3, 4, 5]  # the broken file (index 2) left out, in order
    assert runs[0][1].shape == (5, 1, 32, 32) and runs[0][1].dtype == torch.uint8
    assert torch.equal(runs[0][1], runs[2][1]) and runs[0][2] == runs[2][2]
    assert [r["file"] for r in runs[0][2]] == [str(tmp_path / "broken.png")]
