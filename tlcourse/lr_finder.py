"""The learning-rate range test (the "LR finder"): train briefly with a rate that grows every batch,
watch the loss, and read a good rate off the curve.

At first the rate is too small to change anything and the loss stays flat; then it falls; past a
point the steps overshoot and the loss shoots up. A good rate lies on the falling part, well below
the blow-up. The noisy per-batch losses are smoothed (an exponential moving average, corrected for
its start at zero, as in Adam). Nothing the test trains survives: the model's weights and buffers,
the optimizer's state and rates, the train/eval mode, torch's random number generator and the
loader's shuffling generator are put back afterwards."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import DataError
from .models import model_device
from .training import train_step

#: The suggestion rules :func:`suggest` knows.
RULES = ("valley", "steepest", "minimum")


@dataclass
class RangeTest:
    """The result of :func:`lr_range_test`: rates tried, losses seen, and the suggested rate."""

    lrs: np.ndarray  # the first parameter group's rate at each batch
    losses: np.ndarray  # smoothed losses (what to plot and read)
    raw_losses: np.ndarray  # each batch's loss as measured
    ratios: tuple[float, ...]  # each group's rate divided by the first group's (kept throughout)
    suggestion: float
    rule: str
    stopped_early: bool  # True when the loss blew up before end_lr

    def rates(self, lr: float | None = None) -> list[float]:
        """The rate of every parameter group for a first-group rate ``lr`` (default: the suggestion)."""
        lr = self.suggestion if lr is None else lr
        return [lr * ratio for ratio in self.ratios]

    def suggest(self, rule: str = "valley") -> float:
        """The rate another rule reads off the same curve."""
        return float(self.lrs[suggestion_index(self.lrs, self.losses, rule)])

    def plot(self, ax=None, skip_end: int = 3):
        """Smoothed loss against the rate (log axis), with the suggestion marked; returns the axes."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(6, 3.5))[1]
        end = max(2, len(self.lrs) - skip_end) if self.stopped_early else len(self.lrs)
        ax.plot(self.lrs[:end], self.losses[:end], color="C0", label="smoothed loss")
        ax.plot(self.lrs[:end], self.raw_losses[:end], color="C0", alpha=0.25, lw=0.8, label="batch loss")
        at = int(np.argmin(np.abs(np.log(self.lrs) - math.log(self.suggestion))))
        ax.plot([self.suggestion], [self.losses[at]], "o", color="C3",
                label=f"suggestion ({self.rule}): {self.suggestion:.2g}")
        ax.set(xscale="log", xlabel="learning rate" + (" (first group)" if len(self.ratios) > 1 else ""),
               ylabel="loss")
        top = float(np.nanmax(self.losses[: max(1, end // 2)]))  # keep the blow-up from flattening the curve
        ax.set_ylim(top=max(top * 1.3, float(np.nanmin(self.losses[:end])) * 1.1))
        ax.grid(alpha=0.3, which="both")
        ax.legend()
        return ax


def suggestion_index(lrs: np.ndarray, losses: np.ndarray, rule: str = "valley") -> int:
    """Index of the suggested rate on a range-test curve (``losses`` smoothed).

    * ``"valley"`` (fastai's default since 2021): find the longest stretch over which the loss keeps
      falling (the longest decreasing run of points, gaps allowed), and take the point a half of the
      way into it (fastai: a third plus a sixth). It sits in the middle of the descent: fast, yet far
      from the blow-up.
    * ``"steepest"``: where the loss falls fastest per factor of rate (the most negative slope
      against log(rate), over a tenth of the curve), before the lowest loss. Noise moves it more.
    * ``"minimum"``: a tenth of the rate at the lowest loss (the older rule of thumb)."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    if len(lrs) != len(losses) or len(lrs) < 3:
        raise ValueError(f"need at least 3 (rate, loss) points of equal number, got {len(lrs)} and {len(losses)}")
    if rule == "valley":
        n = len(losses)
        run = [1] * n  # run[i]: length of the longest decreasing sequence of points ending at i
        start = end = 0
        for i in range(1, n):
            for j in range(i):
                if losses[i] < losses[j] and run[i] < run[j] + 1:
                    run[i] = run[j] + 1
            if run[end] < run[i]:
                end, start = i, i - run[i]
        section = (end - start) / 3
        return max(0, min(n - 1, start + int(section) + int(section / 2)))
    if rule == "steepest":
        lowest = int(np.argmin(losses))
        span = max(1, len(losses) // 10)  # slope over a tenth of the curve: single steps are noise
        if lowest < span:
            return 0
        slopes = (losses[span : lowest + 1] - losses[: lowest + 1 - span]) / np.log(lrs[span] / lrs[0])
        return int(np.argmin(slopes)) + span // 2
    if rule == "minimum":
        target = lrs[int(np.argmin(losses))] / 10
        return int(np.argmin(np.abs(np.log(lrs) - math.log(target))))
    raise ValueError(f"unknown rule {rule!r}: choose one of {RULES}")


def _cycle(loader: Iterable) -> Iterator:
    """The loader's batches, pass after pass; ends (instead of spinning) when a pass yields nothing."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            return


def lr_range_test(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, start_lr: float = 1e-7,
                  end_lr: float = 10.0, steps: int = 100, beta: float = 0.98, diverge: float = 4.0,
                  rule: str = "valley", loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                  device: torch.device | None = None) -> RangeTest:
    """Run the learning-rate range test and put everything back; returns a :class:`RangeTest`.

    The first parameter group's rate grows exponentially from ``start_lr`` to ``end_lr`` over ``steps`` batches
    (the loader is repeated if it is shorter); the other groups keep their ratio to it. The test
    stops early once the smoothed loss exceeds ``diverge`` times its lowest value (or is not finite).
    ``loader`` yields ``(x, y)`` or ``(x, y, index)``. Taught in lesson 6."""
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    if steps < 3:
        raise ValueError(f"steps must be at least 3, got {steps}")
    device = device or model_device(model)
    first = optimizer.param_groups[0]["lr"]
    if not first > 0:
        raise ValueError("the optimizer's first group needs a positive rate: the others are set relative to it")
    ratios = tuple(group["lr"] / first for group in optimizer.param_groups)

    # Everything the test changes, saved to be put back (deep copies: the optimizer updates its
    # state tensors in place, and state_dict() returns references to them).
    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    was_training = model.training
    saved_rng = torch.get_rng_state()
    generator = getattr(loader, "generator", None)
    saved_generator = generator.get_state() if isinstance(generator, torch.Generator) else None

    lrs, raw, smoothed = [], [], []
    avg, best, stopped_early = 0.0, math.inf, False
    factor = (end_lr / start_lr) ** (1 / (steps - 1))
    try:
        model.train()
        batches = _cycle(loader)
        for step in range(steps):
            batch = next(batches, None)
            if batch is None:
                break
            lr = start_lr * factor**step
            for group, ratio in zip(optimizer.param_groups, ratios):
                group["lr"] = lr * ratio
            x, y = batch[0].to(device), batch[1].to(device)
            value = train_step(model, optimizer, x, y, loss_fn)[0].item()
            avg = beta * avg + (1 - beta) * value
            current = avg / (1 - beta ** (step + 1))
            lrs.append(lr)
            raw.append(value)
            smoothed.append(current)
            if not math.isfinite(current) or (step > 0 and current > diverge * best):
                stopped_early = True
                break
            best = min(best, current)
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
        model.train(was_training)
        torch.set_rng_state(saved_rng)
        if saved_generator is not None:
            generator.set_state(saved_generator)
    if len(lrs) < 3:
        raise DataError(f"the range test ran only {len(lrs)} batch(es): give it a loader with training batches "
                        "and at least 3 steps before the loss blows up (a smaller start_lr helps)")
    lrs_, losses_ = np.asarray(lrs), np.asarray(smoothed)
    usable = slice(0, len(lrs_) - 1 if stopped_early else len(lrs_))  # the blow-up itself is no candidate
    index = suggestion_index(lrs_[usable], losses_[usable], rule)
    return RangeTest(lrs=lrs_, losses=losses_, raw_losses=np.asarray(raw), ratios=ratios,
                     suggestion=float(lrs_[index]), rule=rule, stopped_early=stopped_early)
