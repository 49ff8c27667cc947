"""Recipes: the course's two fine-tuning methods, end to end, on a :class:`~tlcourse.data.CourseData`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch.utils.data import DataLoader, TensorDataset

from .augcache import VIEWS, AugmentSettings, augmented_features
from .calibration import Calibration, calibrate
from .checkpoint import save_checkpoint
from .config import DEFAULT_METHOD, METHODS
from .cut import CUT_EPOCHS, cut_activations, default_cut, split_at, train_cut
from .data import CourseData
from .evaluation import collect_logits
from .features import compute_features
from .inference import using_threads
from .models import WEIGHT_DECAY, TransferClassifier, param_groups
from .training import Callback, History, fit, seed_everything

#: Epochs of the head by default: a pass over cached features costs little (chosen on validation).
EPOCHS = 20


def train_frozen(
    model: TransferClassifier,
    data: CourseData,
    epochs: int = EPOCHS,
    lr: float = 1e-3,
    batch_size: int = 32,
    callbacks: Iterable[Callback] = (),
    seed: int = 0,
    *,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    augment: bool = False,
    verbose: bool = True,
    weight_decay: float = WEIGHT_DECAY,
    views: int = VIEWS,
    augment_settings: AugmentSettings = AugmentSettings(),
) -> History:
    """Method 1, weight freezing: freeze the backbone and train only the new head.

    With ``cache=True`` (the default) each photo's backbone features are computed once (a frozen
    backbone gives the same vector every epoch), kept in memory and, given a ``cache_dir`` (lessons
    pass ``get_config().feature_cache``), on disk; the head trains on them with the same
    :func:`~tlcourse.training.fit`. Batches are ``(features, y, index)``: ``state.index`` says which
    photos they are. Besides each photo's clean features (the evaluation transform), ``views``
    augmented views of it are cached (:mod:`tlcourse.augcache`: random crop, flip, colours, a
    downscale), and each epoch the head sees one of the ``views + 1`` per photo: augmentation at the
    cache's speed. ``views=0`` trains on the clean features only. ``cache=False`` recomputes the
    backbone every batch instead, and allows ``augment=True`` (a new random crop every epoch).
    Taught in lesson 3.
    """
    if augment and cache:
        raise ValueError(
            "augment=True needs cache=False: cached features are computed once, so a new random crop every "
            "epoch cannot be applied to them. The cached recipe augments with fixed views instead: "
            f"train_frozen(..., views={VIEWS}) (the default). For fresh crops every epoch use "
            "train_frozen(..., cache=False, augment=True) (slower: the backbone runs every epoch)."
        )
    data.use_settings(model.transform_settings)  # data built for another input size: refused
    seed_everything(seed)
    model.freeze()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=weight_decay)
    if not cache:
        return fit(model, data.loader("train", batch_size, augment=augment, seed=seed), optimizer, epochs,
                   val_loader=data.loader("val", batch_size), callbacks=callbacks)
    # Computing features draws no random numbers, so the head's dropout and the shuffling
    # see the same random streams as in the uncached loop.
    sets = compute_features(model, data, ("train", "val"), cache_dir=cache_dir, verbose=verbose)
    train = sets["train"].loader(batch_size, shuffle=True, seed=seed)
    if views:
        extra = augmented_features(model, sets["train"].file_paths, sets["train"].labels, views, augment_settings,
                                   cache_dir=cache_dir, verbose=verbose)
        train = extra.loader(batch_size, shuffle=True, seed=seed, clean=sets["train"].features)
    # One torch thread for the head: its matrices are tiny, so a second thread only adds waiting.
    with using_threads(1):
        history = fit(model.head, train, optimizer, epochs,
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

    Run it after :func:`train_frozen` (a random head would send large random gradients into the
    pretrained layers). BatchNorm keeps its pretrained statistics unless ``update_batchnorm``;
    training uses augmentation, since the backbone now changes.
    Taught in lesson 4.
    """
    data.use_settings(model.transform_settings)
    seed_everything(seed)
    model.unfreeze(update_batchnorm=update_batchnorm)
    optimizer = torch.optim.AdamW(param_groups(model, head_lr, backbone_lr, weight_decay))
    return fit(model, data.loader("train", batch_size, augment=True, seed=seed), optimizer, epochs,
               val_loader=data.loader("val", batch_size), callbacks=callbacks)


