"""What pretraining is worth: the material for training the same network from scratch beside the
pretrained one, on the same photos, and for checking both on photos from elsewhere.

Training a whole network is the expensive part, so the photos are decoded once, at a smaller size,
into tensors kept in memory; every epoch of both networks then reads the same tensors. The field
test (photos from other sources than the training photos) is for evaluation only: it is never
split, trained or tuned on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from torch.utils.data import TensorDataset

from .config import course_root
from .data import TransformSettings, scan_folder
from .features import batches_of_inputs

#: Where the field-test photos are, relative to the course folder (beside it, in ``shared/``).
FIELD_TEST = Path("..") / "shared" / "data" / "field-test"


def smaller(settings: TransformSettings, crop: int) -> TransformSettings:
    """The same transform at a smaller crop, resizing in the same proportion (e.g. 232/224 -> 116/112)."""
    return dataclasses.replace(settings, crop=crop, resize=round(settings.resize * crop / settings.crop))


def photo_tensors(paths: Sequence[str], labels: Sequence[int], settings: TransformSettings,
                  decode_threads: int = 1) -> TensorDataset:
    """Decode photos once with the evaluation transform: a dataset of ``(x, y)`` held in memory."""
    batches = list(batches_of_inputs([str(p) for p in paths], settings, decode_threads=decode_threads))
    x = torch.cat(batches) if batches else torch.empty(0, 3, settings.crop, settings.crop)
    return TensorDataset(x, torch.as_tensor(list(labels), dtype=torch.long))


def field_test_folder(folder: str | Path | None = None, root: Path | None = None) -> Path:
    """The field-test folder: ``folder`` if given, else :data:`FIELD_TEST` beside the course folder."""
    path = Path(folder).expanduser() if folder is not None else FIELD_TEST
    return path if path.is_absolute() else (course_root(root) / path).resolve()


def load_field_test(classes: Sequence[str], folder: str | Path | None = None) -> pd.DataFrame | None:
    """The field-test photos as a labels table with the training classes' labels, or ``None`` with a
    printed reason when the folder is missing or its classes are not the training classes.
    """
    path = field_test_folder(folder)
    if not path.is_dir():
        print(f"No field-test folder at {path}: the comparison on photos from elsewhere is skipped.")
        return None
    table = scan_folder(path)
    found = sorted(table["class_name"].unique())
    if found != sorted(classes):
        print(f"The field-test folder {path} has classes {found}, not the training classes {list(classes)}: "
              "the comparison on photos from elsewhere is skipped.")
        return None
    table = table.copy()
    table["label"] = [list(classes).index(name) for name in table["class_name"]]  # the training labels
    return table
