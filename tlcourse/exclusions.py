"""An exclusion list: photos a learner marked as mislabelled, left out of the data without touching them.

A photo in the wrong class folder, or one that shows neither class, teaches the model the wrong thing,
but deleting or moving it would change the learner's folder (and cannot be undone from a notebook). So
its path goes into a CSV in the output folder (``get_config().excluded_csv``, which lessons and
``tlcourse train`` pass on) and :func:`tlcourse.data.load_course_data` leaves it out; the photo files are
never written, moved or deleted. Excluded photos leave the split *after* it is drawn, so every other
photo stays in its part: marking one photo does not reshuffle the test set."""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError, DataNotFoundError
from .files import atomic_write

#: File name of the exclusion list inside the output folder.
EXCLUSIONS_FILE = "excluded.csv"

#: Why a photo is left out; the mistakes browser offers these.
REASONS = ("wrong label", "not a photo of the class")

COLUMNS = ["file_path", "class_name", "reason", "marked_at"]


class ExcludedPhotosWarning(UserWarning):
    """Data loading left out photos listed in an exclusion list (says how many and where)."""


def _key(file_path: str | Path) -> str:
    """Photos are matched by absolute path, as :func:`tlcourse.data.scan_folder` writes them."""
    return str(Path(file_path).expanduser().resolve())


class ExclusionList:
    """The photos marked as "leave out of the data", stored as a CSV (the course's: ``cfg.excluded_csv``).

    Every call reads the file again, so two notebooks (or a notebook and ``tlcourse train``) always see
    the same list. Writes are atomic. A missing file is an empty list."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        if self.path.suffix.lower() != ".csv":
            raise DataError(f"An exclusion list is a .csv file, got {self.path}. "
                             f"Use e.g. {self.path.with_name(EXCLUSIONS_FILE)} in the output folder.")

    def table(self) -> pd.DataFrame:
        """The marked photos: ``file_path``, ``class_name``, ``reason``, ``marked_at`` (UTC)."""
        if not self.path.is_file():
            return pd.DataFrame(columns=COLUMNS)
        try:
            table = pd.read_csv(self.path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            raise DataError(f"{self.path} is not a readable exclusion list ({error}). "
                             "Fix or delete that file; your photos are not affected.") from error
        if "file_path" not in table.columns:
            raise DataError(f"{self.path} has no file_path column, so it is not an exclusion list. "
                             "Fix or delete that file; your photos are not affected.")
        return table.reindex(columns=COLUMNS, fill_value="")

    def paths(self) -> set[str]:
        """Absolute paths of the marked photos."""
        return set(self.table()["file_path"])

    def __contains__(self, file_path: object) -> bool:
        return isinstance(file_path, (str, Path)) and _key(file_path) in self.paths()

    def __len__(self) -> int:
        return len(self.table())

    def reason(self, file_path: str | Path) -> str | None:
        """Why ``file_path`` is marked, or ``None`` when it is not."""
        table = self.table()
        hits = table.loc[table["file_path"] == _key(file_path), "reason"]
        return str(hits.iloc[0]) if len(hits) else None

    def mark(self, file_path: str | Path, reason: str = REASONS[0], class_name: str = "") -> None:
        """Add a photo to the list (marking it again only updates the reason)."""
        path = Path(file_path).expanduser()
        if not path.is_file():
            raise DataNotFoundError(f"Cannot mark {path}: there is no such photo.")
        key = _key(path)
        row = {"file_path": key, "class_name": class_name, "reason": reason,
               "marked_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        table = self.table()
        table = pd.concat([table[table["file_path"] != key], pd.DataFrame([row])], ignore_index=True)
        self._write(table)

    def unmark(self, file_path: str | Path) -> bool:
        """Take a photo off the list again. Returns whether it was on it."""
        table = self.table()
        keep = table["file_path"] != _key(file_path)
        if keep.all():
            return False
        self._write(table[keep])
        return True

    def _write(self, table: pd.DataFrame) -> None:
        with atomic_write(self.path) as handle:  # a reader never sees half a list
            table[COLUMNS].to_csv(handle, index=False)

    def __repr__(self) -> str:
        return f"ExclusionList({str(self.path)!r}, {len(self)} photo(s))"


def as_exclusion_list(exclusions: str | Path | ExclusionList | None) -> ExclusionList | None:
    """An :class:`ExclusionList` for a CSV path (``None`` stays ``None``: no list)."""
    if exclusions is None or isinstance(exclusions, ExclusionList):
        return exclusions
    return ExclusionList(exclusions)


def drop_excluded(table: pd.DataFrame, split, exclusions: str | Path | ExclusionList | None):
    """``split`` without the rows of ``table`` whose photo is on the ``exclusions`` list (a CSV path or an
    :class:`ExclusionList`; ``None``: ``split`` as it is). The other rows keep their part. Warns with
    :class:`ExcludedPhotosWarning` when photos were left out, so it never happens silently."""
    listing = as_exclusion_list(exclusions)
    marked = listing.paths() if listing is not None else set()
    if not marked:
        return split
    excluded = np.flatnonzero(table["file_path"].isin(marked).to_numpy())
    if len(excluded) == 0:
        return split
    warnings.warn(f"Left out {len(excluded)} photo(s) marked in {listing.path} (the files are untouched; unmark "
                  "them in the mistakes browser or with tlcourse.exclusions.ExclusionList(that file).unmark(photo)).",
                  ExcludedPhotosWarning, stacklevel=3)
    return type(split)(*(np.setdiff1d(getattr(split, part), excluded) for part in ("train", "val", "test")))
