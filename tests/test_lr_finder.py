"""The learning-rate range test and per-batch schedules through fit.

* Nothing the range test trains survives: weights, BatchNorm buffers, optimizer state and rates,
  train/eval mode, the random number generator and the loader's shuffling are exactly as before.
* Its rates grow geometrically (numpy's geomspace as reference) and keep the groups' ratio.
* On a synthetic problem its suggestion is within a factor of 3 of the best constant rate found by
  brute force (a grid of full training runs).
* fit steps a scheduler once per batch: the rates it records equal those of the same torch
  scheduler stepped by hand.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tlcourse.features import using_threads
from tlcourse.lr_finder import lr_range_test, suggestion_index
from tlcourse.training import fit


def _loader(x, y, batch_size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                                       generator=generator)


class Net(nn.Module):
    """A head with BatchNorm (buffers) and dropout (random numbers): everything a restore must cover."""

    def __init__(self, d=8, k=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3))
        self.head = nn.Linear(16, k)

    def forward(self, x):
        return self.head(self.body(x))


def _same(a, b) -> bool:
    """Deep equality of (nested) state dicts, tensors compared exactly."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_range_test_restores_model_optimizer_mode_and_random_state_exactly():
    torch.manual_seed(0)
    x, y = torch.randn(96, 8), torch.randint(0, 3, (96,))
    model = Net()
    optimizer = torch.optim.AdamW([{"params": model.head.parameters(), "lr": 1e-3, "name": "head"},
                                   {"params": model.body.parameters(), "lr": 1e-4, "name": "body"}])
    loader = _loader(x, y)
    fit(model, loader, optimizer, epochs=1)  # the optimizer now has state (moments, step counts) to restore
    model.eval()
    before_model, before_optimizer = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    before_rng, before_shuffle = torch.get_rng_state(), loader.generator.get_state()

    seen_weights = []
    hook = model.head.register_forward_pre_hook(lambda m, args: seen_weights.append(m.weight.detach().clone()))
    result = lr_range_test(model, loader, optimizer, start_lr=1e-5, end_lr=1.0, steps=12)
    hook.remove()

    # The test did train (otherwise restoring would prove nothing)...
    assert len(seen_weights) == 12 and not torch.equal(seen_weights[0], seen_weights[-1])
    assert not torch.equal(seen_weights[-1], before_model["head.weight"])
    # ...and everything is back, bit for bit.
    assert _same(model.state_dict(), before_model)
    assert _same(optimizer.state_dict(), before_optimizer)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-4]
    assert not model.training
    assert torch.equal(torch.get_rng_state(), before_rng)
    assert torch.equal(loader.generator.get_state(), before_shuffle)
    assert len(result.lrs) == 12


def test_rates_grow_geometrically_and_keep_the_groups_ratio():
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    model = Net()
    optimizer = torch.optim.SGD([{"params": model.head.parameters(), "lr": 0.5},
                                 {"params": model.body.parameters(), "lr": 0.05}])
    used = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: used.append([g["lr"] for g in opt.param_groups]))
    result = lr_range_test(model, _loader(x, y, batch_size=16), optimizer, start_lr=1e-6, end_lr=1e-2, steps=10,
                           diverge=float("inf"))
    expected = np.geomspace(1e-6, 1e-2, 10)
    np.testing.assert_allclose([u[0] for u in used], expected, rtol=1e-12)
    np.testing.assert_allclose([u[1] for u in used], expected * 0.1, rtol=1e-12)
    np.testing.assert_allclose(result.lrs, expected, rtol=1e-12)  # 10 steps over 4 batches: the loader repeats
    assert result.ratios == pytest.approx((1.0, 0.1))
    assert result.rates(1e-3) == pytest.approx([1e-3, 1e-4])


def _debiased_average(losses, beta):
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return np.asarray(out)


def test_smoothing_is_the_debiased_moving_average():
    beta = 0.9  # by hand: avg 0.2, 0.28, 0.652; debiased by 0.1, 0.19, 0.271
    np.testing.assert_allclose(_debiased_average([2.0, 1.0, 4.0], beta), [2.0, 0.28 / 0.19, 0.652 / 0.271])
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    model = Net()
    result = lr_range_test(model, _loader(x, y, batch_size=16), torch.optim.SGD(model.parameters(), lr=0.1),
                           steps=10, beta=beta, diverge=float("inf"))
    np.testing.assert_allclose(result.losses, _debiased_average(result.raw_losses, beta), rtol=1e-12)
    assert np.ptp(result.raw_losses) > 0  # the losses differ, so the average is not trivially equal


