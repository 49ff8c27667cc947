"""Checker of lesson 7's coding exercise: the balanced accuracy, the mean of the recalls of the classes."""

from __future__ import annotations

import math
import numbers
from typing import Callable

import numpy as np
import torch

from ..evaluation import balanced_accuracy, recall_table
from ..exercises import attempt


def _problem(rng: np.random.Generator, sizes: list[int], right: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Labels with ``sizes[c]`` photos of class c, each called right with probability ``right[c]``."""
    k = len(sizes)
    y_true = rng.permutation(np.repeat(np.arange(k), sizes))
    wrong = (y_true + rng.integers(1, k, size=len(y_true))) % k  # another class than the true one
    y_pred = np.where(rng.random(len(y_true)) < np.asarray(right)[y_true], y_true, wrong)
    return y_true, y_pred


def _number(value: object) -> float:
    """The learner's answer as a float, or an AssertionError saying what to return."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 or isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    assert isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value), \
        f"mean_recall should return one number between 0 and 1; it returned {type(value).__name__} {value!r}."
    return float(value)


def check_mean_recall(mean_recall: Callable) -> str:
    """Call ``mean_recall(y_true, y_pred, n_classes)`` on fresh, unbalanced labels and compare it with
    :func:`tlcourse.evaluation.balanced_accuracy`."""
    rng = np.random.default_rng()  # new labels every run
    for sizes, right in (([90, 10], [0.95, 0.5]), ([12, 60, 28], [0.4, 0.9, 0.7])):
        y_true, y_pred = _problem(rng, sizes, right)
        while abs((y_true == y_pred).mean() - balanced_accuracy(y_true, y_pred, len(sizes))) < 0.02:
            y_true, y_pred = _problem(rng, sizes, right)  # so that a plain accuracy cannot pass by chance
        expected = balanced_accuracy(y_true, y_pred, len(sizes))
        got = _number(attempt(mean_recall, y_true.copy(), y_pred.copy(), len(sizes)))
        if abs(got - expected) < 1e-6:
            continue
        recalls = ", ".join(f"class {c}: {r.correct:.0f} of {r.n:.0f}"
                            for c, r in recall_table(y_true, y_pred, [str(c) for c in range(len(sizes))]).iterrows())
        assert abs(got - (y_true == y_pred).mean()) > 1e-6, (
            f"{got:.3f} is the plain accuracy, where the large class counts most. Each class should count "
            f"the same: take each class's recall (here {recalls} right), then their mean.")
        assert abs(got - 100 * expected) > 1e-4, f"{got:.1f} looks like a percentage: return a share between 0 and 1."
        precisions = [np.mean(y_true[y_pred == c] == c) for c in range(len(sizes)) if (y_pred == c).any()]
        assert abs(got - np.mean(precisions)) > 1e-6, (
            "a class's recall divides by its photos (y_true == c), not by the photos called that class (y_pred == c).")
        raise AssertionError(f"on {len(y_true)} photos your mean_recall gave {got:.3f}, but the recalls are "
                             f"{recalls} right, and their mean is {expected:.3f}. A class's recall is the share of "
                             "its photos (y_true == c) that were called c.")
    return "Correct: the mean of the recalls, where each class counts the same whatever its number of photos."
