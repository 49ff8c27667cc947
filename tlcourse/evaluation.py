"""Evaluation: predictions with probabilities, accuracy, per-class accuracy and the confusion matrix,
accuracy with its 95 % interval, and the lessons' check that a model learnt the task."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .models import eval_mode, model_device


@torch.no_grad()
def collect_logits(model: nn.Module, loader: Iterable, device: torch.device | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits N x k, labels N)`` of a model over a loader of ``(x, y, ...)`` batches, in eval mode
    without gradients, as float32 CPU tensors: the one loop that collects a model's outputs."""
    device = device or model_device(model)
    logits, labels = [], []
    with eval_mode(model):
        for batch in loader:
            logits.append(model(batch[0].to(device)).float().cpu())
            labels.append(torch.as_tensor(batch[1]))
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels)


def predict(model: nn.Module, loader: Iterable, device: torch.device | None = None) -> pd.DataFrame:
    """Run ``model`` over ``loader`` (:func:`collect_logits`): one row per example, in loader order,
    with ``label``, ``pred``, ``prob_<k>`` per class (softmax of the logits) and ``confidence``. Taught in lesson 3."""
    logits, labels = collect_logits(model, loader, device)
    prob = torch.softmax(logits, dim=1).numpy()
    frame = pd.DataFrame(prob, columns=[f"prob_{k}" for k in range(prob.shape[1])])
    frame.insert(0, "pred", prob.argmax(1))
    frame.insert(0, "label", labels.numpy())
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
    return recall_table(y_true, y_pred, class_names)["recall"].to_dict()


def confusion_frame(y_true, y_pred, class_names: Sequence[str]) -> pd.DataFrame:
    """The confusion matrix as a labelled table (rows: true, columns: predicted). Taught in lesson 5."""
    matrix = confusion_matrix(y_true, y_pred, len(class_names))
    return pd.DataFrame(matrix, index=pd.Index(class_names, name="true"),
                        columns=pd.Index(class_names, name="predicted"))


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion ``correct / n`` (``z=1.96``: 95 %).

    Taught in lesson 3. Unlike the normal approximation ``p +- z*sqrt(p(1-p)/n)``, it stays inside [0, 1] and is
    not empty at 0 or ``n`` correct: 144 of 144 gives about (0.974, 1.0), not (1.0, 1.0)."""
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


def balanced_accuracy(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                      n_classes: int) -> float:
    """Mean recall over the classes that have examples (each class counts the same, whatever its size)."""
    recall = recall_table(y_true, y_pred, [str(k) for k in range(n_classes)])["recall"]
    if recall.isna().all():
        raise ValueError("need at least one example")
    return float(recall.mean())  # NaN (a class without examples) is skipped


def recall_table(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                 class_names: Sequence[str]) -> pd.DataFrame:
    """One row per class: ``n`` photos, ``correct``, ``recall`` and its 95 % Wilson interval
    (``low``, ``high``); NaN for a class without photos. Taught in lesson 7."""
    matrix = confusion_matrix(y_true, y_pred, len(class_names))
    rows = []
    for k, name in enumerate(class_names):
        n, right = int(matrix[k].sum()), int(matrix[k, k])
        low, high = wilson_interval(right, n) if n else (float("nan"), float("nan"))
        rows.append({"class": name, "n": n, "correct": right,
                     "recall": right / n if n else float("nan"), "low": low, "high": high})
    return pd.DataFrame(rows).set_index("class")


@dataclass
class Scores:
    """Accuracy with its 95 % Wilson interval, balanced accuracy and recall per class with intervals."""

    n: int
    correct: int
    accuracy: float
    interval: tuple[float, float]
    balanced_accuracy: float
    recall: pd.DataFrame  # one row per class: n, correct, recall, low, high


def prediction_scores(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                      class_names: Sequence[str]) -> Scores:
    """The course's scores of one set of predictions, each proportion with its 95 % interval: the one
    function the CLI, the field test, the robustness report and the benchmarks use (lesson 7 writes
    the same scores out as a table row)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    correct = int((y_true == y_pred).sum())
    return Scores(n=len(y_true), correct=correct, accuracy=accuracy(y_true, y_pred),
                  interval=wilson_interval(correct, len(y_true)),
                  balanced_accuracy=balanced_accuracy(y_true, y_pred, len(class_names)),
                  recall=recall_table(y_true, y_pred, class_names))


