"""Evaluation: predictions with probabilities, accuracy, per-class accuracy and the confusion matrix,
accuracy with its 95 % interval, and the lessons' check that a model learnt the task."""

from __future__ import annotations

import math
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


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion ``correct / n`` (``z=1.96``: 95 %).

    Unlike the normal approximation ``p +- z*sqrt(p(1-p)/n)``, it stays inside [0, 1] and is
    not empty at 0 or ``n`` correct: 144 of 144 gives about (0.974, 1.0), not (1.0, 1.0).
    """
    if n <= 0 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n and n > 0, got correct={correct}, n={n}")
    p = correct / n
    denominator = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denominator
    # At 0 or n correct the exact end is 0 or 1; centre +- half lands a rounding error short of it,
    # and an interval that misses its own point estimate breaks error bars drawn from it.
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    return low, high


def is_course_example(table: pd.DataFrame) -> bool:
    """True when every photo of a labels table is one of the course's example photos (dog/hotdog).

    Compares ``class/file name`` with the course's manifest (names only: cheap). The lessons
    assert their accuracy only on these photos; on any other folder they print a verdict.
    """
    from .download import read_manifest  # the manifest lists the example set

    manifest = read_manifest()
    known = set(manifest["class"] + "/" + manifest["file"])
    names = {f"{c}/{str(p).replace(chr(92), '/').rsplit('/', 1)[-1]}"
             for c, p in zip(table["class_name"], table["file_path"])}
    return len(names) > 0 and names <= known


def check_learnt(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                 class_names: Sequence[str], required_accuracy: float | None = None,
                 strict: bool = False, what: str = "test") -> bool:
    """Print whether a model learnt the task; raise ``AssertionError`` only when ``strict``.

    Two conditions, both printed with their figures:

    * every class is recalled at least once more than chance allows: at least
      ``floor(n_c / k) + 1`` of its ``n_c`` photos, with ``k`` classes. A model that always
      answers one class fails it, however the accuracy looks on a few photos;
    * the accuracy is at least ``required_accuracy`` (``None``: not checked, as in a quick run
      on a handful of photos, where an accuracy threshold cannot tell a model from a coin).

    ``strict``: the lessons pass it on the course's own photos, where these results are known;
    on a learner's own folder the verdict is printed and the notebook goes on.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    k = len(class_names)
    matrix = confusion_matrix(y_true, y_pred, k)
    problems = []
    for c, name in enumerate(class_names):
        n_c, right = int(matrix[c].sum()), int(matrix[c, c])
        needed = n_c // k + 1
        if n_c and right < needed:
            problems.append(f"class {name!r}: {right} of {n_c} recalled, chance gives about {n_c / k:.1f}, "
                            f"needed at least {needed}")
    acc = accuracy(y_true, y_pred)
    if required_accuracy is not None and acc < required_accuracy:
        problems.append(f"{what} accuracy {acc:.1%} is below the {required_accuracy:.0%} this recipe reaches "
                        "on the course's photos")
    if problems:
        print(f"Verdict: NOT learnt well enough ({what} accuracy {acc:.1%}): " + "; ".join(problems) + ".")
        if strict:
            raise AssertionError("; ".join(problems))
        return False
    needed_text = f" and at least {required_accuracy:.0%} accuracy" if required_accuracy is not None else ""
    print(f"Verdict: learnt. Every class recalled more often than chance{needed_text} "
          f"({what} accuracy {acc:.1%}).")
    return True


def expects_known_results(data, cfg) -> bool:
    """True where a lesson knows what its results must be: a full run on the course's own photos.

    ``data``: the lesson's :class:`~tlcourse.data.CourseData`; ``cfg``: its :class:`~tlcourse.config.Config`.
    """
    return not cfg.smoke and is_course_example(data.table)


def lesson_check(ok: bool, finding: str, advice: str, data, cfg) -> bool:
    """Print a lesson's check; stop the lesson only where the result is known (:func:`expects_known_results`).

    ``finding`` says what was found, ``advice`` what to try when it is wrong. On a learner's own photos,
    or in a quick run, a failed check is printed and the lesson goes on: there it is news, not a fault.
    """
    print(("Check passed: " if ok else "Check NOT passed: ") + finding)
    if not ok:
        if expects_known_results(data, cfg):
            raise AssertionError(f"{finding}. On the course's photos this should not happen. {advice}")
        print(f"  What to try: {advice}")
    return bool(ok)


#: What to try when a lesson's result on the course's photos is not what the recipe reaches.
RERUN_ADVICE = ("Restart the kernel and run the lesson again from the top (Kernel > Restart Kernel and Run "
                "All Cells). If it happens again, delete the feature cache (cfg.feature_cache) and run "
                "`tlcourse doctor` in a terminal: it checks the photos, the weights and the installation.")


def lesson_verdict(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, data, cfg,
                   course_accuracy: float = 0.97, what: str = "test") -> bool:
    """A lesson's verdict on its model: :func:`check_learnt`, with the strictness decided here.

    In a full run on the course's own photos the recipe's accuracy is known, so the lesson stops (with
    what to try) when it is not reached; in a quick run only every class's recall is checked; on a
    learner's own photos the verdict is printed and the lesson goes on.
    """
    try:
        learnt = check_learnt(y_true, y_pred, data.classes,
                              required_accuracy=None if cfg.smoke else course_accuracy,
                              strict=is_course_example(data.table), what=what)
    except AssertionError as error:
        raise AssertionError(f"The model did not learn what it does on the course's photos: {error}. "
                             f"{RERUN_ADVICE}") from None
    if not learnt:
        print(f"  What to try: {OWN_PHOTOS_ADVICE}")
    return learnt


#: What to try when a model does not learn a learner's own photos well enough.
OWN_PHOTOS_ADVICE = ("look at the mistakes as photos (lesson 5): are the labels right, is each class's folder "
                     "only that class? Then add photos of the kinds the model misses, and run the lessons again.")
