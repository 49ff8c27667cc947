"""Checkpoints: a trained model with everything needed to use it again (weights, the model's
constructor arguments, class names, history), written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from .data import IMAGE_EXTENSIONS
from .errors import CheckpointError, DataError, DataNotFoundError
from .files import atomic_write
from .models import TransferClassifier, rebuild
from .training import History

FORMAT_VERSION = 2  # 2: the model's constructor arguments are stored as they are


def save_checkpoint(path: str | Path, model: TransferClassifier, class_names: Sequence[str],
                    history: History | None = None, extra: dict[str, Any] | None = None,
                    optimizer: torch.optim.Optimizer | None = None) -> Path:
    """Save ``model``, its arguments, ``class_names``, ``history``, ``extra`` (plain values) and the
    ``optimizer``'s state to ``path``. An interruption leaves the previous file intact. Taught in lesson 5."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_EXTENSIONS:  # a typo must not overwrite a learner's photo
        raise DataError(f"Refusing to save a checkpoint as {path}: that is an image file name. "
                        "Save it under the output folder (TLCOURSE_OUTPUT), e.g. outputs/model.pt.")
    if len(class_names) != model.n_classes:
        raise DataError(f"{len(class_names)} class names for a model with {model.n_classes} outputs")
    payload = {
        "format_version": FORMAT_VERSION,
        "model": model.arguments(),
        "class_names": list(class_names),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "history": history.to_dict() if history is not None else None,
        "extra": extra or {},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,  # read back onto the CPU
    }
    with atomic_write(path) as handle:
        torch.save(payload, handle)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint's contents (weights as CPU tensors) with a clear error for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"Checkpoint not found: {path}. Train and save one first (tlcourse train).")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a damaged file
        raise CheckpointError(f"{path} is not a readable tlcourse checkpoint ({error}). Save it again.") from error
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a tlcourse checkpoint (format {FORMAT_VERSION}); "
                              "train and save it again with this version.")
    return payload


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu"):
    """Rebuild the model saved at ``path`` (in eval mode). Returns ``(model, info)``.

    ``info``: ``class_names``, ``history``, ``transform``, ``backbone``, ``extra`` and ``optimizer``.
    To resume, load ``info["optimizer"]`` into the same optimizer and pass ``history=info["history"]`` to fit."""
    payload = read_checkpoint(path)
    model = rebuild(payload["model"])  # the checkpoint carries every weight; no download needed
    load_weights_into(model, payload, source=path)
    model.to(device).eval()
    history = History.from_dict(payload["history"]) if payload["history"] else None
    info = {"class_names": payload["class_names"], "history": history, "backbone": model.backbone_name,
            "transform": model.transform_settings, "extra": payload["extra"],
            "optimizer": payload.get("optimizer")}
    return model, info


def load_weights_into(model: TransferClassifier, checkpoint: dict[str, Any] | str | Path,
                      source: str | Path | None = None,
                      class_names: Sequence[str] | None = None) -> TransferClassifier:
    """Put a checkpoint's weights into an existing model; :class:`CheckpointError` (naming both setups
    and the fix) when the backbone, the classes or the head's layers differ."""
    if not isinstance(checkpoint, dict):
        source, checkpoint = checkpoint, read_checkpoint(checkpoint)
    where = source or "checkpoint"
    theirs = checkpoint["model"]["backbone_name"]
    if theirs != model.backbone_name:
        raise CheckpointError(f"{where} was trained with backbone {theirs!r}, but this model uses "
                              f"{model.backbone_name!r}. Build the model with backbone={theirs!r} or use "
                              "load_checkpoint().")
    n = len(checkpoint["class_names"])
    if n != model.n_classes:
        raise CheckpointError(f"{where} has {n} classes ({', '.join(checkpoint['class_names'])}), but this model "
                              f"has {model.n_classes} outputs. Build the model with n_classes={n} or use "
                              "load_checkpoint().")
    if class_names is not None and list(class_names) != list(checkpoint["class_names"]):
        raise CheckpointError(f"{where} was trained on classes {checkpoint['class_names']}, but this model is for "
                              f"{list(class_names)}: its outputs would mean other classes. Use the checkpoint's "
                              "class names (load_checkpoint() returns them) or train a model for these classes.")
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        head = {k: checkpoint["model"][k] for k in ("hidden", "dropout")}
        raise CheckpointError(f"{where} does not fit this model's layers (checkpoint head: {head}, this model: "
                              f"{ {'hidden': model.hidden, 'dropout': model.dropout} }). Build the model with the "
                              f"checkpoint's settings or use load_checkpoint(). Details: {error}") from error
    return model
