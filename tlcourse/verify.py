"""Check a photo folder before training: every file decoded once, a summary table per class, the
problems that stop training and a clear verdict (``print(verify_folder("data"))``). The folder is only read."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .data import LABEL_COLUMNS, SkippedFile, inspect_folder, stratified_split, worth_warning

#: Fewer images than this in a class gets a warning (training still runs).
RECOMMENDED_PER_CLASS = 20

#: A largest/smallest class size ratio above this gets a warning.
IMBALANCE_RATIO = 3.0

PROBLEM_COLUMNS = ["file_path", "class_name", "kind", "reason", "quiet"]


@dataclass
class FolderReport:
    """The result of :func:`verify_folder`: usable ``images`` (the scan's table, with sizes), skipped files
    as ``problems`` (``quiet``: hidden or system files), ``errors`` that stop training, each with the fix,
    and ``warnings`` worth fixing."""

    root: Path
    classes: list[str]
    images: pd.DataFrame
    problems: pd.DataFrame
    errors: list[str]
    warnings: list[str]
    check: str
    seconds: float
    exceptions: list[Exception] = field(default_factory=list, repr=False)
    skipped: list[SkippedFile] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        """True when nothing stops training (skipped files and warnings are allowed)."""
        return not self.errors

    @property
    def loud(self) -> pd.DataFrame:
        """The :attr:`problems` worth fixing: skipped files that look meant as photos."""
        return _frame(worth_warning(self.skipped))

    @property
    def table(self) -> pd.DataFrame:
        """The labels table of the usable images (what :func:`tlcourse.data.scan_folder` returns)."""
        return self.images[LABEL_COLUMNS].reset_index(drop=True)

    def summary(self) -> pd.DataFrame:
        """One row per class plus a ``total`` row: usable ``images``, ``skipped`` files (hidden and
        system files not counted), ``in_subfolders`` (usable images in nested folders) and the
        skip ``reasons`` counted by kind."""
        loud = self.loud
        rows = []
        for name in self.classes:
            mine = self.images[self.images["class_name"] == name]
            skipped = loud[loud["class_name"] == name]
            nested = sum(len(Path(p).relative_to(Path(self.root, name).resolve()).parts) > 1
                         for p in mine["file_path"])
            rows.append({"class": name, "images": len(mine), "skipped": len(skipped),
                         "in_subfolders": nested, "reasons": _count_kinds(skipped)})
        outside = loud[loud["class_name"].isna()]
        if len(outside):
            rows.append({"class": "(outside classes)", "images": 0, "skipped": len(outside),
                         "in_subfolders": 0, "reasons": _count_kinds(outside)})
        total = {"class": "total", "images": len(self.images), "skipped": len(loud),
                 "in_subfolders": sum(r["in_subfolders"] for r in rows), "reasons": _count_kinds(loud)}
        return pd.DataFrame(rows + [total]).set_index("class")

    def raise_if_not_ok(self) -> None:
        """Raise the first folder-level problem (``FileNotFoundError`` or ``ValueError``), if any."""
        if self.exceptions:
            raise self.exceptions[0]

    def __str__(self) -> str:
        lines = [f"Checked {self.root} ({self.check}): {len(self.classes)} class(es), "
                 f"{len(self.images):,} usable image(s), in {self.seconds:.1f} s."]
        if self.classes:
            lines += ["", self.summary().to_string()]
        loud = self.loud
        if len(loud):
            lines += ["", f"Skipped files ({len(loud)}):"]
            lines += [f"  {_relative(p, self.root)}: {r}" for p, r in zip(loud["file_path"], loud["reason"])]
        quiet = len(self.problems) - len(loud)
        if quiet:
            lines += ["", f"Also ignored: {quiet} hidden or system file(s)/folder(s) (see .problems)."]
        if self.warnings:
            lines += ["", "Warnings:"] + [f"  - {w}" for w in self.warnings]
        if self.errors:
            lines += ["", "Problems that stop training:"] + [f"  - {e}" for e in self.errors]
            lines += ["", "NOT READY: fix the problems above, then check again."]
        else:
            lines += ["", "READY: the usable images above are what training will see."]
        return "\n".join(lines)

    def __repr__(self) -> str:  # a notebook cell ending in `report` shows the readable report
        return str(self)


def _frame(skipped: list[SkippedFile]) -> pd.DataFrame:
    return pd.DataFrame([{"file_path": str(s.path), "class_name": s.class_name, "kind": s.kind, "reason": s.reason,
                          "quiet": s.quiet} for s in skipped], columns=PROBLEM_COLUMNS)


def _count_kinds(problems: pd.DataFrame) -> str:
    counts = problems["kind"].value_counts(sort=True)
    return ", ".join(f"{n} {kind}" for kind, n in counts.items())


def _relative(path: str | Path, root: Path) -> str:
    path = Path(path)
    base = next((b for b in (root, root.resolve()) if path.is_relative_to(b)), None)
    return path.relative_to(base).as_posix() if base is not None else str(path)


def verify_folder(root: str | Path, check: str = "decode",
                  fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> FolderReport:
    """Check a folder of class subfolders before training, without changing anything in it. Every image
    is decoded as training will decode it (``check="decode"``; ``"header"`` is quicker but misses truncated
    files). Never raises for the folder's content: :attr:`FolderReport.errors` lists problems and fixes."""
    started = time.perf_counter()
    scan = inspect_folder(root, check)
    exceptions = list(scan.errors)
    warnings: list[str] = []
    counts = scan.table["class_name"].value_counts()
    if not exceptions and len(counts) >= 2:
        try:
            stratified_split(scan.table["label"].to_numpy(), fractions, 0, scan.classes)
        except ValueError as error:
            exceptions.append(error)
    for name in scan.classes:
        n = int(counts.get(name, 0))
        if 0 < n < RECOMMENDED_PER_CLASS:
            warnings.append(f"Class {name!r} has only {n} usable image(s); aim for {RECOMMENDED_PER_CLASS} "
                            "or more per class for a useful model.")
    if len(counts) >= 2 and counts.min() > 0 and counts.max() / counts.min() > IMBALANCE_RATIO:
        warnings.append(
            f"Classes are unbalanced ({', '.join(f'{k} {v}' for k, v in counts.sort_index().items())}): "
            "accuracy then mostly reflects the big class; add images to the small one(s).")
    return FolderReport(root=Path(root), classes=scan.classes, images=scan.table.reset_index(drop=True),
                        problems=_frame(sorted(scan.skipped, key=lambda s: s.path)),
                        errors=[str(e) for e in exceptions], warnings=warnings, check=check,
                        seconds=time.perf_counter() - started, exceptions=exceptions, skipped=list(scan.skipped))
