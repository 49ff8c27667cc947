"""Recipes: the course's two fine-tuning methods, end to end, on a :class:`~tlcourse.data.CourseData`."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from .data import CourseData
from .features import compute_features, using_threads
from .models import TransferClassifier, param_groups
from .training import Callback, History, fit, seed_everything

#: Weight decay of both recipes' AdamW optimizer: AdamW's own default. AdamW is Adam (the
#: original notebook's optimizer) with the decay applied to the weights directly instead of being
#: added to the gradient, where Adam's per-parameter scaling would weaken it (Loshchilov & Hutter).
WEIGHT_DECAY = 0.01


def train_frozen(
    model: TransferClassifier,
    data: CourseData,
    epochs: int = 5,
    lr: float = 1e-3,
    batch_size: int = 32,
    callbacks: Iterable[Callback] = (),
    seed: int = 0,
    *,
    cache: bool = True,
    cache_dir: str | Path | None | bool = None,
    augment: bool = False,
    verbose: bool = True,
    weight_decay: float = WEIGHT_DECAY,
) -> History:
    """Method 1, weight freezing: freeze the backbone and train only the new head.

    The course's fast recipe (``cache=True``, the default): a frozen backbone
    gives a photo the same feature vector every epoch, so each photo's
    features are computed **once** (fast forward, see
    :mod:`tlcourse.features`), kept in memory and on disk (``cache_dir``:
    ``None`` = ``<TLCOURSE_OUTPUT>/feature-cache``, a folder, or ``False`` for
    memory only), and the head is trained on them with the same
    :func:`~tlcourse.training.fit`, so callbacks and dashboards work as usual.
    Their batches are ``(features, y, index)``: ``state.x`` holds feature
    vectors, and ``state.index`` the rows of ``data.part("train")``, i.e. which
    photos they are. Validation runs on cached features too. On a 2-core CPU
    this takes all 1,434 course photos to a trained head in well under a
    minute, where recomputing the backbone takes ~1 minute per epoch.

    Cached features come from the deterministic evaluation transform: **no
    augmentation** is applied to them (a random crop or flip would change the
    vector every epoch, which a cache cannot hold). The uncached frozen loop
    uses the same transform, so both train the same head on the same inputs
    and give the same predictions (to float rounding; the tests check it).
    After training, ``model(x)`` on images predicts exactly as
    ``model.head(features)``.

    ``cache=False`` runs the plain loop that recomputes the backbone every
    batch; only then can ``augment=True`` add random crops and flips.
    """
    seed_everything(seed)
    model.freeze()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=weight_decay)
    if not cache:
        return fit(model, data.loader("train", batch_size, augment=augment, seed=seed), optimizer, epochs,
                   val_loader=data.loader("val", batch_size), callbacks=callbacks)
    if augment:
        raise ValueError(
            "augment=True needs cache=False: cached features are computed once from the evaluation transform, "
            "so random crops and flips cannot be applied to them. Use train_frozen(..., cache=False, "
            "augment=True) (slower: the backbone runs every epoch) or leave augment off."
        )
    # Computing features draws no random numbers, so the head's dropout and the shuffling
    # see the same random streams as in the uncached loop.
    sets = compute_features(model, data, ("train", "val"), cache_dir=cache_dir, verbose=verbose)
    # One torch thread for the head: its matrices are tiny (32 x n_features), so a second thread has
    # nothing to share but its waiting. Measured on the 2-core machine while busy, 10 epochs on
    # 1,147 cached vectors: 2 threads 46-48 s, 1 thread 4-7 s.
    with using_threads(1):
        history = fit(model.head, sets["train"].loader(batch_size, shuffle=True, seed=seed), optimizer, epochs,
                      val_loader=sets["val"].loader(batch_size), callbacks=callbacks)
    model.train()  # as after the uncached loop: train mode, with the frozen backbone kept in eval
    return history


def train_discriminative(
    model: TransferClassifier,
    data: CourseData,
    epochs: int = 1,
    head_lr: float = 1e-4,
    backbone_lr: float = 1e-5,
    batch_size: int = 32,
    callbacks: Iterable[Callback] = (),
    seed: int = 0,
    update_batchnorm: bool = False,
    weight_decay: float = WEIGHT_DECAY,
) -> History:
    """Method 2, discriminative learning rates: the whole network learns, the backbone more slowly.

    Meant to run after the head has been trained with :func:`train_frozen`
    (a random head would send large, random gradients into the pretrained
    layers): the head goes on at ``head_lr``, the backbone at the 10x smaller
    ``backbone_lr``. BatchNorm keeps its pretrained running statistics unless
    ``update_batchnorm`` (see :meth:`TransferClassifier.unfreeze`). Uses
    training augmentation (random crop and flip), since the backbone now
    changes and benefits from varied inputs.
    """
    seed_everything(seed)
    model.unfreeze(update_batchnorm=update_batchnorm)
    optimizer = torch.optim.AdamW(param_groups(model, head_lr, backbone_lr, weight_decay))
    return fit(model, data.loader("train", batch_size, augment=True, seed=seed), optimizer, epochs,
               val_loader=data.loader("val", batch_size), callbacks=callbacks)