def test_valley_rule_on_a_hand_made_curve():
    # Flat, then falling for 10 points (indices 5..14), then blowing up. The longest falling run ends at
    # index 14 and is 11 points long counting the last flat one (index 4), so fastai's start is 14 - 11 = 3;
    # a third plus a sixth of 11 points in: 3 + int(11/3) + int(11/6) = 3 + 3 + 1 = 7.
    losses = np.array([1.0] * 5 + list(np.linspace(0.95, 0.5, 10)) + [0.8, 2.0, 5.0])
    lrs = np.geomspace(1e-5, 1.0, len(losses))
    assert suggestion_index(lrs, losses, "valley") == 7
    # "minimum": a tenth of the rate at the lowest loss (index 14). The 18 rates are 10^(5/17) apart, so
    # a factor 10 lower is 17/5 = 3.4 steps down: index 10.6, and the nearest rate on the grid is index 11.
    assert suggestion_index(lrs, losses, "minimum") == 11
    with pytest.raises(ValueError, match="unknown rule"):
        suggestion_index(lrs, losses, "best")


def _blobs(seed: int, n: int = 1024, d: int = 32, k: int = 3, noise: float = 2.0):
    """Gaussian classes with overlapping clouds: training and validation drawn from the same classes."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g)

    def draw():
        y = torch.randint(0, k, (n,), generator=g)
        return centres[y] + torch.randn(n, d, generator=g) * noise, y

    return draw(), draw()


def _best_rate_by_grid(seed, x, y, xv, yv) -> float:
    """The reference: train a fresh model for one epoch at each rate of a fine grid; best validation loss."""
    grid, losses = 10 ** np.arange(-5, 1.01, 0.125), []
    batches = [(x[rows], y[rows]) for rows in torch.randperm(len(x), generator=torch.Generator().manual_seed(1)).split(32)]
    for lr in grid:
        torch.manual_seed(seed)
        model = nn.Linear(x.shape[1], 3)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        for xb, yb in batches:
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            losses.append(F.cross_entropy(model(xv), yv).item())
    return float(grid[int(np.argmin(losses))])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_suggestion_is_within_a_factor_of_three_of_the_best_rate(seed):
    (x, y), (xv, yv) = _blobs(seed)
    with using_threads(1):  # tiny matrices: more threads only wait for each other
        best = _best_rate_by_grid(seed, x, y, xv, yv)
        torch.manual_seed(seed)
        model = nn.Linear(x.shape[1], 3)
        result = lr_range_test(model, _loader(x, y), torch.optim.AdamW(model.parameters(), lr=1e-3),
                               start_lr=1e-6, end_lr=100.0, steps=100)
    for rule in ("valley", "steepest"):
        suggested = result.suggestion if rule == "valley" else result.suggest(rule)
        assert best / 3 <= suggested <= best * 3, f"{rule}: suggested {suggested:.3g}, best by grid {best:.3g}"


def test_fit_steps_the_scheduler_once_per_batch_and_records_the_rates():
    torch.manual_seed(0)
    x, y = torch.randn(40, 8), torch.randint(0, 3, (40,))
    model, epochs, loader = Net(), 3, _loader(x, y, batch_size=10)  # 4 batches an epoch
    groups = lambda: [{"params": model.head.parameters(), "lr": 1e-2, "name": "head"},  # noqa: E731
                      {"params": model.body.parameters(), "lr": 1e-3, "name": "body"}]
    optimizer = torch.optim.AdamW(groups())
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[1e-2, 1e-3], total_steps=epochs * 4)
    history = fit(model, loader, optimizer, epochs, scheduler=scheduler)

    # Reference: the same torch scheduler on a fresh optimizer, stepped by hand once per batch.
    reference_optimizer = torch.optim.SGD(groups())
    reference = torch.optim.lr_scheduler.OneCycleLR(reference_optimizer, max_lr=[1e-2, 1e-3], total_steps=epochs * 4)
    expected = []
    for _ in range(epochs * 4):
        expected.append([g["lr"] for g in reference_optimizer.param_groups])
        reference_optimizer.step()
        reference.step()
    assert len(history.batches) == epochs * 4
    np.testing.assert_allclose([b["lr"] for b in history.batches], [e[0] for e in expected], rtol=1e-12)
    np.testing.assert_allclose([b["lr_head"] for b in history.batches], [e[0] for e in expected], rtol=1e-12)
    np.testing.assert_allclose([b["lr_body"] for b in history.batches], [e[1] for e in expected], rtol=1e-12)
    assert scheduler.last_epoch == epochs * 4  # stepped once per batch, not per epoch


def test_without_a_scheduler_the_rate_is_recorded_and_constant():
    torch.manual_seed(0)
    model = Net()
    history = fit(model, _loader(torch.randn(32, 8), torch.randint(0, 3, (32,)), batch_size=8),
                  torch.optim.SGD(model.parameters(), lr=0.03), epochs=2)
    assert [b["lr"] for b in history.batches] == [0.03] * 8


def test_range_test_on_an_empty_loader_stops_with_a_clear_error():
    # An empty (or already used-up) loader must end the search, not cycle over nothing forever.
    from tlcourse.errors import DataError

    model = nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(DataError, match="ran only 0 batch"):
        lr_range_test(model, [], optimizer, start_lr=1e-5, end_lr=1.0, steps=12)
    exhausted = iter([(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))] * 3)
    list(exhausted)
    with pytest.raises(DataError, match="ran only 0 batch"):
        lr_range_test(model, exhausted, optimizer, start_lr=1e-5, end_lr=1.0, steps=12)
