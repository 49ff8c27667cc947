"""Data: from a folder of class subfolders to a labels table, a Dataset, transforms and a split.

The course's data lives in a folder with one subfolder per class::

    data/
      dog/     001.jpg 002.jpg ...
      hotdog/  001.jpg ...

:func:`scan_folder` turns it into a table of ``(file_path, label, class_name)``;
:func:`write_labels_csv` / :func:`read_labels_csv` store that table;
:class:`CSVDataset` serves ``(image tensor, label)`` pairs from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

#: File endings the course reads as images (compared case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

#: ImageNet channel statistics; used only when no weights are given.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

LABEL_COLUMNS = ["file_path", "label", "class_name"]


# --------------------------------------------------------------------------- scanning
def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def find_classes(root: str | Path) -> list[str]:
    """Return the class names: the non-hidden subfolders of ``root``, sorted.

    Sorting makes the class -> label mapping the same on every machine (the
    original used ``os.scandir`` order, which depends on the file system).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Data folder not found: {root}. Create it with one subfolder per class "
            f"(e.g. {root / 'dog'}, {root / 'hotdog'}), run `tlcourse download-data --dest {root}`, "
            "or point TLCOURSE_DATA at your folder."
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not _is_hidden(p))
    if not classes:
        raise ValueError(
            f"No class subfolders in {root}. Put each class's images in its own subfolder, "
            f"e.g. {root / 'dog'} and {root / 'hotdog'}."
        )
    return classes


def list_images(class_dir: Path) -> list[Path]:
    """Image files under ``class_dir``, including nested subfolders, sorted.

    Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``) and files
    whose ending is not in :data:`IMAGE_EXTENSIONS` are left out.
    """
    files = []
    for path in class_dir.rglob("*"):
        rel = path.relative_to(class_dir)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(path)
    return sorted(files)


def scan_folder(root: str | Path) -> pd.DataFrame:
    """Scan a folder of class subfolders into a table ``file_path, label, class_name``.

    Labels are the positions of the class names in sorted order. Images in
    nested folders inside a class folder belong to that class.
    """
    root = Path(root)
    classes = find_classes(root)
    rows = []
    for label, name in enumerate(classes):
        for path in list_images(root / name):
            rows.append((str(path.resolve()), label, name))
    table = pd.DataFrame(rows, columns=LABEL_COLUMNS)
    empty = [name for name in classes if name not in set(table["class_name"])]
    if empty:
        raise ValueError(
            f"Class folder(s) without images in {root}: {', '.join(empty)}. "
            "Add images (" + ", ".join(IMAGE_EXTENSIONS) + ") or remove the empty folder."
        )
    return table


def write_labels_csv(table: pd.DataFrame, out_csv: str | Path) -> Path:
    """Write a labels table to CSV, creating its folder; the write is atomic."""
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_csv.with_name(out_csv.name + ".tmp")
    table[LABEL_COLUMNS].to_csv(tmp, index=False)
    tmp.replace(out_csv)  # atomic: a reader never sees half a file
    return out_csv


def create_csv(root: str | Path, out_csv: str | Path) -> pd.DataFrame:
    """The original notebook's ``create_csv``, fixed: scan ``root`` and write the table to ``out_csv``.

    The CSV goes to ``out_csv`` (by default the course's ``outputs/`` folder),
    not into the photo folder, so nothing of the learner's is touched.
    """
    root, out_csv = Path(root).resolve(), Path(out_csv).resolve()
    if root in out_csv.parents:
        raise ValueError(
            f"Refusing to write {out_csv} inside the photo folder {root}: derived files "
            "belong in the output folder (TLCOURSE_OUTPUT, default outputs/)."
        )
    table = scan_folder(root)
    write_labels_csv(table, out_csv)
    return table


