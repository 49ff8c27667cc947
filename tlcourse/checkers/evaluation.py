"""Checker for lesson 5's coding exercise: the confusion matrix, counted by the learner.

The reference is the package's tested :func:`tlcourse.evaluation.confusion_matrix`; the inputs are fresh
random labels and predictions with 2 to 5 classes, among them a class with no photos.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from tlcourse.evaluation import confusion_matrix
from tlcourse.exercises import attempt


def _cases(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, int, str]]:
    """(labels, predictions, number of classes, what is special about the case)."""
    cases = [(np.array([0, 0, 0, 1, 1]), np.array([0, 0, 1, 1, 0]), 2, "5 photos of 2 classes")]
    labels = rng.choice([0, 2], size=30)  # class 1 has no photos, but some are predicted as class 1
    cases.append((labels, rng.integers(0, 3, size=30), 3, "3 classes, the middle one with no photos"))
    labels, preds = rng.integers(0, 3, size=40), rng.integers(0, 3, size=40)  # class 3: no photo, no prediction
    cases.append((labels, preds, 4, "4 classes, the last one neither true nor predicted"))
    labels = rng.integers(0, 5, size=80)
    preds = np.where(rng.random(80) < 0.7, labels, rng.integers(0, 5, size=80))  # mostly right, like a model
    cases.append((labels, preds, 5, "80 photos of 5 classes"))
    return cases


def check_confusion_counts(confusion_counts: Callable[[np.ndarray, np.ndarray, int], object]) -> str:
    """Check ``confusion_counts(labels, preds, n_classes)`` against the package's confusion matrix."""
    for labels, preds, k, case in _cases(np.random.default_rng()):
        got = attempt(confusion_counts, labels.copy(), preds.copy(), k)
        try:
            table = np.asarray(got)
        except (TypeError, ValueError):
            table = np.asarray(None)
        assert table.ndim == 2 and table.dtype.kind in "iuf", (
            f"confusion_counts should return a table of counts (a NumPy array, or a list of lists), "
            f"one row per class; for {case} it returned {type(got).__name__} {got!r:.80}.")
        assert table.shape == (k, k), (
            f"the table should be n_classes x n_classes ({k} x {k} for {case}), also when a class has no "
            f"photos; yours is {table.shape[0]} x {table.shape[1]}. Use n_classes, not the largest label.")
        expected = confusion_matrix(labels, preds, k)
        if np.array_equal(table, expected):
            continue
        assert not np.array_equal(table, expected.T), (
            "rows should be the true class, columns the prediction: yours is the other way round "
            "(table[true, predicted] counts the photos of class `true` called `predicted`).")
        assert table.sum() == len(labels), (
            f"each photo counts once, so the counts should add up to the number of photos: "
            f"{len(labels)} for {case}; yours add up to {table.sum():g}.")
        i, j = np.argwhere(table != expected)[0]
        raise AssertionError(f"for {case}, row {i} (true class {i}), column {j} (predicted {j}) should count "
                             f"{expected[i, j]} photo(s); yours says {table[i, j]:g}.")
    return ("Correct: your table matches on fresh labels and predictions with 2 to 5 classes, "
            "also when a class has no photos.")
