"""Variants of lesson 6's coding exercise (see the comment above CODE_RUN in tests/test_exercises.py)."""

CODE = {
    "cosine_rate": {
        "checker": "tlcourse.checkers.schedules:check_cosine_rate",
        "function": "cosine_rate",
        # The same curve written as cos² of a quarter turn: (1 + cos 2x) / 2 = cos² x.
        "correct": '''import numpy as np

def cosine_rate(step, total_steps, max_lr, min_lr=0.0):
    return min_lr + (max_lr - min_lr) * np.cos(np.pi / 2 * step / total_steps) ** 2
''',
        # The typical off-by-one: counting total_steps - 1 steps, so min_lr comes one step early.
        "wrong": '''import math

def cosine_rate(step, total_steps, max_lr, min_lr=0.0):
    return min_lr + (max_lr - min_lr) * (1 + math.cos(math.pi * step / (total_steps - 1))) / 2
''',
        "hint": "last step",
        "stub": '''def cosine_rate(step, total_steps, max_lr, min_lr=0.0):
    """The learning rate at batch `step` (0 to total_steps) of a cosine schedule from max_lr to min_lr."""
    ...  # your code here
''',
    },
}
