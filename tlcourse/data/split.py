"""Splitting: a seeded, stratified train/validation/test split, and a per-class subset for quick runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import DataError


@dataclass(frozen=True)
class Split:
    """Row indices of the train, validation and test parts of a table."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def stratified_split(labels: Sequence[int] | np.ndarray, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                     seed: int = 0, class_names: Sequence[str] | None = None) -> Split:
    """Split indices into disjoint train/val/test parts, keeping each class's share, from a seed: each
    class is shuffled with ``numpy.random.default_rng(seed)`` and cut at ``round(n * val)`` and
    ``round(n * test)``, the same on every machine. Taught in lesson 1."""
    labels = np.asarray(labels)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        n_val = max(1, round(len(idx) * fractions[1])) if fractions[1] > 0 else 0
        n_test = max(1, round(len(idx) * fractions[2])) if fractions[2] > 0 else 0
        if len(idx) - n_val - n_test < 1:
            name = class_names[label] if class_names is not None else label
            raise DataError(f"Class {name!r} has only {len(idx)} image(s): too few for a {fractions} "
                            f"train/val/test split (it needs at least {n_val + n_test + 1}; aim for 20 or more). "
                            "Add images to that class folder.")
        idx = rng.permutation(idx)
        parts["val"].append(idx[:n_val])
        parts["test"].append(idx[n_val : n_val + n_test])
        parts["train"].append(idx[n_val + n_test :])
    return Split(*(np.sort(np.concatenate(parts[k])) for k in ("train", "val", "test")))


def subset_per_class(table: pd.DataFrame, n: int | None, seed: int = 0) -> pd.DataFrame:
    """At most ``n`` rows per class, chosen with a seed (``None``: the whole table). Used by smoke mode."""
    if n is None:
        return table
    parts = [
        group.sample(n=min(n, len(group)), random_state=seed) for _, group in table.groupby("label", sort=True)
    ]
    return pd.concat(parts).sort_index().reset_index(drop=True)
