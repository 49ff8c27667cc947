"""Confidence that means something: calibration of predicted probabilities, and an "unsure" answer.

A network trained with cross-entropy tends to be over-confident: among the photos it calls 95 % sure,
fewer than 95 % are right. The reliability diagram shows it, the expected calibration error (ECE)
measures it, and temperature scaling (Guo et al., 2017) fixes much of it with one number fitted on
the validation photos: softmax(logits / T). T does not change which class wins, only how sure it
sounds. Below a probability threshold, also chosen on validation, ``predict`` answers "unsure"."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .errors import ConfigError
from .data import TransformSettings, eval_transform
from .evaluation import collect_logits  # noqa: F401 - lesson 8 imports it from here
from .models import logits_of

#: Equal-width confidence bins of the ECE and the reliability diagram (Guo et al. use 15).
N_BINS = 15


def reliability_table(probs: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                      n_bins: int = N_BINS) -> pd.DataFrame:
    """Per confidence bin (``(lower, upper]``, equal widths over [0, 1]): ``n`` photos, their mean
    ``confidence`` (top probability) and ``accuracy``; empty bins are left out."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    rows = [{"lower": edges[b], "upper": edges[b + 1], "n": int((which == b).sum()),
             "confidence": float(confidence[which == b].mean()), "accuracy": float(correct[which == b].mean())}
            for b in range(n_bins) if (which == b).any()]
    return pd.DataFrame(rows, columns=["lower", "upper", "n", "confidence", "accuracy"])


def expected_calibration_error(probs: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                               n_bins: int = N_BINS) -> float:
    """ECE: the gap between confidence and accuracy in each bin, weighted by the bin's share of photos.
    Taught in lesson 8."""
    table = reliability_table(probs, labels, n_bins)
    return float((table["n"] * (table["confidence"] - table["accuracy"]).abs()).sum() / table["n"].sum())


