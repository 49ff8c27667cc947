"""Variants of lesson 5's coding exercise (see the comment above CODE_RUN in tests/test_exercises.py)."""

CODE = {
    "confusion_counts": {
        "checker": "tlcourse.checkers.evaluation:check_confusion_counts",
        "function": "confusion_counts",
        # One bincount over the pairs (true, predicted), numbered true * n_classes + predicted: no loop.
        "correct": '''import numpy as np

def confusion_counts(labels, preds, n_classes):
    pairs = np.asarray(labels) * n_classes + np.asarray(preds)
    return np.bincount(pairs, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
''',
        # The typical mistake: the prediction as the row.
        "wrong": '''import numpy as np

def confusion_counts(labels, preds, n_classes):
    table = np.zeros((n_classes, n_classes), dtype=int)
    for true, predicted in zip(labels, preds):
        table[predicted, true] += 1
    return table
''',
        "hint": "rows should be the true class",
        "stub": '''def confusion_counts(labels, preds, n_classes):
    """The confusion matrix: table[t, p] = how many photos of true class t were predicted as class p."""
    ...  # your code here
''',
    },
}
