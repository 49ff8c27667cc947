"""The ``tlcourse grade`` command: ``add_arguments(parser)`` and ``run(args)``. Grading itself (:mod:`tlcourse.grading`,
which imports nbformat) is imported when the command runs, so other commands start without it."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..config import course_root, get_config
from ..errors import TLCourseError

SUMMARY = "grade a class's lesson notebooks with the lessons' own exercise checkers"
DESCRIPTION = (
    "Grade SUBMISSIONS: a folder with one subfolder per learner holding their lesson notebooks under the "
    "lessons' file names (01_data.ipynb, ...), a zip of such folders, or flat <learner>_<lesson>.ipynb files. "
    "By default each notebook is run again, a copy in a temporary folder, in a fresh kernel with the course's "
    "settings in quick mode and the course's own checker cells, within a time limit; all runs share one "
    "temporary output folder, so the photos' features are computed once. --saved reads the verdicts the "
    "learners' own runs saved instead (fast, but it trusts their outputs). Prints a table of learners by "
    "exercises and a summary per exercise, and writes one feedback file per learner. Nothing in SUBMISSIONS "
    "is written. Grading runs the learners' code on this machine: see the README's 'Grading a class'.")
EPILOG = ("Examples:\n"
          "    tlcourse grade submissions/ --csv grades.csv\n"
          "    tlcourse grade class.zip --lesson 01_data --time-limit 120\n"
          "    tlcourse grade submissions/ --saved")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``tlcourse grade``."""
    parser.add_argument("submissions", metavar="SUBMISSIONS", type=Path, help="folder (or .zip) of the learners' notebooks")
    parser.add_argument("--saved", action="store_true", help="read the verdicts saved in the notebooks instead of running them")
    parser.add_argument("--lesson", action="append", metavar="NAME", dest="lessons",
                        help="grade only this lesson (e.g. 01_data; repeatable; default: every lesson handed in)")
    parser.add_argument("--time-limit", type=float, default=300.0, metavar="SECONDS",
                        help="time limit per notebook run (default: 300)")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="write the gradebook (one row per learner) as CSV")
    parser.add_argument("--feedback", type=Path, default=Path("feedback"), metavar="DIR",
                        help="folder for one feedback file per learner and verdicts.csv (default: feedback)")
    parser.add_argument("--course", type=Path, metavar="DIR",
                        help="the course folder whose notebooks/ hold the checkers (default: found from here)")


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def run(args: argparse.Namespace) -> int:
    """Grade, print the table and the summary, write the CSV and the feedback files; 0 when all were read."""
    from ..grading import grade

    notebooks = (args.course or course_root()) / "notebooks"
    if not notebooks.is_dir():
        raise TLCourseError(f"no notebooks/ folder in {notebooks.parent}: run from the course folder or pass --course")
    for out in [args.csv, args.feedback]:
        if out is not None and args.submissions.is_dir() and _inside(out, args.submissions):
            raise TLCourseError(f"{out} is inside the submissions {args.submissions}; write the results elsewhere")
    config = get_config()
    if not args.saved and not config.data_dir.is_dir():
        raise TLCourseError(f"the course's photos are not in {config.data_dir}: the lessons need them to run again; "
                            "set TLCOURSE_DATA, or use --saved to read the saved verdicts")
    start = time.monotonic()
    book = grade(args.submissions, notebooks, config, saved=args.saved, lessons=args.lessons,
                 time_limit=args.time_limit)
    print(book.table())
    print("\nPer exercise:")
    print(book.summary().to_string())
    if args.csv:
        book.write_csv(args.csv)
        print(f"\nGradebook: {args.csv}")
    files = book.write_feedback(args.feedback)
    print(f"Feedback: {len(files)} files in {args.feedback} (and verdicts.csv, every message)")
    runs = list(book.seconds.values())
    timing = f"; {len(runs)} runs, the first {runs[0]:.1f} s (it fills the shared feature cache)" if runs else ""
    if len(runs) > 1:
        timing += f", the others {sum(runs[1:]) / (len(runs) - 1):.1f} s each on average"
    print(f"Graded in {time.monotonic() - start:.1f} s{timing}", file=sys.stderr)
    return 0