@dataclass
class Trained:
    """What :func:`train_reference` did: the history, validation and test accuracy, the calibration."""

    history: History
    val_accuracy: float
    n_val: int
    test_accuracy: float
    n_test: int
    calibration: Calibration
    checkpoint: Path


def train_reference(model: TransferClassifier, data: CourseData, out: str | Path, method: str = DEFAULT_METHOD,
                    epochs: int | None = None, lr: float | None = None, views: int = VIEWS, batch_size: int = 32,
                    seed: int = 0, cache_dir: str | Path | None = None, callbacks: Iterable[Callback] = (),
                    extra: dict[str, Any] | None = None, device: torch.device | None = None,
                    cut: str | None = None) -> Trained:
    """The reference pipeline: train with ``method`` (``"freeze"``: the head on cached features; ``"cut"``: the
    blocks from ``cut`` on and the head on cached activations; ``"discriminative"``: the whole network after 5
    head-only epochs), calibrate on the validation photos, test once, save a checkpoint (``tlcourse train``)."""
    if method == "freeze":
        # The backbone is frozen: every photo's features in one pass of the fast forward, built once (the
        # test photos' are only read after training).
        compute_features(model, data, ("train", "val", "test"), cache_dir=cache_dir, verbose=True)
        history = train_frozen(model, data, epochs=EPOCHS if epochs is None else epochs, lr=lr or 1e-3,
                               batch_size=batch_size, callbacks=callbacks, seed=seed, cache_dir=cache_dir, views=views)
        # The head on cached features gives the whole model's logits without a second backbone pass.
        sets = compute_features(model, data, ("val", "test"), cache_dir=cache_dir)
        net, loaders = model.head, {part: sets[part].loader(batch_size) for part in sets}
    elif method == "cut":
        cut = cut or default_cut(model)
        head_lr = lr or 1e-3
        history = train_cut(model, data, cut, epochs=CUT_EPOCHS if epochs is None else epochs, head_lr=head_lr,
                            block_lr=head_lr / 10, batch_size=batch_size, callbacks=callbacks, seed=seed, views=views,
                            cache_dir=cache_dir)
        # Below the cut nothing changed: the top on cached activations gives the whole model's logits.
        net, loaders = split_at(model, cut)[1], {}
        for part in ("val", "test"):
            table = data.part(part)
            found = cut_activations(model, cut, list(table["file_path"]), list(table["label"]), cache_dir=cache_dir)
            loaders[part] = DataLoader(TensorDataset(found.values[:, 0], found.labels), batch_size=batch_size)
        extra = {**(extra or {}), "cut": cut}
    elif method == "discriminative":
        # Head first, on the frozen backbone: a random head would send large random gradients into the
        # pretrained layers. Then everything, the backbone 10x slower.
        train_frozen(model, data, epochs=5, batch_size=batch_size, callbacks=callbacks, seed=seed,
                     cache_dir=cache_dir, views=views)
        history = train_discriminative(model, data, epochs=2 if epochs is None else epochs, head_lr=lr or 1e-4,
                                       batch_size=batch_size, callbacks=callbacks, seed=seed)
        net, loaders = model, {part: data.loader(part, batch_size) for part in ("val", "test")}
    else:
        raise ValueError(f"Unknown method {method!r}: use one of {', '.join(METHODS)}.")
    # Temperature and "unsure" threshold are fitted on the validation logits, never on the test photos.
    val_logits, val_labels = collect_logits(net, loaders["val"], device)
    calibration = calibrate(val_logits, val_labels)
    test_logits, test_labels = collect_logits(net, loaders["test"], device)
    accuracy: Callable = lambda logits, labels: float((logits.argmax(1) == labels).float().mean())  # noqa: E731
    result = Trained(history, accuracy(val_logits, val_labels), len(val_labels), accuracy(test_logits, test_labels),
                     len(test_labels), calibration, Path(out))
    save_checkpoint(out, model, data.classes, history, extra={
        **(extra or {}), "method": method, "views": views, "seed": seed, "val_accuracy": result.val_accuracy,
        "test_accuracy": result.test_accuracy, "calibration": calibration.to_dict()})
    return result
