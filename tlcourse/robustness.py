"""Robustness report: a model's accuracy on a folder when its photos are changed in controlled ways.

A field test says *that* a model misses photos from elsewhere; changing the photos one way at a time
says *what* it is sensitive to: small web images, JPEG artefacts, blur, light, framing. The changes are
made in memory; nothing is written next to the learner's photos."""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .data import CSVDataset, eval_transform, make_loader
from .evaluation import predict, prediction_scores
from .inference import DEFAULT_BATCH_SIZE, for_predictions


def long_side(image: Image.Image, pixels: int) -> Image.Image:
    """Shrink so that the longer side is ``pixels`` (aspect kept, bicubic with antialiasing, as a website's
    thumbnail); a photo already that small is returned unchanged (never enlarged)."""
    width, height = image.size
    longest = max(width, height)
    if longest <= pixels:
        return image
    # int(): truncated like torchvision's Resize(max_size=...)
    size = (max(1, int(width * pixels / longest)), max(1, int(height * pixels / longest)))
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=None)


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    """Encode as JPEG at ``quality`` (1-95, Pillow's scale) in memory and decode again."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def blur(image: Image.Image, sigma: float) -> Image.Image:
    """Gaussian blur with standard deviation ``sigma`` pixels (kernel of ``2*ceil(3*sigma)+1`` pixels,
    torchvision's ``gaussian_blur``; edges reflected)."""
    size = 2 * int(np.ceil(3 * sigma)) + 1
    return TF.gaussian_blur(image, kernel_size=[size, size], sigma=[sigma, sigma])


def brightness(image: Image.Image, factor: float) -> Image.Image:
    """Multiply every pixel value by ``factor`` (clipped to 0-255): 0.5 darker, 1.5 brighter."""
    return TF.adjust_brightness(image, factor)


def contrast(image: Image.Image, factor: float) -> Image.Image:
    """Blend with the photo's mean grey level: ``mean + factor * (pixel - mean)`` (clipped); 0.5 flatter,
    1.5 harsher."""
    return TF.adjust_contrast(image, factor)


def corner_crop(image: Image.Image, fraction: float) -> Image.Image:
    """Keep the top-left ``fraction`` of the width and of the height: the object off-centre, partly cut."""
    width, height = image.size
    return image.crop((0, 0, max(1, int(width * fraction)), max(1, int(height * fraction))))


def hflip(image: Image.Image) -> Image.Image:
    """Mirror left to right."""
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


@dataclass(frozen=True)
class Change:
    """A named change of a photo: ``apply`` takes and returns an RGB PIL image."""

    name: str
    kind: str
    apply: Callable[[Image.Image], Image.Image]


def _identity(image: Image.Image) -> Image.Image:
    return image


#: The report's default changes, the unchanged photos first (the reference row).
DEFAULT_CHANGES: tuple[Change, ...] = (
    Change("original", "none", _identity),
    *(Change(f"long side {n} px", "size", functools.partial(long_side, pixels=n)) for n in (224, 160, 112)),
    *(Change(f"JPEG quality {q}", "jpeg", functools.partial(jpeg, quality=q)) for q in (30, 10)),
    *(Change(f"blur sigma {s}", "blur", functools.partial(blur, sigma=s)) for s in (1.0, 3.0)),
    *(Change(f"brightness x{f}", "brightness", functools.partial(brightness, factor=f)) for f in (0.5, 1.5)),
    *(Change(f"contrast x{f}", "contrast", functools.partial(contrast, factor=f)) for f in (0.5, 1.5)),
    Change("corner crop 60 %", "crop", functools.partial(corner_crop, fraction=0.6)),
    Change("horizontal flip", "flip", hflip),
)


def predictions_under(model: nn.Module, table: pd.DataFrame, changes: Iterable[Change] = DEFAULT_CHANGES,
                      batch_size: int = DEFAULT_BATCH_SIZE, device: torch.device | None = None,
                      progress: Callable[[str], None] | None = None) -> dict[str, pd.DataFrame]:
    """Per change, :func:`~tlcourse.evaluation.predict`'s frame of ``model`` on the photos of a labels table
    under that change (each followed by the model's evaluation transform), with ``loss``: each photo's
    cross-entropy, ``-log`` of the probability of its class. Taught in lesson 7."""
    transform = eval_transform(model.transform_settings)
    net = for_predictions(model)  # every change is one more pass over the photos: the fast forward
    frames = {}
    for change in changes:
        if progress is not None:
            progress(change.name)
        loader = make_loader(CSVDataset(table, v2.Compose([change.apply, transform])), batch_size=batch_size)
        frame = predict(net, loader, device)
        probs = frame[[c for c in frame.columns if c.startswith("prob_")]].to_numpy()
        right = probs[np.arange(len(frame)), frame["label"].to_numpy()]
        frames[change.name] = frame.assign(loss=-np.log(np.clip(right, 1e-12, None)))
    return frames


def robustness_report(model: nn.Module, table: pd.DataFrame, class_names: Sequence[str],
                      changes: Iterable[Change] = DEFAULT_CHANGES, batch_size: int = DEFAULT_BATCH_SIZE,
                      device: torch.device | None = None, progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Accuracy of ``model`` on the photos of a labels table under each change (:func:`predictions_under`).
    Taught in lesson 7.

    One row per change: ``accuracy`` with its 95 % Wilson interval (``low``, ``high``), ``balanced_accuracy``,
    ``recall_<class>``, ``loss`` (the mean cross-entropy) and ``drop`` (accuracy lost against the first
    change, the unchanged photos)."""
    changes, rows = list(changes), []
    for name, frame in predictions_under(model, table, changes, batch_size, device, progress).items():
        result = prediction_scores(frame["label"], frame["pred"], class_names)
        rows.append({"change": name, "kind": next(c.kind for c in changes if c.name == name), "n": result.n,
                     "correct": result.correct, "accuracy": result.accuracy, "low": result.interval[0],
                     "high": result.interval[1], "balanced_accuracy": result.balanced_accuracy,
                     **{f"recall_{c}": result.recall.at[c, "recall"] for c in class_names},
                     "loss": float(frame["loss"].mean())})
    report = pd.DataFrame(rows).set_index("change")
    report["drop"] = report["accuracy"].iloc[0] - report["accuracy"]
    return report


def plot_robustness(report: pd.DataFrame, ax=None, title: str | None = None):
    """Horizontal bars of accuracy per change with their 95 % intervals; the unchanged accuracy as a line."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 0.35 * len(report) + 1))[1]
    y = np.arange(len(report))[::-1]
    acc = report["accuracy"].to_numpy()
    errors = np.vstack([acc - report["low"].to_numpy(), report["high"].to_numpy() - acc])
    ax.barh(y, acc, xerr=errors, color="tab:blue", alpha=0.8, capsize=3)
    ax.axvline(acc[0], color="black", linestyle="--", linewidth=1, label=f"{report.index[0]}: {acc[0]:.0%}")
    ax.set_yticks(y, report.index)
    ax.set(xlim=(0, 1), xlabel="accuracy (bars: 95 % interval)")
    ax.legend(loc="lower left")
    if title:
        ax.set_title(title)
    return ax
