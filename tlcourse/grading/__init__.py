"""``tlcourse grade``: grade a class's lesson notebooks with the lessons' own exercise checkers, offline.

:func:`grade` finds each learner's notebooks (:mod:`.submissions`), runs a copy of each again in a fresh
kernel or reads the verdicts saved in it (:mod:`.execute`), and returns a :class:`~.report.Gradebook`.
The submissions are only read: runs happen in temporary folders, with one shared output folder (and so
one feature cache) for all learners.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

from ..config import Config
from .course import Lesson, load_lessons
from .execute import Result, open_notebook, read_saved, run_notebook
from .report import Gradebook
from .submissions import Learner, SubmissionsError, find_learners, unpack_zip

__all__ = ["grade", "kernel_env", "Gradebook", "Result", "SubmissionsError"]


def kernel_env(config: Config, output_dir: Path) -> dict[str, str]:
    """The environment of a grading kernel: the course's settings as absolute paths, quick mode, offline."""
    env = dict(os.environ)
    env.update({"TLCOURSE_DATA": str(config.data_dir.resolve()), "TLCOURSE_FIELD_TEST": str(config.field_test_dir.resolve()),
                "TLCOURSE_OUTPUT": str(output_dir), "TLCOURSE_SMOKE": "1", "TLCOURSE_OFFLINE": "1",
                "TLCOURSE_DASHBOARD": "text", "MPLBACKEND": "Agg", "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
    return env


def grade(submissions: Path, notebooks_dir: Path, config: Config, *, saved: bool = False,
          lessons: list[str] | None = None, time_limit: float = 300.0,
          progress: Callable[[str], None] | None = None) -> Gradebook:
    """Grade every learner's notebooks under ``submissions`` (a folder or a zip); see the module's docstring."""
    course = load_lessons(notebooks_dir)
    if not course:
        raise SubmissionsError(f"no lesson with exercises in {notebooks_dir}: pass the course's notebooks/ folder")
    unknown = sorted(set(lessons or []) - set(course))
    if unknown:
        raise SubmissionsError(f"no lesson named {unknown}; the lessons are {sorted(course)}")
    say = progress or (lambda text: print(text, file=sys.stderr))
    with tempfile.TemporaryDirectory(prefix="tlcourse-grade-") as scratch:
        root = Path(submissions)
        if root.is_file() and root.suffix.lower() == ".zip":
            root = unpack_zip(root, Path(scratch) / "unzipped")
        learners = find_learners(root, list(course))
        chosen = lessons or [name for name in course if any(name in learner.notebooks for learner in learners)]
        if not chosen:
            raise SubmissionsError(f"no lesson notebooks found in {submissions}")
        book = Gradebook([], "saved" if saved else "run")
        env = kernel_env(config, Path(scratch) / "outputs")  # one output folder: the features are computed once
        for learner in learners:
            for name in chosen:
                book.results += _grade_one(learner, course[name], course, saved, env, time_limit, book, say)
    return book


def _grade_one(learner: Learner, lesson: Lesson, course: dict[str, Lesson], saved: bool, env: dict[str, str],
               time_limit: float, book: Gradebook, say: Callable[[str], None]) -> list[Result]:
    nb, results = open_notebook(learner.notebooks.get(lesson.name), learner.name, lesson, course)
    if results is None and saved:
        results = read_saved(nb, learner.name, lesson)
    elif results is None:
        say(f"running {learner.name}'s {lesson.file_name} ...")
        results, seconds = run_notebook(nb, learner.name, lesson, env=env, time_limit=time_limit)
        book.seconds[(learner.name, lesson.name)] = seconds
    return results
