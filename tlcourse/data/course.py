"""The course's data: a labels table with its split, as Datasets and DataLoaders for the model's transform."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from ..exclusions import drop_excluded
from .folders import SkippedFile, SkippedFilesWarning, class_names, read_labels_csv, scan_folder
from .images import load_image
from .split import Split, stratified_split, subset_per_class
from .transforms import TransformSettings, eval_transform, train_transform


class CSVDataset(Dataset):
    """``(image, label)`` pairs from a labels table or CSV; ``transform`` applies to the image only.
    Taught in lesson 1."""

    def __init__(self, table: pd.DataFrame | str | Path, transform: Callable | None = None):
        self.table = read_labels_csv(table) if isinstance(table, (str, Path)) else table.reset_index(drop=True)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, idx: int):
        row = self.table.iloc[idx]
        img = load_image(row["file_path"])  # raises ImageLoadError naming the file
        if self.transform is not None:
            img = self.transform(img)
        return img, int(row["label"])

    @property
    def labels(self) -> np.ndarray:
        return self.table["label"].to_numpy()

    @property
    def classes(self) -> list[str]:
        return class_names(self.table)


def make_loader(dataset: Dataset, batch_size: int = 32, shuffle: bool = False, seed: int = 0,
                num_workers: int = 0) -> DataLoader:
    """A DataLoader with a seeded shuffle; ``num_workers=0`` by default, as worker processes re-import
    the notebook on Windows and macOS."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed),
                      num_workers=num_workers, persistent_workers=num_workers > 0)


@dataclass
class CourseData:
    """A labels table with its seeded split, and the input transform settings of the model that uses it:
    pass ``model.transform_settings`` to :func:`load_course_data`, or leave them out and the first model that
    trains on the data sets them (:meth:`use_settings`). A model with other settings is refused: its features
    and predictions would be computed at another input size."""

    table: pd.DataFrame
    split: Split
    classes: list[str]
    settings: TransformSettings | None = None

    def use_settings(self, settings: TransformSettings) -> "CourseData":
        """Adopt a model's transform ``settings`` (when none are set yet) or check they are the same."""
        if self.settings is None:
            self.settings = settings
        elif self.settings != settings:
            raise DataError(
                f"This CourseData was built for the input transform {self.settings}, but the model expects "
                f"{settings}. Build the data with the model's own settings: load_course_data(folder, "
                "model.transform_settings, ...), or leave settings out and the model's are used.")
        return self

    def part(self, name: str) -> pd.DataFrame:
        """Rows of the ``train``, ``val`` or ``test`` part."""
        return self.table.iloc[getattr(self.split, name)].reset_index(drop=True)

    def dataset(self, name: str, augment: bool = False) -> CSVDataset:
        """Dataset of one part; ``augment=True`` uses the training transform (the course's augmentation)."""
        if self.settings is None:
            raise DataError("This CourseData has no input transform yet: pass the model's settings, "
                            "load_course_data(folder, model.transform_settings, ...), or call "
                            "data.use_settings(model.transform_settings).")
        transform = train_transform(self.settings) if augment else eval_transform(self.settings)
        return CSVDataset(self.part(name), transform)

    def loader(self, name: str, batch_size: int = 32, augment: bool = False, shuffle: bool | None = None,
               seed: int = 0, num_workers: int = 0) -> DataLoader:
        """DataLoader of one part; shuffled by default for ``train`` only."""
        shuffle = (name == "train") if shuffle is None else shuffle
        return make_loader(self.dataset(name, augment), batch_size, shuffle, seed, num_workers)


def load_course_data(data_dir: str | Path, settings: TransformSettings | None = None, seed: int = 0,
                     per_class: int | None = None, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                     check: str = "decode", skipped: list[SkippedFile] | None = None,
                     exclusions: str | Path | None = None) -> CourseData:
    """Scan ``data_dir``, optionally keep ``per_class`` images per class, and split it from ``seed``.
    Taught in lesson 1.

    Every photo is decoded first (``check="decode"``): an empty, truncated or corrupt file is left out and
    named (one :class:`SkippedFilesWarning`, or in ``skipped``) instead of stopping training later.
    ``settings``: the model's transform settings (``None``: the first model's, see :class:`CourseData`).
    Photos listed in the ``exclusions`` CSV (``cfg.excluded_csv``) are left out of every part."""
    with warnings.catch_warnings():
        if skipped is not None:  # the caller reports them
            warnings.simplefilter("ignore", SkippedFilesWarning)
        table = subset_per_class(scan_folder(data_dir, check, skipped), per_class, seed)
    classes = class_names(table)
    split = stratified_split(table["label"].to_numpy(), fractions, seed, classes)
    split = drop_excluded(table, split, exclusions)  # after the split: other photos keep their part
    return CourseData(table, split, classes, settings)
