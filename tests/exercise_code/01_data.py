"""Variants of lesson 1's coding exercise (see the comment above CODE_RUN in tests/test_exercises.py)."""

CODE = {
    "my_stratified_split": {
        "checker": "tlcourse.checkers.data:check_stratified_split",
        "function": "my_stratified_split",
        # Another correct way: shuffle the class's positions in place, then np.split at the two cut points.
        "correct": '''
import numpy as np

def my_stratified_split(labels, fractions=(0.8, 0.1, 0.1), seed=0):
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for c in sorted(set(labels.tolist())):
        rows = np.where(labels == c)[0]
        rng.shuffle(rows)
        n_val, n_test = int(len(rows) * fractions[1] + 0.5), int(len(rows) * fractions[2] + 0.5)
        v, t, rest = np.split(rows, [n_val, n_val + n_test])
        val += v.tolist(); test += t.tolist(); train += rest.tolist()
    return train, val, test
''',
        # The typical mistake: one shuffle of all rows, cut once; each class's share is left to chance.
        "wrong": '''
import numpy as np

def my_stratified_split(labels, fractions=(0.8, 0.1, 0.1), seed=0):
    rows = np.random.default_rng(seed).permutation(len(labels))
    n_val, n_test = round(len(rows) * fractions[1]), round(len(rows) * fractions[2])
    return rows[n_val + n_test:], rows[:n_val], rows[n_val:n_val + n_test]
''',
        "hint": "each class separately",
        "stub": '''
def my_stratified_split(labels, fractions=(0.8, 0.1, 0.1), seed=0):
    """Row indices (train, val, test): each class split in these fractions, shuffled with the seed."""
    ...  # your code here
''',
    },
}