#: Temperatures are searched in this range: a handful of mistakes among many confident right answers
#: must not make every answer "certain" (T near 0) or a coin toss (T huge).
TEMPERATURE_RANGE = (0.1, 10.0)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, bounds: tuple[float, float] = TEMPERATURE_RANGE
                    ) -> float:
    """The temperature T in ``bounds`` that minimises the cross-entropy of ``softmax(logits / T)``; 1
    (unchanged) when every answer is right, as the loss then has no minimum. The loss is convex in ``1 / T``,
    so a golden-section search over ``1 / T`` finds it without step sizes to tune. Taught in lesson 8."""
    logits, labels = logits.detach().double(), labels.long()
    if bool((logits.argmax(1) == labels).all()):  # no mistake: the loss falls as T -> 0, without a minimum
        return 1.0

    def loss(beta: float) -> float:
        return F.cross_entropy(logits * beta, labels).item()

    low, high = 1.0 / bounds[1], 1.0 / bounds[0]
    ratio = (np.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = loss(a), loss(b)
    for _ in range(80):  # the bracket shrinks by 0.618 per step: far below float precision after 80
        if fa < fb:  # a tie (a flat tail when all photos are right) keeps the larger 1 / T side
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = loss(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = loss(b)
    return float(1.0 / ((low + high) / 2))


def choose_threshold(probs: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                     target_accuracy: float = 0.99) -> float:
    """The lowest top-probability threshold at which the answers kept (top probability >= threshold)
    are at least ``target_accuracy`` right on these photos; ``1 / k`` (never unsure) when all are."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    floor = 1.0 / probs.shape[1]
    for threshold in np.concatenate([[floor], np.sort(np.unique(confidence))]):
        kept = confidence >= threshold
        if not kept.any() or correct[kept].mean() >= target_accuracy:
            return float(threshold)
    return 1.0  # even the most confident answer is wrong: no threshold reaches the target, always unsure


@dataclass(frozen=True)
class Calibration:
    """What ``predict`` needs to sound as sure as it is: the ``temperature`` and the ``threshold``
    below which it answers "unsure", with the validation ECE before and after (all plain numbers,
    stored in a checkpoint's ``extra["calibration"]``)."""

    temperature: float
    threshold: float
    target_accuracy: float
    ece_before: float
    ece_after: float
    n: int

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities: ``softmax(logits / temperature)``."""
        return torch.softmax(logits / self.temperature, dim=-1)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Calibration":
        return cls(**{k: values[k] for k in cls.__dataclass_fields__})

    @classmethod
    def from_extra(cls, extra: dict) -> "Calibration | None":
        """The calibration ``tlcourse train`` stored in a checkpoint's ``extra``; ``None`` for a checkpoint
        without one (saved by a lesson or an older version)."""
        stored = extra.get("calibration")
        return cls.from_dict(stored) if stored else None


@dataclass(frozen=True)
class Verdict:
    """What the model says about one photo: calibrated ``probabilities`` (class name -> probability, in
    label order) and its ``best_guess``; ``answer`` is "unsure" when the top probability is below ``threshold``."""

    probabilities: dict[str, float]
    best_guess: str
    threshold: float
    temperature: float

    @property
    def probability(self) -> float:
        return self.probabilities[self.best_guess]

    @property
    def unsure(self) -> bool:
        return self.probability < self.threshold

    @property
    def answer(self) -> str:
        return "unsure" if self.unsure else self.best_guess

    def describe(self) -> str:
        """``"hotdog (97.0%)"``, or ``"unsure (maybe hotdog, 62.0%)"`` below the threshold."""
        if self.unsure:
            return f"unsure (maybe {self.best_guess}, {self.probability:.1%})"
        return f"{self.best_guess} ({self.probability:.1%})"


def verdict(logits: torch.Tensor, class_names: Sequence[str], calibration: Calibration | None = None,
            threshold: float | None = None) -> Verdict:
    """The answer for one photo's ``logits`` (``k`` values): probabilities with ``calibration``'s
    temperature, "unsure" below ``threshold`` (default: ``calibration``'s). Without a calibration:
    the plain softmax, and never unsure unless a ``threshold`` is given."""
    temperature = calibration.temperature if calibration else 1.0
    if threshold is None:
        threshold = calibration.threshold if calibration else 0.0
    probs = torch.softmax(logits.detach().float().cpu().flatten() / temperature, dim=0).tolist()
    if len(probs) != len(class_names):
        raise ConfigError(f"The model has {len(probs)} outputs but {len(class_names)} class names were given.")
    probabilities = dict(zip(class_names, probs))
    return Verdict(probabilities, max(probabilities, key=probabilities.get), float(threshold), temperature)


def predict_photo(model: nn.Module, image: Image.Image, class_names: Sequence[str],
                  settings: TransformSettings | None = None, calibration: Calibration | None = None,
                  threshold: float | None = None) -> tuple[Verdict, torch.Tensor]:
    """What the model says about one photo (an RGB PIL image): its :func:`verdict` and the model's input
    ``1 x 3 x H x W`` (``settings``: default the model's ``transform_settings``). The one way the CLI's
    ``predict`` and the photo tester ask."""
    x = eval_transform(settings or model.transform_settings)(image).unsqueeze(0)
    return verdict(logits_of(model, x)[0], class_names, calibration, threshold), x


def calibrate(logits: torch.Tensor, labels: torch.Tensor, target_accuracy: float = 0.99) -> Calibration:
    """Fit the temperature on validation logits, then choose the "unsure" threshold on the calibrated
    probabilities of the same photos. Taught in lesson 8."""
    temperature = fit_temperature(logits, labels)
    before = torch.softmax(logits.double(), 1).numpy()
    after = torch.softmax(logits.double() / temperature, 1).numpy()
    return Calibration(temperature=temperature, threshold=choose_threshold(after, labels.numpy(), target_accuracy),
                       target_accuracy=target_accuracy, ece_before=expected_calibration_error(before, labels.numpy()),
                       ece_after=expected_calibration_error(after, labels.numpy()), n=len(labels))


def plot_reliability(probs: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, ax=None,
                     n_bins: int = N_BINS, label: str | None = None):
    """Reliability diagram: accuracy against confidence per bin (points sized by photos) and the
    diagonal of a perfectly calibrated model; the ECE in the legend."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(4.5, 4.5))[1]
    table = reliability_table(probs, labels, n_bins)
    ece = expected_calibration_error(probs, labels, n_bins)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    ax.plot(table["confidence"], table["accuracy"], marker="o", label=f"{label or 'model'} (ECE {ece:.3f})")
    ax.set(xlabel="confidence (top probability)", ylabel="accuracy", xlim=(0, 1.01), ylim=(0, 1.01))
    ax.legend(loc="upper left")
    return ax
