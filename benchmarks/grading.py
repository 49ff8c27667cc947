#!/usr/bin/env python
"""How long `tlcourse grade` takes for one lesson and a class of learners, in both modes. Prints a table.

    python benchmarks/grading.py [--lesson 03_weight_freezing] [--learners 30] [--time-limit 300]

Builds a class from the shipped lesson: a third of the learners with the right answers, a third with
wrong ones, a third as shipped (the answers from tests/test_exercises.py). Then it times

- the default mode: `tlcourse grade CLASS --lesson L`, each notebook run again in a fresh kernel in quick
  mode, one after the other, all sharing one temporary feature cache (the first run computes the
  photos' features, the others read them);
- `--saved`: a class (30 learners unless `--saved-learners`) after each learner's own run, read from the
  saved outputs. One learner's executed notebook is copied to every learner (its outputs, figures
  included, are what is read).

Each mode runs as its own `tlcourse grade` process; the per-notebook run times come from its report.
Timings depend on what else the machine is doing; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from figures import load_average  # benchmarks/ is on sys.path when this script runs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_exercises import ANSWERS, checkers  # noqa: E402  (the declared right and wrong answers)


def build_class(folder: Path, lesson: str, learners: int) -> None:
    for i in range(learners):
        nb = nbformat.read(ROOT / "notebooks" / f"{lesson}.ipynb", as_version=4)
        kind = ("right", "wrong", "shipped")[i % 3]
        for index, names in checkers(nb):
            if kind != "shipped":
                answer_cell = max(j for j in range(index) if nb.cells[j].cell_type == "code")
                pick = 0 if kind == "right" else 1
                nb.cells[answer_cell].source = "\n".join(f"{n} = {ANSWERS[f'{lesson}.ipynb'][n][pick]}" for n in names)
        (folder / f"learner{i + 1:02d}").mkdir(parents=True)
        nbformat.write(nb, folder / f"learner{i + 1:02d}" / f"{lesson}.ipynb")


def learner_run(source: Path, target: Path, env: dict[str, str]) -> None:
    """Run one learner's notebook as they would (stopping at the first error) and save it with its outputs."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(source, as_version=4)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute(env=env)
    except CellExecutionError:
        pass
    nbformat.write(nb, target)


def timed_grade(folder: Path, lesson: str, out: Path, *extra: str) -> tuple[float, str, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tlcourse", "grade", str(folder), "--lesson", lesson,
                           "--csv", str(out / "grades.csv"), "--feedback", str(out / "feedback"), *extra],
                          cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"tlcourse grade failed:\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout, done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lesson", default="03_weight_freezing")
    parser.add_argument("--learners", type=int, default=30)
    parser.add_argument("--saved-learners", type=int, default=30, help="learners in the --saved measurement")
    parser.add_argument("--time-limit", default="300")
    args = parser.parse_args()
    load = load_average()
    print(f"Grading {args.lesson} for {args.learners} learners; {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
          f"load average {load} before", flush=True)
    with tempfile.TemporaryDirectory(prefix="tlcourse-bench-grade-") as scratch:
        scratch = Path(scratch)
        build_class(scratch / "class", args.lesson, args.learners)

        run_s, report, log = timed_grade(scratch / "class", args.lesson, scratch / "run", "--time-limit", args.time_limit)
        solved = re.findall(r"^learner\d+\s+(\d+)/(\d+)", report, flags=re.M)
        print(report, flush=True)
        runs = re.search(r"the first ([\d.]+) s.*?the others ([\d.]+) s", log)
        first, others = (float(runs[1]), float(runs[2])) if runs else (run_s / args.learners,) * 2

        saved = scratch / "saved"
        env = {**os.environ, "TLCOURSE_SMOKE": "1", "TLCOURSE_OUTPUT": str(scratch / "learner-outputs")}
        build_class(saved, args.lesson, args.saved_learners)  # reading is cheap: always the full class
        learner_run(scratch / "class" / "learner01" / f"{args.lesson}.ipynb", scratch / "executed.ipynb", env)
        for notebook in saved.glob(f"*/{args.lesson}.ipynb"):
            shutil.copy(scratch / "executed.ipynb", notebook)
        size = (scratch / "executed.ipynb").stat().st_size
        saved_s, _, _ = timed_grade(saved, args.lesson, scratch / "saved-out", "--saved")

    load = load_average()
    print("\n| mode | learners | wall time | per learner | 30 learners at that rate |\n|---|---|---|---|---|")
    thirty = run_s + (30 - args.learners) * others  # the measured run, plus the missing learners at the warm rate
    print(f"| default (re-run, quick mode, shared feature cache) | {args.learners} | {run_s:.0f} s | "
          f"first {first:.1f} s, then {others:.1f} s | {thirty / 60:.1f} min |")
    print(f"| `--saved` ({size / 1e6:.1f} MB executed notebook each) | {args.saved_learners} | {saved_s:.1f} s | "
          f"{saved_s / args.saved_learners:.2f} s | {30 * saved_s / args.saved_learners:.1f} s |")
    print(f"\nsolved per learner (default mode): {sorted(set(s for s, _ in solved))} of {solved[0][1] if solved else '?'}; "
          f"load average {load} after", flush=True)


if __name__ == "__main__":
    main()
