"""Grade one notebook: run a copy again in a fresh kernel, or read the verdicts saved in it.

A run uses the course's own checker cells (a learner's edited checker is replaced by the shipped one; a
deleted one is added at the end), so a verdict cannot come from a changed check. Checker cells and the
answer cell before each are tagged ``raises-exception``: a wrong answer stops the learner's "Run All",
but the grader goes on to the next exercise. An error in any other cell ends the run there.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from ..exercises import ERROR, FAILED, NOT_ATTEMPTED, PASSED, records_in
from .course import Lesson, checker_cells, which_lesson

# Statuses of a notebook as a whole, given to each of its exercises that has no verdict of its own.
MISSING, INVALID, WRONG_LESSON = "missing", "invalid", "wrong_lesson"
TIMEOUT, NOT_REACHED, NO_RECORD = "timeout", "not_reached", "no_record"
STATUSES = (PASSED, FAILED, NOT_ATTEMPTED, ERROR, MISSING, INVALID, WRONG_LESSON, TIMEOUT, NOT_REACHED, NO_RECORD)
TAG = "raises-exception"


@dataclass(frozen=True)
class Result:
    """One learner's verdict on one exercise."""

    learner: str
    lesson: str
    exercise: str
    status: str
    message: str


def _each(learner: str, lesson: Lesson, status: str, message: str) -> list[Result]:
    return [Result(learner, lesson.name, e, status, message) for e in lesson.exercises]


def open_notebook(path: Path | None, learner: str, lesson: Lesson, lessons: dict[str, Lesson]):
    """(notebook, None), or (None, results) for a notebook that is missing, unreadable or another lesson's."""
    if path is None:
        return None, _each(learner, lesson, MISSING, f"no {lesson.file_name} handed in")
    try:
        nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, nbformat.reader.NotJSONError, ValueError,
            KeyError, TypeError, AttributeError) as error:
        return None, _each(learner, lesson, INVALID, f"{path.name} is not a readable notebook: {str(error)[:200]}")
    other = which_lesson(nb, lessons)
    if other is not None and other != lesson.name:
        return None, _each(learner, lesson, WRONG_LESSON, f"{path.name} is lesson {other}'s notebook, not {lesson.name}'s")
    return nb, None


def _error_of(cell) -> str | None:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return " ".join(f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".split())[:300]
    return None


def _verdicts(nb, learner: str, lesson: Lesson, cells: dict[str, int], stopped: tuple[str, str] | None) -> list[Result]:
    """Each exercise's record in its checker cell; otherwise why there is none."""
    results = []
    for exercise in lesson.exercises:
        index = cells.get(exercise)
        cell = nb.cells[index] if index is not None else None
        mine = [r for r in records_in(cell.outputs if cell else []) if (r.lesson, r.exercise) == (lesson.name, exercise)]
        if mine:
            results.append(Result(learner, lesson.name, exercise, mine[-1].status, mine[-1].message))
        elif cell is not None and _error_of(cell):
            answer = nb.cells[index - 1] if index > 0 else {}
            where = "your answer cell raised" if _error_of(answer) else "the checker raised"
            results.append(Result(learner, lesson.name, exercise, ERROR, f"{where} {_error_of(answer) or _error_of(cell)}"))
        elif stopped is not None:
            results.append(Result(learner, lesson.name, exercise, *stopped))
        else:
            results.append(Result(learner, lesson.name, exercise, NO_RECORD,
                                  "no saved verdict: the checker cell was not run, or its output was cleared"))
    return results


def read_saved(nb, learner: str, lesson: Lesson) -> list[Result]:
    """The verdicts the learner's own run left in the notebook (``--saved``)."""
    cells = checker_cells(nb, lesson.name)
    for exercise in lesson.exercises:  # records from anywhere, in case the learner moved things around
        if exercise not in cells:
            found = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and any(
                (r.lesson, r.exercise) == (lesson.name, exercise) for r in records_in(c.get("outputs", [])))]
            if found:
                cells[exercise] = found[-1]
    return _verdicts(nb, learner, lesson, cells, None)


def prepare(nb, lesson: Lesson) -> dict[str, int]:
    """Put the shipped checkers into ``nb`` (a copy), clear outputs, tag; return exercise -> cell index."""
    cells = checker_cells(nb, lesson.name)
    for exercise in lesson.exercises:
        if exercise in cells:  # keep what a learner typed above the checker (an answer, say), then the course's checker
            mine, shipped = nb.cells[cells[exercise]].source, lesson.checkers[exercise]
            start = mine.find(shipped.splitlines()[0])
            nb.cells[cells[exercise]].source = (mine[:start] if start > 0 else "") + shipped
        else:
            nb.cells.append(nbformat.v4.new_code_cell(lesson.checkers[exercise]))
            cells[exercise] = len(nb.cells) - 1
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    for index in cells.values():
        before = [i for i in range(index) if nb.cells[i].cell_type == "code"]
        for i in ([before[-1]] if before else []) + [index]:  # the answer cell, and the checker
            tags = nb.cells[i].metadata.setdefault("tags", [])
            if TAG not in tags:
                tags.append(TAG)
    return cells


def _first_line(cell) -> str:
    line = next((l for l in cell.source.splitlines() if l.strip()), "")
    return line[:60]


def run_notebook(nb, learner: str, lesson: Lesson, *, env: dict[str, str], time_limit: float,
                 kernel_name: str = "python3") -> tuple[list[Result], float]:
    """Run a prepared copy of ``nb`` in a fresh kernel in a temporary folder; (results, seconds)."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    cells = prepare(nb, lesson)
    start = time.monotonic()
    deadline = start + time_limit
    workdir = Path(tempfile.mkdtemp(prefix="tlcourse-grade-run-"))
    (workdir / "notebooks").mkdir()
    stopped = None
    try:
        client = NotebookClient(
            nb, kernel_name=kernel_name, startup_timeout=120, shutdown_kernel="immediate",
            timeout_func=lambda cell: max(1, int(deadline - time.monotonic()) + 1),  # the rest of the notebook's time
            resources={"metadata": {"path": str(workdir / "notebooks")}})
        try:
            client.execute(env=env)
        except CellTimeoutError:
            at = next((i for i, c in reversed(list(enumerate(nb.cells))) if c.cell_type == "code" and c.execution_count), 0)
            stopped = (TIMEOUT, f"the notebook ran past the {time_limit:.0f} s time limit "
                                f"(in cell {at + 1}, `{_first_line(nb.cells[at])}`)")
        except CellExecutionError:
            at = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code" and _error_of(c)
                       and TAG not in c.metadata.get("tags", [])), None)
            where = (f"cell {at + 1} (`{_first_line(nb.cells[at])}`) raised {_error_of(nb.cells[at])}"
                     if at is not None else "a cell failed")
            stopped = (NOT_REACHED, f"the lesson stopped before this exercise: {where}")
        except DeadKernelError as error:
            stopped = (NOT_REACHED, f"the kernel died ({str(error)[:120]})")
        except RuntimeError as error:  # the kernel could not start
            stopped = (NOT_REACHED, f"the kernel did not start ({str(error)[:120]})")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if time.monotonic() > deadline and stopped is None:
        stopped = (TIMEOUT, f"not reached within the {time_limit:.0f} s time limit")
    return _verdicts(nb, learner, lesson, cells, stopped), time.monotonic() - start
