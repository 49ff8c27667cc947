"""Data: from a folder of class subfolders (``data/dog/*.jpg``, ``data/hotdog/*.jpg``) to a labels
table, a Dataset, transforms and a seeded split.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps, UnidentifiedImageError, features
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from .errors import DataError, DataNotFoundError, ImageLoadError
from .files import atomic_write

#: ImageNet channel statistics; used only when no weights are given.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

LABEL_COLUMNS = ["file_path", "label", "class_name"]


# --------------------------------------------------------------------------- scanning
# A learner's photo folder is never clean: the README's "Preparing your own photos" lists what is
# used, skipped quietly (hidden and system files), skipped with a warning, or a clear error.

#: File endings the course reads as images (compared case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff") + (
    (".avif",) if features.check("avif") else ()
)

#: Files that operating systems put into folders; skipped without a warning.
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r"})

#: Images whose shortest side is below this many pixels are skipped: a 1x1 or 8x8 "photo"
#: is a tracking pixel or a broken thumbnail, and upscaled to 224 px it teaches the model nothing.
MIN_IMAGE_SIDE = 16

#: How thoroughly :func:`scan_folder` looks at each file, cheapest first (see its docstring).
CHECKS = ("none", "header", "decode")

# Endings a learner is likely to have, with a reason more useful than "not an image".
_KNOWN_OTHER_ENDINGS = {
    ".heic": "unsupported format: HEIC photo (iPhone), Pillow cannot read it; convert it to JPEG",
    ".heif": "unsupported format: HEIF photo, Pillow cannot read it; convert it to JPEG",
    ".svg": "unsupported format: vector drawing, not a photo; export it as PNG",
    ".pdf": "not an image: a PDF document",
    **dict.fromkeys((".raw", ".cr2", ".nef", ".dng"), "unsupported format: camera RAW file; export it as JPEG"),
}


class SkippedFilesWarning(UserWarning):
    """:func:`scan_folder` left out files that look like they were meant as images."""


@dataclass(frozen=True)
class SkippedFile:
    """A file (or hidden folder) that scanning left out: ``reason`` reads ``"<kind>: <details and fix>"``;
    ``quiet`` marks hidden and system files, skipped without a warning.
    """

    path: Path
    reason: str
    class_name: str | None = None
    quiet: bool = False

    @property
    def kind(self) -> str:
        """The short category of the reason (``"corrupt or truncated"``, ``"hidden file"``, ...)."""
        return self.reason.split(":", 1)[0]


def worth_warning(skipped: Sequence[SkippedFile]) -> list[SkippedFile]:
    """The skipped files that look meant as photos (not hidden or system files), sorted by path."""
    return sorted((s for s in skipped if not s.quiet), key=lambda s: s.path)


@dataclass
class FolderScan:
    """Everything :func:`inspect_folder` found; ``errors``: folder-level problems that stop training."""

    root: Path
    classes: list[str]
    table: pd.DataFrame
    skipped: list[SkippedFile]
    errors: list[Exception]
    check: str


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def find_classes(root: str | Path) -> list[str]:
    """The class names: the non-hidden subfolders of ``root``, sorted (the same labels on every machine)."""
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(
            f"Data folder not found: {root}. Create it with one subfolder per class (e.g. {root / 'dog'}, "
            f"{root / 'hotdog'}), run `tlcourse download-data --dest {root}`, or point TLCOURSE_DATA at your folder.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not _is_hidden(p))
    if not classes:
        loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        hint = (
            f" It holds {len(loose)} image(s) directly: did you point at one class folder? "
            f"Point TLCOURSE_DATA at the folder above it ({root.resolve().parent}) instead."
            if loose else ""
        )
        raise DataError(
            f"No class subfolders in {root}. Put each class's images in its own subfolder, "
            f"e.g. {root / 'dog'} and {root / 'hotdog'}.{hint}"
        )
    return classes


def _walk(class_dir: Path, class_name: str | None) -> tuple[list[Path], list[SkippedFile]]:
    """Candidate image files under ``class_dir`` (nested folders too; hidden ones not entered, link loops
    guarded) and what was left out.
    """
    files: list[Path] = []
    skipped: list[SkippedFile] = []
    seen: set[str] = set()

    def unreadable(error: OSError) -> None:  # os.walk would otherwise skip such a folder silently
        skipped.append(SkippedFile(Path(error.filename or class_dir),
                                   f"unreadable: {error.strerror or error}; check its permissions", class_name))

    for folder, dirnames, filenames in os.walk(class_dir, followlinks=True, onerror=unreadable):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree: do not walk it twice
            dirnames[:] = []
            continue
        seen.add(real)
        here = Path(folder)
        for name in sorted(dirnames):
            if name.startswith("."):
                skipped.append(SkippedFile(here / name, "hidden folder: not searched", class_name, quiet=True))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = here / name
            ending = path.suffix.lower()
            if name.startswith("."):
                skipped.append(SkippedFile(path, "hidden file", class_name, quiet=True))
            elif name.lower() in SYSTEM_FILES:
                skipped.append(SkippedFile(path, "system file", class_name, quiet=True))
            elif ending not in IMAGE_EXTENSIONS:
                reason = _KNOWN_OTHER_ENDINGS.get(ending, f"not an image: ending {ending or 'none'!r}")
                skipped.append(SkippedFile(path, reason, class_name))
            elif path.is_file():
                files.append(path)
            else:
                skipped.append(SkippedFile(path, "unreadable: a broken link or not a regular file", class_name))
    return sorted(files), skipped


def _too_large_reason(width: int, height: int) -> str | None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        return (
            f"too large: {width}x{height} = {width * height:,} pixels is over Pillow's decompression-bomb "
            f"limit of {limit:,} (PIL.Image.MAX_IMAGE_PIXELS); shrink it, e.g. to 2000 px on the long side"
        )
    return None


def inspect_image(path: str | Path, check: str = "header") -> tuple[dict[str, object] | None, str | None]:
    """Look at one image file: ``(info, None)`` when it is usable, ``(None, reason)`` when not.

    ``check``: ``"none"`` (only that it is not empty), ``"header"`` (format and size: empty, not an
    image, smaller than :data:`MIN_IMAGE_SIDE`, over Pillow's decompression-bomb limit) or ``"decode"``
    (also the pixels, as :func:`load_image` converts them: corrupt and truncated files too).
    Images over the bomb limit are skipped, not loaded: such a file is almost always a mistake.
    """
    if check not in CHECKS:
        raise ValueError(f"check must be one of {CHECKS}, got {check!r}")
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as error:
        return None, f"unreadable: {error.strerror or error}"
    if size == 0:
        return None, "empty file: 0 bytes; copy the photo again"
    info: dict[str, object] = {"width": None, "height": None, "mode": None, "format": None}
    if check == "none":
        return info, None
    try:
        with warnings.catch_warnings():
            # Between 1x and 2x the limit Pillow only warns; the size check below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                info.update(width=width, height=height, mode=img.mode, format=img.format)
                too_large = _too_large_reason(width, height)
                if too_large:
                    return None, too_large
                if min(width, height) < MIN_IMAGE_SIDE:
                    return None, (
                        f"too small: {width}x{height} px, the course needs at least {MIN_IMAGE_SIDE} px "
                        "on the short side; probably a placeholder or a broken thumbnail"
                    )
                if check == "decode":
                    # draft() lets libjpeg scale down while decoding (1/8 size): cheaper, and it
                    # still reads every byte, so truncation and broken data streams are found.
                    img.draft(None, (max(1, width // 8), max(1, height // 8)))
                    _to_rgb(img)
    except Image.DecompressionBombError as error:  # over twice the limit: Pillow refuses to open it
        return None, (f"too large: {str(error).rstrip('.')} (PIL.Image.MAX_IMAGE_PIXELS); shrink it, "
                      "e.g. to 2000 px on the long side")
    except UnidentifiedImageError:
        return None, "not an image: unreadable content (corrupt, or not really a photo despite its ending); replace it"
    except (OSError, ValueError, SyntaxError, struct.error, EOFError) as error:
        # Pillow reports damaged data with several types: "image file is truncated",
        # "broken data stream", SyntaxError from some plugins, struct.error on short headers.
        return None, f"corrupt or truncated: {error}; replace it with a good copy"
    return info, None


def inspect_folder(root: str | Path, check: str = "header") -> FolderScan:
    """Scan ``root`` like :func:`scan_folder`, but collect every problem instead of raising."""
    root = Path(root)
    if check not in CHECKS:
        raise ValueError(f"check must be one of {CHECKS}, got {check!r}")
    columns = LABEL_COLUMNS + ["width", "height", "mode", "format"]
    try:
        classes = find_classes(root)
    except (DataError, DataNotFoundError) as error:
        return FolderScan(root, [], pd.DataFrame(columns=columns), [], [error], check)
    skipped: list[SkippedFile] = [
        SkippedFile(p, "hidden folder: not a class", None, quiet=True)
        for p in sorted(root.iterdir()) if p.is_dir() and _is_hidden(p)
    ]
    for path in sorted(p for p in root.iterdir() if p.is_file()):
        if path.suffix.lower() in IMAGE_EXTENSIONS and not _is_hidden(path):
            skipped.append(SkippedFile(path, "outside any class folder: move it into its class's folder"))
        else:
            skipped.append(SkippedFile(path, "not in a class folder: ignored", quiet=True))
    rows = []
    for label, name in enumerate(classes):
        files, left_out = _walk(root / name, name)
        skipped += left_out
        for path in files:
            info, reason = inspect_image(path, check)
            if reason is not None:
                skipped.append(SkippedFile(path, reason, name))
            else:
                rows.append({"file_path": str(path.resolve()), "label": label, "class_name": name, **info})
    table = pd.DataFrame(rows, columns=columns)
    errors: list[Exception] = []
    if len(classes) == 1:
        errors.append(DataError(
            f"Only one class folder ({classes[0]}) in {root}: a classifier needs at least two classes. "
            f"Add a folder for each other class next to {root / classes[0]}, or point TLCOURSE_DATA at "
            "the folder that holds all the class folders."
        ))
    used = set(table["class_name"])
    for name in classes:
        if name not in used:
            left_out = worth_warning([s for s in skipped if s.class_name == name])
            detail = (f" ({len(left_out)} file(s) skipped, e.g. {left_out[0].path.name}: {left_out[0].reason})"
                      if left_out else "")
            errors.append(DataError(
                f"Class folder without usable images in {root}: {name}{detail}. "
                "Add images (" + ", ".join(IMAGE_EXTENSIONS) + ") or remove the empty folder."
            ))
    return FolderScan(root, classes, table, skipped, errors, check)


def label_folder(root: str | Path, class_names: Sequence[str],
                 skipped: list[SkippedFile] | None = None) -> pd.DataFrame:
    """Scan a folder to evaluate a trained model on: rows labelled with the *model's* class indices.

    Unlike :func:`scan_folder`, a folder with only some of the classes is fine (a field test of one
    class); a class folder the model does not know raises. Unusable files go to ``skipped``.
    """
    root = Path(root)
    find_classes(root)  # a missing folder or one without class subfolders: clear error, with the fix
    scan = inspect_folder(root, check="header")
    if skipped is not None:
        skipped.extend(scan.skipped)
    if scan.table.empty:
        raise scan.errors[0] if scan.errors else DataError(f"No images in the class folders of {root}.")
    unknown = sorted(set(scan.classes) - set(class_names))
    if unknown:
        raise DataError(
            f"{root} has class folder(s) {unknown} that the model does not know; it was trained on "
            f"{list(class_names)}. Use a folder whose subfolders are named like those classes."
        )
    table = scan.table.copy()
    table["label"] = table["class_name"].map({name: k for k, name in enumerate(class_names)}).astype(int)
    return table.reset_index(drop=True)


def scan_folder(root: str | Path, check: str = "header", skipped: list[SkippedFile] | None = None) -> pd.DataFrame:
    """Scan a folder of class subfolders into a table ``file_path, label, class_name``.

    Labels follow the sorted class names; images in nested folders belong to their class. Files
    that cannot be used (see :func:`inspect_image` for ``check``) are appended to ``skipped`` and,
    except hidden and system files, named in one :class:`SkippedFilesWarning`. Folder-level
    problems raise with the folder and the fix.
    """
    scan = inspect_folder(root, check)
    if skipped is not None:
        skipped.extend(scan.skipped)
    if scan.errors:
        raise scan.errors[0]
    loud = worth_warning(scan.skipped)
    if loud:
        shown = "; ".join(f"{s.path.relative_to(scan.root)} ({s.reason})" for s in loud[:10])
        more = f"; and {len(loud) - 10} more" if len(loud) > 10 else ""
        warnings.warn(
            f"Skipped {len(loud)} file(s) in {scan.root}: {shown}{more}. "
            f"See them all with tlcourse.verify.verify_folder({str(scan.root)!r}).",
            SkippedFilesWarning,
            stacklevel=2,
        )
    return scan.table[LABEL_COLUMNS].reset_index(drop=True)


def write_labels_csv(table: pd.DataFrame, out_csv: str | Path) -> Path:
    """Write a labels table to CSV, creating its folder; the write is atomic."""
    with atomic_write(out_csv) as handle:
        table[LABEL_COLUMNS].to_csv(handle, index=False)
    return Path(out_csv)


def create_csv(root: str | Path, out_csv: str | Path) -> pd.DataFrame:
    """The original notebook's ``create_csv``, fixed: scan ``root`` and write the table to ``out_csv``,
    never into the photo folder.
    """
    root, out_csv = Path(root).resolve(), Path(out_csv).resolve()
    if root in out_csv.parents:
        raise DataError(
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
        raise DataNotFoundError(f"Labels CSV not found: {csv_path}. Create it with tlcourse.data.create_csv.")
    table = pd.read_csv(csv_path)
    missing = [c for c in LABEL_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(
            f"{csv_path} lacks column(s) {missing}; expected {LABEL_COLUMNS}. Recreate it with create_csv."
        )
    return table[LABEL_COLUMNS]


def class_names(table: pd.DataFrame) -> list[str]:
    """Class names ordered by label (``class_names(table)[label] == name``)."""
    pairs = table[["label", "class_name"]].drop_duplicates().sort_values("label")
    return list(pairs["class_name"])


# --------------------------------------------------------------------------- images
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow image to 8-bit RGB, upright, transparency composited on white."""
    try:  # phones store portraits sideways plus a rotate tag
        img = ImageOps.exif_transpose(img)
    except Exception:  # a damaged EXIF block must not cost the learner the photo itself
        pass
    if img.mode in _SIXTEEN_BIT_MODES:
        # Pillow's own convert() clips 16-bit values at 255, turning a 16-bit photo
        # white; scale the 0..65535 range to 0..255 instead.
        values = np.asarray(img, dtype=np.float64) / 257.0
        img = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in img.info:
        # Composite on white rather than dropping alpha: the hidden colour of transparent
        # pixels is arbitrary (often black), which would frame the object in a colour
        # the model could learn instead of the object.
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Open an image as 8-bit RGB, upright (EXIF), whatever its format and mode.

    16-bit images are scaled, not clipped; transparency is composited on white; animations give
    their first frame. Raises :class:`ImageLoadError` naming the file, the reason and the fix.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            return _to_rgb(img)
    except FileNotFoundError:
        raise ImageLoadError(
            f"Image not found: {path}. If it is listed in a labels CSV, the folder changed since the CSV "
            "was made: recreate the CSV (tlcourse.data.create_csv).", path) from None
    except Image.DecompressionBombError as error:
        raise ImageLoadError(
            f"Cannot load {path}: {error} Shrink the image, or raise PIL.Image.MAX_IMAGE_PIXELS "
            "if you trust it.", path) from error
    except (OSError, ValueError, SyntaxError, struct.error, EOFError) as error:
        raise ImageLoadError(
            f"Cannot load image {path}: {error}. The file is empty, corrupt, truncated or not an image. "
            "Replace or remove it; check the whole folder first with "
            "tlcourse.verify.verify_folder(<data folder>) (or `tlcourse doctor`).", path) from error


class CSVDataset(Dataset):
    """``(image, label)`` pairs from a labels table or CSV; ``transform`` applies to the image only."""

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


# --------------------------------------------------------------------------- transforms
class SquareCrop:
    """The original's hand-written transform, fixed: resize the short side to ``size``, crop a square.

    PIL's ``image.size`` is ``(width, height)``. The original named the two the other way round,
    consistently, so its output was right (a naming slip); its defect was a random crop at test time.
    ``random=False`` takes the centre crop (as torchvision's ``Resize`` + ``CenterCrop``).
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
    """Deterministic evaluation transform: resize, centre crop, tensor, normalise (random crops at test
    time, as in the original, make the test accuracy change from run to run).
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

    Each class is shuffled with ``numpy.random.default_rng(seed)`` and cut at ``round(n * val)`` and
    ``round(n * test)``: the same seed and labels give the same split on every machine.
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
            raise DataError(
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
    """A DataLoader with a seeded shuffle; ``num_workers=0`` by default, as worker processes re-import
    the notebook on Windows and macOS.
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
    check: str = "header",
    skipped: list[SkippedFile] | None = None,
    exclusions: str | Path | None = None,
) -> CourseData:
    """Scan ``data_dir`` (``check`` and ``skipped`` as :func:`scan_folder`'s), optionally keep ``per_class``
    images per class, and split it from ``seed``. Photos listed in the ``exclusions`` CSV (the course's:
    ``cfg.excluded_csv``) are then left out of every part; see :mod:`tlcourse.exclusions`.
    """
    from .exclusions import drop_excluded

    with warnings.catch_warnings():
        if skipped is not None:  # the caller reports them
            warnings.simplefilter("ignore", SkippedFilesWarning)
        table = subset_per_class(scan_folder(data_dir, check, skipped), per_class, seed)
    classes = class_names(table)
    split = stratified_split(table["label"].to_numpy(), fractions, seed, classes)
    split = drop_excluded(table, split, exclusions)  # after the split: other photos keep their part
    return CourseData(table, split, classes, settings)
