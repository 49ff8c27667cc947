"""Checker for lesson 6's coding exercise: a cosine learning-rate schedule, written by the learner.

The reference is PyTorch's ``torch.optim.lr_scheduler.CosineAnnealingLR``, stepped on a fresh optimizer;
the inputs are fresh random lengths and rates, with and without a floor ``min_lr``.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Callable

import numpy as np
import torch

from tlcourse.exercises import attempt


def torch_cosine_rates(total_steps: int, max_lr: float, min_lr: float) -> list[float]:
    """The rates of ``CosineAnnealingLR(T_max=total_steps, eta_min=min_lr)`` at steps 0 to total_steps."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=max_lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=min_lr)
    rates = []
    for _ in range(total_steps + 1):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: nothing changes but the step count (PyTorch wants it before the scheduler's)
        scheduler.step()
    return rates


def _number(value: object) -> float | None:
    """``value`` as a float if it is one real number (also a one-element NumPy array or tensor), else None."""
    if isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim <= 1 and len(value.reshape(-1)) == 1:
        value = value.item()
    return float(value) if isinstance(value, Real) and not isinstance(value, bool) else None


def check_cosine_rate(cosine_rate: Callable[[int, int, float, float], float]) -> str:
    """Check ``cosine_rate(step, total_steps, max_lr, min_lr)`` against CosineAnnealingLR at every step."""
    rng = np.random.default_rng()
    cases = [(10, 0.1, 0.0), (int(rng.integers(5, 60)), float(10 ** rng.uniform(-4, -1)), 0.0),
             (int(rng.integers(5, 60)), 0.05, float(10 ** rng.uniform(-5, -3))), (1, 0.01, 0.001)]
    for total, max_lr, min_lr in cases:
        case = f"total_steps={total}, max_lr={max_lr:.3g}, min_lr={min_lr:.3g}"
        got = []
        for step in range(total + 1):
            rate = attempt(cosine_rate, step, total, max_lr, min_lr)
            assert _number(rate) is not None, (
                f"cosine_rate should return one number, the rate; for step={step}, {case} it returned "
                f"{type(rate).__name__} {rate!r:.60}.")
            got.append(_number(rate))
        expected = torch_cosine_rates(total, max_lr, min_lr)

        def close(a: float, b: float) -> bool:
            return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9 * max_lr)

        assert close(got[0], max_lr), f"your rate at step 0 should be max_lr ({case}); yours is {got[0]:.4g}."
        if not close(got[-1], min_lr):
            early = total > 1 and close(got[-2], min_lr)
            raise AssertionError(
                f"your rate at the last step (step = total_steps) should be min_lr ({case}); yours is {got[-1]:.4g}"
                + (": it gets there one step early. Divide by total_steps, not total_steps - 1." if early else "."))
        for step, (mine, theirs) in enumerate(zip(got, expected)):
            assert close(mine, theirs), (
                f"at step {step} ({case}) the rate should be {theirs:.6g}, yours is {mine:.6g}. Half way, at "
                "step = total_steps / 2, the rate should be half way between max_lr and min_lr.")
    return ("Correct: your rates match PyTorch's CosineAnnealingLR at every step of fresh schedules, "
            "with and without a floor min_lr.")
