"""Recipes: the course's two fine-tuning methods, end to end, on a :class:`~tlcourse.data.CourseData`."""

from __future__ import annotations

from typing import Iterable

import torch

from .data import CourseData
from .models import TransferClassifier, param_groups
from .training import Callback, History, fit, seed_everything


def train_frozen(
    model: TransferClassifier,
    data: CourseData,
    epochs: int = 5,
    lr: float = 1e-3,
    batch_size: int = 32,
    callbacks: Iterable[Callback] = (),
    seed: int = 0,
) -> History:
    """Method 1, weight freezing: freeze the backbone and train only the new head.

    Images go through the deterministic evaluation transform, so the frozen
    backbone sees the same input for a photo every epoch.
    """
    seed_everything(seed)
    model.freeze()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    return fit(model, data.loader("train", batch_size, seed=seed), optimizer, epochs,
               val_loader=data.loader("val", batch_size), callbacks=callbacks)


def train_discriminative(
    model: TransferClassifier,
    data: CourseData,
    epochs: int = 1,
    head_lr: float = 1e-3,
    backbone_lr: float = 1e-5,
    batch_size: int = 32,
    callbacks: Iterable[Callback] = (),
    seed: int = 0,
) -> History:
    """Method 2, discriminative learning rates: the whole network learns, the backbone more slowly.

    Uses training augmentation (random crop and flip), since the backbone now
    changes and benefits from varied inputs.
    """
    seed_everything(seed)
    model.unfreeze()
    optimizer = torch.optim.AdamW(param_groups(model, head_lr, backbone_lr))
    return fit(model, data.loader("train", batch_size, augment=True, seed=seed), optimizer, epochs,
               val_loader=data.loader("val", batch_size), callbacks=callbacks)
