"""Checkpoints: save a trained model with everything needed to use it again, load it back.

A checkpoint holds the weights plus the backbone name, class names, head
shape, transform settings and training history, so :func:`load_checkpoint`
rebuilds the model without the pretrained weights file and gives identical
predictions. Writes are atomic: the file is written beside the target and
renamed over it, so an interruption never leaves half a file as the only copy.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from .data import TransformSettings
from .models import TransferClassifier, build_model
from .training import History

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is unreadable or does not fit the model it is loaded into."""


def _head_shape(model: TransferClassifier) -> dict[str, Any]:
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    dropouts = [m for m in model.head if isinstance(m, torch.nn.Dropout)]
    return {
        "hidden": linears[0].out_features if len(linears) > 1 else None,
        "dropout": dropouts[0].p if dropouts else 0.0,
    }


def save_checkpoint(
    path: str | Path,
    model: TransferClassifier,
    class_names: Sequence[str],
    history: History | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save ``model`` and what is needed to use it to ``path`` (atomically)."""
    path = Path(path)
    if len(class_names) != model.n_classes:
        raise ValueError(f"{len(class_names)} class names for a model with {model.n_classes} outputs")
    payload = {
        "format_version": FORMAT_VERSION,
        "backbone": getattr(model, "backbone_name", None),
        "weights": getattr(model, "weights_name", None),
        "class_names": list(class_names),
        "n_features": model.n_features,
        "head": _head_shape(model),
        "transform": dataclasses.asdict(getattr(model, "transform_settings", TransformSettings())),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "history": history.to_dict() if history is not None else None,
        "extra": extra or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint's contents (weights as CPU tensors) with a clear error for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}. Train and save one first (tlcourse train).")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a damaged file
        raise CheckpointError(f"{path} is not a readable tlcourse checkpoint ({error}). Save it again.") from error
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a tlcourse checkpoint (format {FORMAT_VERSION}).")
    return payload


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu"):
    """Rebuild the model saved at ``path``. Returns ``(model, info)``.

    ``info`` has ``class_names``, ``history`` (a :class:`History` or ``None``),
    ``transform`` (:class:`TransformSettings`) and ``extra``. The model is in eval mode.
    """
    payload = read_checkpoint(path)
    model = build_model(
        n_classes=len(payload["class_names"]),
        backbone=payload["backbone"],
        weights=None,  # the checkpoint carries every weight; no download needed
        hidden=payload["head"]["hidden"],
        dropout=payload["head"]["dropout"],
    )
    model.weights_name = payload["weights"]
    model.transform_settings = TransformSettings(**{k: tuple(v) if isinstance(v, list) else v
                                                    for k, v in payload["transform"].items()})
    load_weights_into(model, payload, source=path)
    model.to(device).eval()
    history = History.from_dict(payload["history"]) if payload["history"] else None
    info = {"class_names": payload["class_names"], "history": history,
            "transform": model.transform_settings, "extra": payload["extra"]}
    return model, info


def load_weights_into(model: TransferClassifier, checkpoint: dict[str, Any] | str | Path,
                      source: str | Path | None = None) -> TransferClassifier:
    """Put a checkpoint's weights into an existing model, checking that it is the same setup."""
    if not isinstance(checkpoint, dict):
        source, checkpoint = checkpoint, read_checkpoint(checkpoint)
    where = source or "checkpoint"
    mine = getattr(model, "backbone_name", None)
    if checkpoint["backbone"] != mine:
        raise CheckpointError(
            f"{where} was trained with backbone {checkpoint['backbone']!r}, but this model uses {mine!r}. "
            f"Build the model with backbone={checkpoint['backbone']!r} or use load_checkpoint()."
        )
    n = len(checkpoint["class_names"])
    if n != model.n_classes:
        raise CheckpointError(
            f"{where} has {n} classes ({', '.join(checkpoint['class_names'])}), but this model has "
            f"{model.n_classes} outputs. Build the model with n_classes={n} or use load_checkpoint()."
        )
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(f"{where} does not fit this model's layers: {error}") from error
    return model
