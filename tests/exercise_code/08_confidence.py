"""Variants of lesson 8's coding exercise (see tests/test_exercises.py)."""

CODE = {
    "find_temperature": {
        "checker": "tlcourse.checkers.calibration:check_find_temperature",
        "function": "find_temperature",
        # A grid of temperatures, then a finer grid around the best: no optimizer (the solution uses LBFGS).
        "correct": '''
import numpy as np
import torch
import torch.nn.functional as F


def find_temperature(logits, labels):
    def loss(t):
        return F.cross_entropy(logits.double() / t, labels).item()

    grid = np.geomspace(0.05, 20, 400)
    best = grid[np.argmin([loss(t) for t in grid])]
    fine = np.linspace(best * 0.97, best * 1.03, 601)
    return float(fine[np.argmin([loss(t) for t in fine])])
''',
        # Multiplies the logits by T: the best such T is 1 / the right one.
        "wrong": '''
import torch
import torch.nn.functional as F


def find_temperature(logits, labels):
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits * log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return log_t.detach().exp().item()
''',
        "hint": "divide the logits by T",
        "stub": '''
def find_temperature(logits, labels):
    ...  # your code here
''',
    },
}
