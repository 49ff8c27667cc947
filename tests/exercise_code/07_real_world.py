"""Variants of lesson 7's coding exercise (see tests/test_exercises.py)."""

CODE = {
    "mean_recall": {
        "checker": "tlcourse.checkers.fieldtest:check_mean_recall",
        "function": "mean_recall",
        # With a confusion matrix and plain Python lists (the solution uses one boolean mask per class).
        "correct": '''
def mean_recall(y_true, y_pred, n_classes):
    right, photos = [0] * n_classes, [0] * n_classes
    for t, p in zip(y_true, y_pred):
        photos[t] += 1
        right[t] += int(t == p)
    recalls = [r / n for r, n in zip(right, photos) if n]
    return sum(recalls) / len(recalls)
''',
        # The plain accuracy: the large class counts most.
        "wrong": '''
import numpy as np


def mean_recall(y_true, y_pred, n_classes):
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))
''',
        "hint": "plain accuracy",
        "stub": '''
def mean_recall(y_true, y_pred, n_classes):
    ...  # your code here
''',
    },
}
