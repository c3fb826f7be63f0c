"""The supervised loop: exact losses and updates on a linear model, clipping, lr per step, no host syncs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from usfmae.train import engine

# y = x @ w with w = (0, 0) at the start; MSE; SGD at lr 0.1.
# Batch 1: x = [[1, 0], [0, 1]], y = [1, 2] -> loss (1 + 4) / 2 = 2.5, grad = X^T (Xw - y) = (-1, -2),
#          w -> (0.1, 0.2).
# Batch 2: x = [[1, 1]], y = [1]       -> prediction 0.3, loss 0.49, grad = 2 (0.3 - 1) (1, 1) = (-1.4, -1.4),
#          w -> (0.24, 0.34).
# Epoch loss (per sample): (2.5 * 2 + 0.49 * 1) / 3 = 1.83.
BATCHES = [(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0], [2.0]])),
           (torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0]]))]


def _linear() -> nn.Linear:
    model = nn.Linear(2, 1, bias=False)
    nn.init.zeros_(model.weight)
    return model


def _epoch(model: nn.Module, batches=BATCHES, *, clip: float | None = None, lr=lambda step: 0.1, start: int = 0,
           transform=None, loss_fn=nn.functional.mse_loss, optimizer=None) -> dict:
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.0)
    return engine.train_supervised_epoch(model, batches, loss_fn=loss_fn, optimizer=optimizer, lr_at_step=lr,
                                         start_step=start, device=torch.device("cpu"), amp=False, clip_grad=clip,
                                         transform=transform)


def test_one_epoch_of_a_linear_model_gives_the_hand_computed_loss_and_weights() -> None:
    model = _linear()
    result = _epoch(model)
    assert result["steps"] == 2 and result["images"] == 3
    assert result["loss"] == pytest.approx(1.83, abs=1e-6)
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[0.24, 0.34]]))
    assert model.training


@pytest.mark.parametrize("clip, expected", [
    (None, [0.1, 0.2]),                                            # |g| = sqrt(5) ~ 2.24, unclipped
    (0.0, [0.1, 0.2]),                                             # 0 means off
    (10.0, [0.1, 0.2]),                                            # above the norm: no change
    (0.5, [0.1 * 0.5 / math.sqrt(5), 0.2 * 0.5 / math.sqrt(5)]),  # scaled to norm 0.5
])
def test_clipping_scales_the_step_to_the_max_norm(clip: float | None, expected: list[float]) -> None:
    model = _linear()
    _epoch(model, BATCHES[:1], clip=clip)
    torch.testing.assert_close(model.weight.detach(), torch.tensor([expected]), rtol=0, atol=1e-6)


def test_lr_is_set_per_step_from_the_global_step_with_group_scales() -> None:
    model = _linear()
    optimizer = torch.optim.SGD([{"params": model.parameters(), "lr_scale": 0.5}], lr=0.0)
    seen: list[int] = []

    def lr(step: int) -> float:
        seen.append(step)
        return 0.2 * (step - 4)  # 0.2 at step 5, 0.4 at step 6

    result = _epoch(model, optimizer=optimizer, lr=lr, start=5)
    assert seen == [5, 6] and result["steps"] == 2
    # Effective lr 0.1 then 0.2: w -> (0.1, 0.2), then (0.1, 0.2) + 0.2 * 1.4 (1, 1).
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[0.38, 0.48]]))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.2)


def test_transform_runs_on_input_and_target_together() -> None:
    model = _linear()
    # Zeroing the target makes every loss 0 at w = 0: no gradient, no change.
    result = _epoch(model, transform=lambda x, y: (x, torch.zeros_like(y)))
    assert result["loss"] == 0.0
    torch.testing.assert_close(model.weight.detach(), torch.zeros(1, 2))


def test_non_finite_loss_names_the_first_bad_step() -> None:
    calls = []

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        loss = nn.functional.mse_loss(out, y)
        return loss * float("nan") if len(calls) >= 2 else loss

    with pytest.raises(engine.NonFiniteLossError, match="step 8"):
        _epoch(_linear(), BATCHES * 2, loss_fn=loss_fn, start=7)
    assert len(calls) == 4  # the epoch ran to its end: the check is one sync, not one per step


def test_no_batches_is_an_empty_epoch() -> None:
    result = _epoch(_linear(), [])
    assert result["steps"] == 0 and result["images"] == 0 and math.isnan(result["loss"])


@pytest.mark.parametrize("repeats", [1, 6])
def test_the_epoch_reads_back_to_the_host_a_fixed_number_of_times(repeats: int, monkeypatch) -> None:
    """Host reads (item, float, int, bool, tolist) do not grow with the number of steps."""
    reads = []
    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    _epoch(_linear(), BATCHES * repeats, clip=0.5)
    assert sorted(reads) == ["__float__", "__int__"]


def test_predict_returns_float32_cpu_outputs_in_order_in_eval_mode() -> None:
    model = nn.Sequential(nn.Dropout(0.9), nn.Identity())  # dropout would scramble outputs in train mode
    model.train()
    xs = [torch.arange(6.0).reshape(3, 2), torch.arange(6.0, 8.0).reshape(1, 2)]
    labels = torch.zeros(1)
    out = engine.predict(model, [xs[0], (xs[1], labels)], device=torch.device("cpu"), amp=False,
                         transform=lambda x: x * 2)
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    torch.testing.assert_close(out, torch.arange(8.0).reshape(4, 2) * 2)
    assert model.training  # restored
    assert engine.predict(model, [], device=torch.device("cpu"), amp=False).numel() == 0
