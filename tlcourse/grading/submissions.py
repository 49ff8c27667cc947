"""Find each learner's lesson notebooks: a folder per learner, a zip of such folders, or flat LMS names.

Nothing here writes into the submissions: a zip is unpacked into a temporary folder the caller owns.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import TLCourseError

IGNORED_PREFIXES = (".", "_", "~")  # .ipynb_checkpoints, __MACOSX, editor backups


class SubmissionsError(TLCourseError):
    """The submissions cannot be read at all (not a folder or zip, an unsafe zip, no notebooks)."""


@dataclass
class Learner:
    """One learner's notebooks by lesson name (a lesson not in ``notebooks`` was not handed in)."""

    name: str
    notebooks: dict[str, Path] = field(default_factory=dict)


def _visible(path: Path | str) -> bool:
    return not Path(path).name.startswith(IGNORED_PREFIXES)


def unpack_zip(archive: Path, into: Path) -> Path:
    """Extract ``archive`` into ``into`` (refusing names that would land outside it); return the root."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.infolist():
                parts = PurePosixPath(member.filename.replace("\\", "/")).parts
                if member.filename.startswith("/") or ".." in parts:
                    raise SubmissionsError(f"{archive}: the zip holds an unsafe name {member.filename!r}; unpack it yourself")
            zipped.extractall(into)
    except zipfile.BadZipFile as error:
        raise SubmissionsError(f"{archive} is not a readable zip file ({error}); unpack it and pass the folder") from None
    root = into
    entries = [p for p in root.iterdir() if _visible(p)]
    while len(entries) == 1 and entries[0].is_dir() and not list(entries[0].glob("*.ipynb")):
        root = entries[0]  # a zip of one folder that holds the learners' folders
        entries = [p for p in root.iterdir() if _visible(p)]
    return root


def _lesson_for_file(path: Path, lesson_names: list[str]) -> str | None:
    """The lesson a learner's file name stands for: its exact name, else its number ("01_data-Copy1")."""
    if path.stem in lesson_names:
        return path.stem
    number = path.stem.split("_", 1)[0]
    matches = [name for name in lesson_names if number.isdigit() and name.split("_", 1)[0] == number]
    return matches[0] if len(matches) == 1 else None


def find_learners(root: Path, lesson_names: list[str]) -> list[Learner]:
    """Learners and their notebooks under ``root`` (a folder per learner, or flat ``<learner>_<lesson>.ipynb``)."""
    if not root.is_dir():
        raise SubmissionsError(f"{root} is not a folder or a zip file of the learners' notebooks")
    learners: dict[str, Learner] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and _visible(p)):
        learner = learners.setdefault(folder.name, Learner(folder.name))
        files = sorted(p for p in folder.rglob("*.ipynb") if all(_visible(q) for q in p.relative_to(folder).parts))
        for path in sorted(files, key=lambda p: (p.stem not in lesson_names, len(p.parts), p.name)):
            lesson = _lesson_for_file(path, lesson_names)
            if lesson:
                learner.notebooks.setdefault(lesson, path)  # the exact name first
    for path in sorted(p for p in root.glob("*.ipynb") if _visible(p)):
        for lesson in sorted(lesson_names, key=len, reverse=True):
            if path.stem.endswith("_" + lesson) and len(path.stem) > len(lesson) + 1:
                name = path.stem[: -len(lesson) - 1]
                learners.setdefault(name, Learner(name)).notebooks.setdefault(lesson, path)
                break
    if not learners:
        raise SubmissionsError(f"no learners found in {root}: expected one folder per learner holding lesson "
                               f"notebooks such as {lesson_names[0]}.ipynb, or files named <learner>_{lesson_names[0]}.ipynb")
    return sorted(learners.values(), key=lambda learner: learner.name.lower())