def read_labels_csv(csv_path: str | Path) -> pd.DataFrame:
    """Read a labels CSV written by :func:`create_csv`, checking its columns."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"Labels CSV not found: {csv_path}. Create it with tlcourse.data.create_csv.")
    table = pd.read_csv(csv_path)
    missing = [c for c in LABEL_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"{csv_path} lacks column(s) {missing}; expected {LABEL_COLUMNS}. Recreate it with create_csv."
        )
    return table[LABEL_COLUMNS]


def class_names(table: pd.DataFrame) -> list[str]:
    """Class names ordered by label (``class_names(table)[label] == name``)."""
    pairs = table[["label", "class_name"]].drop_duplicates().sort_values("label")
    return list(pairs["class_name"])


# --------------------------------------------------------------------------- images
def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB, upright (EXIF orientation applied).

    Transparent images are composited on white, so a transparent background
    does not turn black.
    """
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, img)
        return img.convert("RGB")


class CSVDataset(Dataset):
    """A ``Dataset`` of ``(image, label)`` pairs backed by a labels table or CSV.

    ``transform`` is applied to the image only: labels need no transforming
    (the original passed ``(image, label)`` tuples through every transform).
    """

    def __init__(self, table: pd.DataFrame | str | Path, transform: Callable | None = None):
        self.table = read_labels_csv(table) if isinstance(table, (str, Path)) else table.reset_index(drop=True)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, idx: int):
        row = self.table.iloc[idx]
        img = load_image(row["file_path"])
        if self.transform is not None:
            img = self.transform(img)
        return img, int(row["label"])

    @property
    def labels(self) -> np.ndarray:
        return self.table["label"].to_numpy()

    @property
    def classes(self) -> list[str]:
        return class_names(self.table)


# --------------------------------------------------------------------------- transforms
class SquareCrop:
    """The original's hand-written transform, fixed: resize the short side to ``size``, crop a square.

    PIL's ``image.size`` is ``(width, height)``; the original read it as
    ``(height, width)``. ``random=False`` (evaluation) takes the centre crop,
    exactly as ``torchvision``'s ``Resize(size)`` + ``CenterCrop(size)`` do;
    ``random=True`` (training) takes a random square.
    """

    def __init__(self, size: int, random: bool = False):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        self.size = size
        self.random = random

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        short, long = min(width, height), max(width, height)
        new_long = int(self.size * long / short)  # truncates like torchvision's Resize
        new_w, new_h = (self.size, new_long) if width <= height else (new_long, self.size)
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
        if self.random:
            left = int(np.random.randint(new_w - self.size + 1))
            top = int(np.random.randint(new_h - self.size + 1))
        else:
            left = int(round((new_w - self.size) / 2.0))
            top = int(round((new_h - self.size) / 2.0))
        return image.crop((left, top, left + self.size, top + self.size))


class ImageToTensor:
    """The original's hand-written transform, fixed: PIL image -> float tensor ``C x H x W`` in [0, 1]."""

    def __call__(self, image: Image.Image) -> torch.Tensor:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # H x W x C
        return torch.from_numpy(array.transpose(2, 0, 1).copy())  # C x H x W


@dataclass(frozen=True)
class TransformSettings:
    """What the model's input pipeline needs: sizes and normalisation statistics."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_weights(cls, weights) -> "TransformSettings":
        """Take sizes and mean/std from a torchvision weights enum (ImageNet defaults for ``None``)."""
        if weights is None:
            return cls()
        preset = weights.transforms()
        return cls(
            resize=int(preset.resize_size[0]),
            crop=int(preset.crop_size[0]),
            mean=tuple(float(m) for m in preset.mean),
            std=tuple(float(s) for s in preset.std),
        )


def eval_transform(settings: TransformSettings = TransformSettings()) -> v2.Compose:
    """Deterministic evaluation transform: resize, centre crop, tensor, normalise.

    No randomness here: random crops at test time (as in the original) make the
    test accuracy change from run to run.
    """
    return v2.Compose(
        [
            v2.Resize(settings.resize, antialias=True),
            v2.CenterCrop(settings.crop),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(settings.mean), std=list(settings.std)),
        ]
    )


def train_transform(settings: TransformSettings = TransformSettings()) -> v2.Compose:
    """Training transform with augmentation (random crop and flip), then the same normalisation."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(settings.crop, scale=(0.5, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(settings.mean), std=list(settings.std)),
        ]
    )


