"""Checker for lesson 4's coding exercise: a learning rate per backbone block (layer-wise decay)."""

from __future__ import annotations

import random
from typing import Callable

import torch

from tlcourse.exercises import attempt
from tlcourse.models import build_model


def expected_rates(model: torch.nn.Module, head_lr: float, decay: float) -> dict[str, float]:
    """name -> rate of each parameter that learns: the head at ``head_lr``, block ``i`` of the backbone's
    ``features`` (``n`` blocks) at ``head_lr * decay ** (n - i)``."""
    n, rates = len(model.backbone.features), {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("head."):
            rates[name] = head_lr
        else:
            block = int(name.split(".")[2])  # backbone.features.<block>....
            rates[name] = head_lr * decay ** (n - block)
    return rates


def check_layerwise_groups(layerwise_groups: Callable) -> str:
    """Call ``layerwise_groups(model, head_lr, decay)`` on a fresh unfrozen MobileNetV2 model (random
    weights, 3-5 classes, its first block frozen) with a fresh rate and decay; every parameter that learns
    must be in exactly one group, at the rate of :func:`expected_rates`, and AdamW must accept the groups.
    Used in lesson 4."""
    model = build_model(random.randint(3, 5), "mobilenet_v2", weights=None).unfreeze(update_batchnorm=False)
    model.backbone.features[0].requires_grad_(False)  # a frozen block: its parameters belong in no group
    head_lr, decay = 10 ** random.uniform(-4, -2), random.uniform(0.3, 0.8)
    groups = attempt(layerwise_groups, model, head_lr, decay)
    assert isinstance(groups, (list, tuple)) and all(isinstance(g, dict) and "params" in g and "lr" in g for g in groups), \
        "return a list of parameter groups: dicts, each with 'params' (a list of parameters) and 'lr'."
    names = {id(p): name for name, p in model.named_parameters()}
    rates: dict[str, float] = {}
    for group in groups:
        params = group["params"]
        assert isinstance(params, (list, tuple)), "each group's 'params' should be a list of parameters (not a generator)."
        for p in params:
            assert id(p) in names, "a group holds something that is not one of this model's parameters."
            assert names[id(p)] not in rates, f"{names[id(p)]} is in two groups: each parameter belongs in exactly one."
            rates[names[id(p)]] = float(group["lr"])
    want = expected_rates(model, head_lr, decay)
    frozen = sorted(set(rates) - set(want))
    assert not frozen, f"{frozen[0]} does not learn (requires_grad is False): leave it out, as param_groups does."
    missing = sorted(set(want) - set(rates), key=list(want).index)
    assert not missing, f"{missing[0]} is in no group, so it would not learn."
    n = len(model.backbone.features)
    for name, rate in rates.items():
        if abs(rate - want[name]) > 1e-9 * want[name]:
            if name.startswith("backbone."):
                block = int(name.split(".")[2])
                swapped = head_lr * decay ** (block + 1)
                assert abs(rate - swapped) > 1e-9 * swapped, (
                    "the rates go the wrong way: block 0, nearest the photo, holds the most general features "
                    "and should learn slowest; the last block fastest, after the head.")
                raise AssertionError(f"{name} (block {block} of {n}) has lr {rate:.3g}; head_lr * decay ** ({n} - {block}) "
                                     f"is {want[name]:.3g}.")
            raise AssertionError(f"{name} (the head) has lr {rate:.3g}; the head learns at head_lr, {head_lr:.3g}.")
    torch.optim.AdamW(list(groups))  # raises if PyTorch itself would refuse these groups
    return (f"Correct: {len(want)} parameters in {len(groups)} groups, from {want['head.2.weight']:.2g} (the head) "
            f"down to {min(want.values()):.2g} (block 1).")