def is_course_example(table: pd.DataFrame) -> bool:
    """True when every photo of a labels table is one of the course's example photos (dog/hotdog).

    Compares ``class/file name`` with the course's manifest (names only: cheap). The lessons
    assert their accuracy only on these photos; on any other folder they print a verdict."""
    from .download import read_manifest  # the manifest lists the example set

    manifest = read_manifest()
    known = set(manifest["class"] + "/" + manifest["file"])
    names = {f"{c}/{str(p).replace(chr(92), '/').rsplit('/', 1)[-1]}"
             for c, p in zip(table["class_name"], table["file_path"])}
    return len(names) > 0 and names <= known


#: The most a model that guesses at random may pass :func:`check_learnt`'s recall check with.
CHANCE_PASS = 0.01


def recall_needed(n_c: int, k: int, chance_pass: float = CHANCE_PASS) -> int:
    """The fewest of a class's ``n_c`` photos a model must recall so that one guessing uniformly among
    ``k`` classes does it in all ``k`` classes at once with probability at most ``chance_pass``: per
    class, the binomial tail ``P(Bin(n_c, 1/k) >= r) <= chance_pass ** (1 / k)`` (the classes' photos
    are guessed independently). ``n_c + 1`` when even all ``n_c`` is not enough evidence."""
    per_class, p = chance_pass ** (1 / k), 1 / k
    tail = 0.0
    for r in range(n_c, -1, -1):  # add P(exactly r) from the top until the tail is too likely
        tail += math.comb(n_c, r) * p**r * (1 - p) ** (n_c - r)
        if tail > per_class:
            return r + 1
    return 0


def check_learnt(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                 class_names: Sequence[str], required_accuracy: float | None = None,
                 strict: bool = False, what: str = "test") -> bool:
    """Print whether a model learnt the task; raise ``AssertionError`` only when ``strict`` (the lessons
    pass it on the course's own photos, where the results are known). Two conditions, both printed:

    * every class is recalled more often than chance explains: at least :func:`recall_needed` of its
      ``n_c`` photos, so that a model guessing at random among the ``k`` classes passes in every class
      at once with probability at most ``CHANCE_PASS``. A model that always answers one class fails it;
    * the accuracy is at least ``required_accuracy`` (``None``: not checked, as in a quick run on a
      handful of photos, where an accuracy threshold cannot tell a model from a coin).

    Taught in lesson 3."""
    y_true, y_pred, k = np.asarray(y_true), np.asarray(y_pred), len(class_names)
    problems = []
    for name, n_c, right in recall_table(y_true, y_pred, class_names)[["n", "correct"]].itertuples():
        needed = recall_needed(n_c, k)
        if n_c and needed > n_c:
            problems.append(f"class {name!r}: {n_c} photos are too few to tell a model from a guess")
        elif n_c and right < needed:
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


def lesson_check(ok: bool, finding: str, advice: str, data, cfg) -> bool:
    """Print a lesson's check; stop the lesson only where the result is known: a full run (``cfg``, the
    lesson's :class:`~tlcourse.config.Config`) on the course's own photos (``data``, its CourseData).

    ``finding`` says what was found, ``advice`` what to try when it is wrong. On a learner's own photos,
    or in a quick run, a failed check is printed and the lesson goes on: there it is news, not a fault."""
    print(("Check passed: " if ok else "Check NOT passed: ") + finding)
    if not ok:
        if not cfg.smoke and is_course_example(data.table):
            raise AssertionError(f"{finding}. On the course's photos this should not happen. {advice}")
        print(f"  What to try: {advice}")
    return bool(ok)


#: What to try when a lesson's result on the course's photos is not what the recipe reaches.
RERUN_ADVICE = ("Restart the kernel and run the lesson again from the top (Kernel > Restart Kernel and Run "
                "All Cells). If it happens again, delete the feature cache (cfg.feature_cache) and run "
                "`tlcourse doctor` in a terminal: it checks the photos, the weights and the installation.")


def lesson_verdict(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, data, cfg,
                   course_accuracy: float = 0.97, what: str = "test") -> bool:
    """A lesson's verdict on its model: :func:`check_learnt`, strict on the course's own photos. In a full
    run there the lesson stops (with what to try) below the recipe's accuracy; in a quick run only every
    class's recall is checked; on a learner's own photos the verdict is printed and the lesson goes on."""
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