def denormalize(x: torch.Tensor, settings: TransformSettings = TransformSettings()) -> torch.Tensor:
    """Undo :func:`eval_transform`'s normalisation so an input can be shown as a photo (values in [0, 1])."""
    mean = torch.tensor(settings.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.tensor(settings.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x * std + mean).clamp(0, 1)


# --------------------------------------------------------------------------- splitting
@dataclass(frozen=True)
class Split:
    """Row indices of the train, validation and test parts of a table."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def stratified_split(
    labels: Sequence[int] | np.ndarray,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> Split:
    """Split indices into disjoint train/val/test parts, keeping each class's share, from a seed.

    Each class is shuffled with ``numpy.random.default_rng(seed)`` and cut at
    ``round(n * val)`` and ``round(n * test)``; the rest is training data. The
    same seed and labels give the same split on every machine.
    """
    labels = np.asarray(labels)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        n_val = max(1, round(len(idx) * fractions[1])) if fractions[1] > 0 else 0
        n_test = max(1, round(len(idx) * fractions[2])) if fractions[2] > 0 else 0
        if len(idx) - n_val - n_test < 1:
            name = class_names[label] if class_names is not None else label
            raise ValueError(
                f"Class {name!r} has only {len(idx)} image(s): too few for a {fractions} "
                f"train/val/test split (it needs at least {n_val + n_test + 1}; aim for 20 or more). "
                "Add images to that class folder."
            )
        idx = rng.permutation(idx)
        parts["val"].append(idx[:n_val])
        parts["test"].append(idx[n_val : n_val + n_test])
        parts["train"].append(idx[n_val + n_test :])
    return Split(*(np.sort(np.concatenate(parts[k])) for k in ("train", "val", "test")))


def subset_per_class(table: pd.DataFrame, n: int | None, seed: int = 0) -> pd.DataFrame:
    """At most ``n`` rows per class, chosen with a seed (``None``: the whole table). Used by smoke mode."""
    if n is None:
        return table
    parts = [
        group.sample(n=min(n, len(group)), random_state=seed) for _, group in table.groupby("label", sort=True)
    ]
    return pd.concat(parts).sort_index().reset_index(drop=True)


def make_loader(
    dataset: Dataset,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader with a seeded shuffle.

    ``num_workers=0`` by default: worker processes in notebooks misbehave on
    Windows and macOS (they re-import the notebook's code).
    """
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


# --------------------------------------------------------------------------- putting it together
@dataclass
class CourseData:
    """A labels table with its seeded split and the transforms for the chosen weights."""

    table: pd.DataFrame
    split: Split
    classes: list[str]
    settings: TransformSettings

    def part(self, name: str) -> pd.DataFrame:
        """Rows of the ``train``, ``val`` or ``test`` part."""
        return self.table.iloc[getattr(self.split, name)].reset_index(drop=True)

    def dataset(self, name: str, augment: bool = False) -> CSVDataset:
        """Dataset of one part; ``augment=True`` uses the training transform (random crop and flip)."""
        transform = train_transform(self.settings) if augment else eval_transform(self.settings)
        return CSVDataset(self.part(name), transform)

    def loader(self, name: str, batch_size: int = 32, augment: bool = False, shuffle: bool | None = None,
               seed: int = 0, num_workers: int = 0) -> DataLoader:
        """DataLoader of one part; shuffled by default for ``train`` only."""
        shuffle = (name == "train") if shuffle is None else shuffle
        return make_loader(self.dataset(name, augment), batch_size, shuffle, seed, num_workers)


def load_course_data(
    data_dir: str | Path,
    settings: TransformSettings = TransformSettings(),
    seed: int = 0,
    per_class: int | None = None,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> CourseData:
    """Scan ``data_dir``, optionally keep ``per_class`` images per class, and split it from ``seed``."""
    table = subset_per_class(scan_folder(data_dir), per_class, seed)
    classes = class_names(table)
    split = stratified_split(table["label"].to_numpy(), fractions, seed, classes)
    return CourseData(table, split, classes, settings)
