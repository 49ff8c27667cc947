"""What the course's own lessons say about their exercises: ids, checker cells and titles."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

#: How a checker cell names its exercise: ``exercise("01_data", "resized_size")``.
EXERCISE_CALL = re.compile(r"""exercise\(\s*["']([\w.-]+)["']\s*,\s*["']([\w.-]+)["']\s*\)""")


@dataclass(frozen=True)
class Lesson:
    """One shipped lesson: its name (the notebook's stem), title and exercises with their checker cells."""

    name: str
    title: str
    exercises: tuple[str, ...]
    checkers: dict[str, str]  # exercise id -> the shipped checker cell's source

    @property
    def file_name(self) -> str:
        return f"{self.name}.ipynb"


def title_of(nb) -> str:
    """The first line of the notebook's first markdown cell ("# Lesson 1 · ..."), or ""."""
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.strip():
            return cell.source.strip().splitlines()[0].strip()
    return ""


def exercise_calls(source: str) -> list[tuple[str, str]]:
    """The (lesson, exercise) pairs a cell's source names, in order."""
    return EXERCISE_CALL.findall(source)


def checker_cells(nb, lesson: str) -> dict[str, int]:
    """exercise id -> index of the (first) code cell of ``nb`` that checks it for ``lesson``."""
    found: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            for named_lesson, exercise in exercise_calls(cell.source):
                if named_lesson == lesson:
                    found.setdefault(exercise, index)
    return found


def load_lessons(notebooks_dir: Path) -> dict[str, Lesson]:
    """The course's lessons that have exercises, by name, read from ``notebooks_dir``."""
    lessons = {}
    for path in sorted(Path(notebooks_dir).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        cells = checker_cells(nb, path.stem)
        if cells:
            ordered = sorted(cells, key=cells.get)
            lessons[path.stem] = Lesson(path.stem, title_of(nb), tuple(ordered),
                                        {e: nb.cells[cells[e]].source for e in ordered})
    return lessons


def which_lesson(nb, lessons: dict[str, Lesson]) -> str | None:
    """The lesson a notebook belongs to, judged from its checker cells, else its title; None if unknown."""
    named = [lesson for cell in nb.cells if cell.cell_type == "code"
             for lesson, _ in exercise_calls(cell.source) if lesson in lessons]
    if named:
        return max(set(named), key=named.count)
    title = title_of(nb)
    return next((lesson.name for lesson in lessons.values() if title and title == lesson.title), None)
