"""Evaluation: accuracy, confusion matrix and per-class accuracy against hand-computed values;
predictions with probabilities against softmax of the logits."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tlcourse.evaluation import accuracy, confusion_frame, confusion_matrix, per_class_accuracy, predict

# A small case worked out by hand (3 classes):
#   true: 0 0 0 1 1 2 2 2 2 0
#   pred: 0 1 0 1 2 2 2 0 2 0
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0]
Y_PRED = [0, 1, 0, 1, 2, 2, 2, 0, 2, 0]
# Right: positions 0, 2, 3, 5, 6, 8, 9 -> 7 of 10.
HAND_ACCURACY = 0.7
# Rows true, columns predicted:
#   class 0 (4 examples): 3 -> 0, 1 -> 1
#   class 1 (2 examples): 1 -> 1, 1 -> 2
#   class 2 (4 examples): 1 -> 0, 3 -> 2
HAND_MATRIX = np.array([[3, 1, 0],
                        [0, 1, 1],
                        [1, 0, 3]])
HAND_PER_CLASS = {"cat": 3 / 4, "dog": 1 / 2, "hotdog": 3 / 4}


def test_accuracy_against_hand_values():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(HAND_ACCURACY)
    assert accuracy(np.array([1, 1]), np.array([1, 1])) == 1.0
    assert accuracy([0, 1], [1, 0]) == 0.0


def test_accuracy_rejects_mismatched_or_empty_input():
    with pytest.raises(ValueError):
        accuracy([0, 1, 1], [0, 1])
    with pytest.raises(ValueError):
        accuracy([], [])


def test_confusion_matrix_against_hand_values():
    matrix = confusion_matrix(Y_TRUE, Y_PRED, 3)
    np.testing.assert_array_equal(matrix, HAND_MATRIX)
    assert matrix.sum() == len(Y_TRUE)
    assert np.trace(matrix) / matrix.sum() == pytest.approx(HAND_ACCURACY)


def test_confusion_matrix_keeps_classes_that_never_occur():
    matrix = confusion_matrix([0, 0], [0, 0], 3)
    np.testing.assert_array_equal(matrix, [[2, 0, 0], [0, 0, 0], [0, 0, 0]])


def test_per_class_accuracy_against_hand_values():
    result = per_class_accuracy(Y_TRUE, Y_PRED, ["cat", "dog", "hotdog"])
    assert list(result) == ["cat", "dog", "hotdog"]
    assert result == pytest.approx(HAND_PER_CLASS)


def test_per_class_accuracy_of_an_absent_class_is_nan():
    result = per_class_accuracy([0, 0, 1], [0, 1, 1], ["a", "b", "c"])
    assert result["a"] == 0.5 and result["b"] == 1.0 and math.isnan(result["c"])


def test_confusion_frame_is_labelled():
    frame = confusion_frame(Y_TRUE, Y_PRED, ["cat", "dog", "hotdog"])
    assert list(frame.index) == ["cat", "dog", "hotdog"] and list(frame.columns) == ["cat", "dog", "hotdog"]
    assert frame.index.name == "true" and frame.columns.name == "predicted"
    assert frame.loc["hotdog", "cat"] == 1 and frame.loc["cat", "dog"] == 1
    np.testing.assert_array_equal(frame.to_numpy(), HAND_MATRIX)


# --------------------------------------------------------------------------- predict
def model_and_loader(batch_size: int = 4, with_index: bool = False):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    x = torch.randn(11, 6)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1])
    tensors = (x, y, torch.arange(11)) if with_index else (x, y)
    return model, x, y, DataLoader(TensorDataset(*tensors), batch_size=batch_size)


@pytest.mark.parametrize("with_index", [False, True])
def test_predict_probabilities_are_softmax_of_the_logits(with_index):
    model, x, y, loader = model_and_loader(with_index=with_index)
    model.train()
    frame = predict(model, loader)
    assert model.training  # mode restored
    assert list(frame.columns) == ["label", "pred", "prob_0", "prob_1", "prob_2", "confidence"]
    assert len(frame) == 11
    model.eval()  # the reference: eval mode (dropout off), softmax over the class dimension
    with torch.no_grad():
        expected = torch.softmax(model(x), dim=1).numpy()
    probs = frame[["prob_0", "prob_1", "prob_2"]].to_numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(frame["label"], y.numpy())  # rows in loader order
    np.testing.assert_array_equal(frame["pred"], expected.argmax(1))
    np.testing.assert_allclose(frame["confidence"], expected.max(1), rtol=1e-6)
    assert accuracy(frame["label"], frame["pred"]) == pytest.approx((expected.argmax(1) == y.numpy()).mean())


def test_predict_is_deterministic_and_independent_of_batch_size():
    model, _, _, loader = model_and_loader(batch_size=4)
    _, _, _, other = model_and_loader(batch_size=5)
    a, b = predict(model, loader), predict(model, other)
    pd.testing.assert_frame_equal(a, predict(model, loader))
    pd.testing.assert_frame_equal(a, b, rtol=1e-5)
