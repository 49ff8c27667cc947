"""Every lesson is paced for a learner: at most 35 cells and 2,200 words of markdown; its first cell says
what the learner will be able to do (2-4 abilities), what they need first and how long it takes; its last
code cell prints the lesson's own wall time."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_CELLS, MAX_WORDS = 35, 2200
TIME_LINE = re.compile(r"\*\*Time:\*\* about (\d+) min on a 2-core laptop CPU with an empty cache, "
                       r"about (\d+) min with the cache warm")


def words(nb) -> int:
    return sum(len(re.findall(r"\S+", c.source)) for c in nb.cells if c.cell_type == "markdown")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_lesson_is_within_the_pacing_limits(path):
    nb = nbformat.read(path, as_version=4)
    assert len(nb.cells) <= MAX_CELLS, f"{path.name} has {len(nb.cells)} cells (at most {MAX_CELLS})"
    assert words(nb) <= MAX_WORDS, f"{path.name} has {words(nb)} words of markdown (at most {MAX_WORDS})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_lesson_opens_with_abilities_prerequisites_and_time_and_prints_its_own_time(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0].source
    assert nb.cells[0].cell_type == "markdown" and first.startswith("# Lesson ")
    abilities = first.split("**After this lesson you can:**", 1)
    assert len(abilities) == 2, f"{path.name}: the first cell should list '**After this lesson you can:**'"
    items = re.findall(r"^- .+", abilities[1].split("\n\n", 1)[0], flags=re.M)
    assert 2 <= len(items) <= 4, f"{path.name}: 2-4 abilities, found {len(items)}"
    assert "**You need first:**" in first, f"{path.name}: the first cell should say what the learner needs first"
    assert TIME_LINE.search(first), f"{path.name}: the first cell should give the measured time ({TIME_LINE.pattern})"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "lesson_started = time.perf_counter()" in code[0].source, f"{path.name}: the first code cell starts the clock"
    assert "time.perf_counter() - lesson_started" in code[-1].source, f"{path.name}: the last code cell prints the time"
