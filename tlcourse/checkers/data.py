"""Checker for lesson 1's coding exercise: a seeded, stratified train/validation/test split."""

from __future__ import annotations

from typing import Callable

import numpy as np

from tlcourse.data import stratified_split as reference
from tlcourse.exercises import attempt


def _parts(result: object) -> list[np.ndarray]:
    assert isinstance(result, (tuple, list)) and len(result) == 3, \
        f"your function returned {type(result).__name__}: return three arrays of row indices, (train, val, test)."
    parts = [np.asarray(part) for part in result]
    assert all(p.ndim == 1 and (p.size == 0 or np.issubdtype(p.dtype, np.integer)) for p in parts), \
        "each of train, val and test should be a 1-D array (or list) of integer row indices."
    return parts


def check_stratified_split(my_stratified_split: Callable) -> str:
    """Call ``my_stratified_split(labels, fractions, seed)`` on fresh, unbalanced labels of 3-5 classes and
    compare it with :func:`tlcourse.data.stratified_split`: the same number of each class in each part
    (give or take one photo), disjoint parts that cover every row, the same split for the same seed and
    another for another seed. Used in lesson 1."""
    rng = np.random.default_rng()
    for trial in range(3):
        k = int(rng.integers(3, 6))
        sizes = rng.integers(20, 90, size=k)
        labels = rng.permutation(np.repeat(np.arange(k), sizes))  # classes mixed, not sorted
        fractions = ((0.7, 0.15, 0.15), (0.8, 0.1, 0.1), (0.6, 0.2, 0.2))[trial]
        seed = int(rng.integers(0, 1000))
        train, val, test = _parts(attempt(my_stratified_split, labels, fractions, seed))
        every = np.concatenate([train, val, test])
        assert len(np.unique(every)) == len(every), "a row is in two parts (or twice in one): the parts must be disjoint."
        assert set(every.tolist()) == set(range(len(labels))), \
            f"the three parts should hold every row 0..{len(labels) - 1} exactly once; some are missing or out of range."
        expected = reference(labels, fractions, seed)
        for name, ours, theirs in (("val", val, expected.val), ("test", test, expected.test)):
            for c in range(k):
                got, want, n = int((labels[ours] == c).sum()), int((labels[theirs] == c).sum()), int(sizes[c])
                assert abs(got - want) <= 1, (
                    f"class {c} has {n} rows, and {got} of them are in {name}; {fractions[('val', 'test').index(name) + 1]:.0%} "
                    f"of {n} is about {want}. Split each class separately (that is what stratified means).")
        again = _parts(attempt(my_stratified_split, labels, fractions, seed))
        assert all(np.array_equal(np.sort(a), np.sort(b)) for a, b in zip((train, val, test), again)), \
            "the same seed gave two different splits: make every random choice from np.random.default_rng(seed)."
        other = _parts(attempt(my_stratified_split, labels, fractions, seed + 1))
        assert not np.array_equal(np.sort(val), np.sort(other[1])), \
            "seeds differ, yet the validation rows are the same: shuffle each class's rows with the seeded generator."
    return f"Correct: disjoint, stratified and seeded, on {len(labels)} labels of {k} classes (and two other label sets)."
