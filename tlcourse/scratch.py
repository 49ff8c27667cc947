"""What pretraining is worth: the material for training the same network from scratch beside the
pretrained one, on the same photos, decoded once at a smaller size into tensors kept in memory that
every epoch of both networks reads. (The field test, for evaluation only, is :mod:`tlcourse.fieldtest`'s.)"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch.utils.data import TensorDataset

from .data import TransformSettings
from .inference import batches_of_inputs

def smaller(settings: TransformSettings, crop: int) -> TransformSettings:
    """The same transform at a smaller crop, resizing in the same proportion (e.g. 232/224 -> 116/112)."""
    return dataclasses.replace(settings, crop=crop, resize=round(settings.resize * crop / settings.crop))


def photo_tensors(paths: Sequence[str], labels: Sequence[int], settings: TransformSettings,
                  decode_threads: int = 1) -> TensorDataset:
    """Decode photos once with the evaluation transform: a dataset of ``(x, y)`` held in memory."""
    batches = list(batches_of_inputs([str(p) for p in paths], settings, decode_threads=decode_threads))
    x = torch.cat(batches) if batches else torch.empty(0, 3, settings.crop, settings.crop)
    return TensorDataset(x, torch.as_tensor(list(labels), dtype=torch.long))
