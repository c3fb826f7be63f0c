"""Watch supervised training: a line per epoch, ``log.jsonl``, optional TensorBoard, learning curves.

:class:`EpochLog` is an ``on_epoch_end(epoch, record)`` callback for :func:`usfmae.train.finetune.run`
(records carry ``epoch``, ``train_loss``, ``val_f1``, ``lr``, ``steps``, ``seconds``, ``fold``, ``seed``);
:func:`plot_learning_curves` draws ``log.jsonl`` as one train-loss and one validation-F1 panel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from usfmae.errors import ConfigError
from usfmae.fileio import append_jsonl, atomic_path, read_jsonl

log = logging.getLogger(__name__)


def tensorboard_writer(out_dir: str | Path) -> Any:
    """A TensorBoard ``SummaryWriter`` on ``out_dir/tensorboard``.

    Raises:
        ConfigError: the tensorboard package is not installed (one line, with the fix).
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ConfigError("--tensorboard needs the tensorboard package (pip install tensorboard)") from exc
    return SummaryWriter(str(Path(out_dir) / "tensorboard"))


class EpochLog:
    """Log every epoch: one ``usfmae:`` line, a ``log.jsonl`` record, TensorBoard scalars if asked.

    Args:
        out_dir: run folder; ``log.jsonl`` (and ``tensorboard/``) go there.
        tensorboard: also write TensorBoard event files (needs the ``tensorboard`` package).
        then: another callback to call after logging (e.g. the user's).
    """

    def __init__(self, out_dir: str | Path, tensorboard: bool = False,
                 then: Callable[[int, dict[str, Any]], None] | None = None) -> None:
        self.out = Path(out_dir)
        self.path = self.out / "log.jsonl"
        self.then = then
        self.writer = tensorboard_writer(self.out) if tensorboard else None

    def __call__(self, epoch: int, record: dict[str, Any]) -> None:
        cell = f"fold {record.get('fold', 0)} seed {record.get('seed', 0)}"
        f1 = record.get("val_f1")
        log.info("%s epoch %d: train loss %.4f, val macro-F1 %s, lr %.2e, %.1f s", cell, epoch + 1,
                 record["train_loss"], "n/a" if f1 is None else f"{f1:.3f}", record.get("lr", float("nan")),
                 record.get("seconds", 0.0))
        append_jsonl(self.path, record)
        if self.writer is not None:
            tag = f"fold{record.get('fold', 0)}_seed{record.get('seed', 0)}"
            self.writer.add_scalar(f"{tag}/train_loss", record["train_loss"], epoch)
            self.writer.add_scalar(f"{tag}/lr", record.get("lr", 0.0), epoch)
            if f1 is not None:
                self.writer.add_scalar(f"{tag}/val_f1_macro", f1, epoch)
            self.writer.flush()
        if self.then is not None:
            self.then(epoch, record)

    def close(self) -> Path | None:
        """Close TensorBoard and draw ``learning_curves.png`` from the log; returns its path (None: no log)."""
        if self.writer is not None:
            self.writer.close()
        return plot_learning_curves(self.path, self.out / "learning_curves.png") if self.path.is_file() else None


def plot_learning_curves(log_path: str | Path, out: str | Path) -> Path:
    """Train loss and validation macro-F1 per epoch, one line per (fold, seed); the last record of an
    epoch wins when a cell was run again."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[tuple[int, int], dict[int, dict[str, Any]]] = {}
    for record in read_jsonl(log_path):
        curves.setdefault((int(record.get("fold", 0)), int(record.get("seed", 0))), {})[int(record["epoch"])] = record
    fig, (loss_ax, f1_ax) = plt.subplots(1, 2, figsize=(9, 3.4))
    for (fold, seed), epochs in sorted(curves.items()):
        xs = sorted(epochs)
        label = f"fold {fold}, seed {seed}"
        loss_ax.plot([x + 1 for x in xs], [epochs[x]["train_loss"] for x in xs], marker=".", label=label)
        val = [(x + 1, epochs[x]["val_f1"]) for x in xs if epochs[x].get("val_f1") is not None]
        if val:
            f1_ax.plot(*zip(*val, strict=True), marker=".", label=label)
    loss_ax.set(xlabel="epoch", ylabel="train loss", title="training loss")
    f1_ax.set(xlabel="epoch", ylabel="macro-F1", title="validation macro-F1 (inner split)", ylim=(0, 1))
    if not f1_ax.lines:
        f1_ax.text(0.5, 0.5, "no validation split", ha="center", va="center", transform=f1_ax.transAxes)
    if len(curves) <= 10:
        loss_ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out
