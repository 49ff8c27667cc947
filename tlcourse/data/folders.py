"""Folders: from a folder of class subfolders (``data/dog/*.jpg``, ``data/hotdog/*.jpg``) to a labels table.

A learner's photo folder is never clean: the README's "Preparing your own photos" lists what is
used, skipped quietly (hidden and system files), skipped with a warning, or a clear error."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
from PIL import features

from ..errors import DataError, DataNotFoundError
from ..files import atomic_write
from .images import CHECKS, inspect_image

LABEL_COLUMNS = ["file_path", "label", "class_name"]

#: File endings the course reads as images (compared case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff") + (
    (".avif",) if features.check("avif") else ()
)

#: Files that operating systems put into folders; skipped without a warning.
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r"})

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
    ``quiet`` marks hidden and system files, skipped without a warning."""

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
        hint = (f" It holds {len(loose)} image(s) directly: did you point at one class folder? "
                f"Point TLCOURSE_DATA at the folder above it ({root.resolve().parent}) instead." if loose else "")
        raise DataError(f"No class subfolders in {root}. Put each class's images in its own subfolder, "
                        f"e.g. {root / 'dog'} and {root / 'hotdog'}.{hint}")
    return classes


def _walk(class_dir: Path, class_name: str | None) -> tuple[list[Path], list[SkippedFile]]:
    """Candidate image files under ``class_dir`` (nested folders too; hidden ones not entered, link loops
    guarded) and what was left out."""
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
    skipped: list[SkippedFile] = [SkippedFile(p, "hidden folder: not a class", None, quiet=True)
                                  for p in sorted(root.iterdir()) if p.is_dir() and _is_hidden(p)]
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
        errors.append(DataError(f"Only one class folder ({classes[0]}) in {root}: a classifier needs at least two "
                                f"classes. Add a folder for each other class next to {root / classes[0]}, or point "
                                "TLCOURSE_DATA at the folder that holds all the class folders."))
    used = set(table["class_name"])
    for name in classes:
        if name not in used:
            left_out = worth_warning([s for s in skipped if s.class_name == name])
            detail = (f" ({len(left_out)} file(s) skipped, e.g. {left_out[0].path.name}: {left_out[0].reason})"
                      if left_out else "")
            errors.append(DataError(f"Class folder without usable images in {root}: {name}{detail}. "
                                    "Add images (" + ", ".join(IMAGE_EXTENSIONS) + ") or remove the empty folder."))
    return FolderScan(root, classes, table, skipped, errors, check)


def label_folder(root: str | Path, class_names: Sequence[str],
                 skipped: list[SkippedFile] | None = None) -> pd.DataFrame:
    """Scan a folder to evaluate a trained model on: rows labelled with the *model's* class indices. A
    folder with only some of the classes is fine; a class folder the model does not know raises."""
    root = Path(root)
    find_classes(root)  # a missing folder or one without class subfolders: clear error, with the fix
    scan = inspect_folder(root, check="header")
    if skipped is not None:
        skipped.extend(scan.skipped)
    if scan.table.empty:
        raise scan.errors[0] if scan.errors else DataError(f"No images in the class folders of {root}.")
    unknown = sorted(set(scan.classes) - set(class_names))
    if unknown:
        raise DataError(f"{root} has class folder(s) {unknown} that the model does not know; it was trained on "
                        f"{list(class_names)}. Use a folder whose subfolders are named like those classes.")
    table = scan.table.copy()
    table["label"] = table["class_name"].map({name: k for k, name in enumerate(class_names)}).astype(int)
    return table.reset_index(drop=True)


def scan_folder(root: str | Path, check: str = "header", skipped: list[SkippedFile] | None = None) -> pd.DataFrame:
    """Scan a folder of class subfolders into a table ``file_path, label, class_name``.

    Labels follow the sorted class names; images in nested folders belong to their class. Unusable files
    (see :func:`inspect_image` for ``check``) go to ``skipped`` and, except hidden and system files, into
    one :class:`SkippedFilesWarning`. Folder-level problems raise with the folder and the fix."""
    scan = inspect_folder(root, check)
    if skipped is not None:
        skipped.extend(scan.skipped)
    if scan.errors:
        raise scan.errors[0]
    loud = worth_warning(scan.skipped)
    if loud:
        shown = "; ".join(f"{s.path.relative_to(scan.root)} ({s.reason})" for s in loud[:10])
        more = f"; and {len(loud) - 10} more" if len(loud) > 10 else ""
        warnings.warn(f"Skipped {len(loud)} file(s) in {scan.root}: {shown}{more}. See them all with "
                      f"tlcourse.verify.verify_folder({str(scan.root)!r}).", SkippedFilesWarning, stacklevel=2)
    return scan.table[LABEL_COLUMNS].reset_index(drop=True)


def write_labels_csv(table: pd.DataFrame, out_csv: str | Path) -> Path:
    """Write a labels table to CSV, creating its folder; the write is atomic."""
    with atomic_write(out_csv) as handle:
        table[LABEL_COLUMNS].to_csv(handle, index=False)
    return Path(out_csv)


def create_csv(root: str | Path, out_csv: str | Path) -> pd.DataFrame:
    """The original notebook's ``create_csv``, fixed: scan ``root`` and write the table to ``out_csv``,
    never into the photo folder. Taught in lesson 1."""
    root, out_csv = Path(root).resolve(), Path(out_csv).resolve()
    if root in out_csv.parents:
        raise DataError(f"Refusing to write {out_csv} inside the photo folder {root}: derived files "
                        "belong in the output folder (TLCOURSE_OUTPUT, default outputs/).")
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
        raise DataError(f"{csv_path} lacks column(s) {missing}; expected {LABEL_COLUMNS}. Recreate it with create_csv.")
    return table[LABEL_COLUMNS]


def class_names(table: pd.DataFrame) -> list[str]:
    """Class names ordered by label (``class_names(table)[label] == name``)."""
    pairs = table[["label", "class_name"]].drop_duplicates().sort_values("label")
    return list(pairs["class_name"])
