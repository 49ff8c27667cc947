"""Checker of lesson 8's coding exercise: fitting the temperature of temperature scaling."""

from __future__ import annotations

import math
import numbers
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..calibration import fit_temperature
from ..exercises import attempt

#: Fresh problems: (photos, classes, the temperature the labels are drawn with).
PROBLEMS = ((400, 2, 2.5), (300, 4, 0.6))


def _temperature(value: object) -> float:
    """The learner's answer as a positive float, or an AssertionError saying what to return."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 or isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    assert isinstance(value, numbers.Real) and not isinstance(value, bool), \
        f"find_temperature should return one number, T; it returned {type(value).__name__} {value!r}."
    value = float(value)
    assert math.isfinite(value) and value > 0, f"T must be a positive number; your function returned {value}."
    return value


def check_find_temperature(find_temperature: Callable) -> str:
    """Call ``find_temperature(logits, labels)`` on fresh random logits whose labels include mistakes and
    compare T with :func:`tlcourse.calibration.fit_temperature` (within 1 %, or a loss as low)."""
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence().entropy % 2**62))  # new every run
    found = []
    for n, k, drawn_with in PROBLEMS:
        logits = torch.randn(n, k, generator=generator) * 3
        labels = torch.multinomial(torch.softmax(logits / drawn_with, 1), 1, generator=generator).squeeze(1)
        expected = fit_temperature(logits, labels)
        got = _temperature(attempt(find_temperature, logits.clone(), labels.clone()))

        def loss(t: float) -> float:
            return F.cross_entropy(logits.double() / t, labels).item()

        if abs(got - expected) <= 0.01 * expected or loss(got) <= loss(expected) + 1e-9:
            found.append(got)
            continue
        assert abs(1 / got - expected) > 0.01 * expected, (
            f"your T = {got:.3f} is 1 / {1 / got:.3f}: divide the logits by T (softmax(logits / T)), "
            "do not multiply them.")
        raise AssertionError(
            f"on {n} photos of {k} classes your T = {got:.3f} gives a cross-entropy of {loss(got):.4f}, but "
            f"T = {expected:.3f} gives {loss(expected):.4f}. Minimise the cross-entropy of softmax(logits / T) "
            "on the labels given, over T > 0 only.")
    return (f"Correct: T = {found[0]:.2f} and {found[1]:.2f} on two fresh sets of logits, as the package's "
            "fit_temperature finds.")
