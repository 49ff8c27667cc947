"""Evaluation: predictions with probabilities, accuracy, per-class accuracy and the confusion matrix."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .models import eval_mode


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable, device: torch.device | None = None) -> pd.DataFrame:
    """Run ``model`` over ``loader`` (eval mode, no gradients): one row per example, in loader order,
    with ``label``, ``pred``, ``prob_<k>`` per class (softmax of the logits) and ``confidence``.
    """
    device = device or next(model.parameters()).device
    labels, probs = [], []
    with eval_mode(model):
        for batch in loader:  # (x, y) or (x, y, index)
            probs.append(torch.softmax(model(batch[0].to(device)), dim=1).cpu())
            labels.append(torch.as_tensor(batch[1]))
    prob = torch.cat(probs).numpy()
    frame = pd.DataFrame(prob, columns=[f"prob_{k}" for k in range(prob.shape[1])])
    frame.insert(0, "pred", prob.argmax(1))
    frame.insert(0, "label", torch.cat(labels).numpy())
    frame["confidence"] = prob.max(1)
    return frame


def accuracy(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    """Fraction of predictions equal to the true labels."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) != len(y_pred) or len(y_true) == 0:
        raise ValueError(f"need two equal, non-empty label arrays, got {len(y_true)} and {len(y_pred)}")
    return float((y_true == y_pred).mean())


def confusion_matrix(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                     n_classes: int) -> np.ndarray:
    """``n_classes x n_classes`` counts: row = true class, column = predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def per_class_accuracy(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                       class_names: Sequence[str]) -> dict[str, float]:
    """Accuracy within each class (recall), keyed by class name; NaN for a class with no examples."""
    matrix = confusion_matrix(y_true, y_pred, len(class_names))
    totals = matrix.sum(1)
    return {name: (float(matrix[k, k] / totals[k]) if totals[k] else float("nan"))
            for k, name in enumerate(class_names)}


def confusion_frame(y_true, y_pred, class_names: Sequence[str]) -> pd.DataFrame:
    """The confusion matrix as a labelled table (rows: true, columns: predicted)."""
    matrix = confusion_matrix(y_true, y_pred, len(class_names))
    return pd.DataFrame(matrix, index=pd.Index(class_names, name="true"),
                        columns=pd.Index(class_names, name="predicted"))
