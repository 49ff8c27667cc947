"""Exercise records (tlcourse.exercises) and ``tlcourse grade`` on a synthetic class built from the shipped lessons.

The class: one learner who solved everything, one who handed the lesson in as shipped, one whose answer
is wrong and whose lesson then raises an error, one whose notebook loops forever, one corrupt file, one
missing lesson and one notebook of another lesson under lesson 1's name. The slow test has each learner
run their notebook as a learner would (Run All, stopping at the first error), then grades the class in
both modes; the quick ones grade saved records, flat LMS names and a zip. The submissions must be
byte-for-byte the same afterwards.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError
from test_exercises import ANSWERS, checkers

import tlcourse.exercises as exercises
from tlcourse.cli import main
from tlcourse.exercises import ERROR, FAILED, MIME_TYPE, NOT_ATTEMPTED, PASSED, Record, exercise, records_in
from tlcourse.grading.course import load_lessons
from tlcourse.grading.execute import INVALID, MISSING, NO_RECORD, NOT_REACHED, TIMEOUT, WRONG_LESSON

ROOT = Path(__file__).resolve().parents[1]
LESSON, OTHER = "01_data", "02_feature_extractor"
EXERCISES = load_lessons(ROOT / "notebooks")[LESSON].exercises  # ("resized_size", "white_red", "my_stratified_split")
N = len(EXERCISES)  # the two answer checkers, then the coding exercise (its function is left as shipped here)


# --------------------------------------------------------------------------- the checker's record
@pytest.fixture
def shown(monkeypatch) -> list[dict]:
    """What the checkers display, as the bundles they pass to IPython's display."""
    bundles: list[dict] = []
    monkeypatch.setattr("IPython.display.display", lambda bundle, raw: bundles.append(bundle))
    monkeypatch.setattr("IPython.get_ipython", lambda: object())  # as in a kernel
    return bundles


def test_checker_records_each_verdict_and_shows_the_learner_one_message(shown):
    exercise("01_data", "answer").not_attempted()
    with exercise("01_data", "answer") as check:
        check.correct("Correct: 42")
    with pytest.raises(AssertionError, match="Hint: 6 x 7"):
        with exercise("01_data", "answer"):
            raise AssertionError("Not 41. Hint: 6 x 7")  # what a failing assert raises (pytest rewrites asserts here)
    with pytest.raises(TypeError):
        with exercise("01_data", "answer"):
            tuple(41)  # a half-written answer: the checker cannot even use it
    records = records_in([{"output_type": "display_data", "data": b} for b in shown])
    assert [r.status for r in records] == [NOT_ATTEMPTED, PASSED, FAILED, ERROR]
    assert records[1] == Record("01_data", "answer", PASSED, "Correct: 42")
    assert records[2].message == "Not 41. Hint: 6 x 7" and "int" in records[3].message
    # The learner sees the message once: in the display, or (wrong, error) in the traceback only.
    assert [b["text/plain"] for b in shown] == ["Fill in answer above, then run this cell again.", "Correct: 42", "", ""]
    assert records_in([{"output_type": "stream", "text": "Correct"}, {"output_type": "display_data",
                                                                      "data": {MIME_TYPE: {"status": "bogus"}}}]) == []


# --------------------------------------------------------------------------- a synthetic class
def _answer(nb, answers: dict[str, str]) -> None:
    """Write ``answers`` (variable -> Python expression) into the answer cell before each checker."""
    for index, names in checkers(nb):
        answer_cell = max(i for i in range(index) if nb.cells[i].cell_type == "code")
        if any(n in answers for n in names):
            nb.cells[answer_cell].source = "\n".join(f"{n} = {answers[n]}" for n in names)


def _shipped(name: str = LESSON):
    return nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)


def learner_notebooks() -> dict[str, dict[str, object]]:
    """learner -> {file name: notebook or raw bytes}, before any learner ran anything."""
    right = {n: r for n, (r, _) in ANSWERS[f"{LESSON}.ipynb"].items()}
    wrong_first = dict(right, **{EXERCISES[0]: ANSWERS[f"{LESSON}.ipynb"][EXERCISES[0]][1]})
    ada, ben, cleo, dora = _shipped(), _shipped(), _shipped(), _shipped()
    _answer(ada, right)
    _answer(cleo, wrong_first)  # the first answer wrong, then the lesson breaks before the second exercise
    first_checker = checkers(cleo)[0][0]
    cleo.cells.insert(first_checker + 1, nbformat.v4.new_code_cell('raise RuntimeError("my experiment broke")'))
    _answer(dora, right)
    dora.cells.insert(3, nbformat.v4.new_code_cell("while True:\n    pass"))
    corrupt = nbformat.writes(_shipped()).encode()[:500]
    return {"ada": {f"{LESSON}.ipynb": ada}, "ben": {f"{LESSON}.ipynb": ben}, "cleo": {f"{LESSON}.ipynb": cleo},
            "dora": {f"{LESSON}.ipynb": dora}, "eve": {f"{LESSON}.ipynb": corrupt},
            "finn": {f"{OTHER}.ipynb": _shipped(OTHER)}, "gus": {f"{LESSON}.ipynb": _shipped(OTHER)}}


def write_class(folder: Path, learners: dict[str, dict[str, object]], flat: bool = False) -> None:
    for learner, files in learners.items():
        for name, content in files.items():
            path = folder / f"{learner}_{name}" if flat else folder / learner / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content if isinstance(content, bytes) else nbformat.writes(content).encode())


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def grade(submissions: Path, out: Path, *extra: str) -> pd.DataFrame:
    """Run `tlcourse grade` on lesson 1; check the CSV round-trips; return it."""
    before = hashes(submissions) if submissions.is_dir() else {".": hashlib.sha256(submissions.read_bytes()).hexdigest()}
    csv = out / "grades.csv"
    status = main(["grade", str(submissions), "--lesson", LESSON, "--course", str(ROOT), "--csv", str(csv),
                   "--feedback", str(out / "feedback"), *extra])
    assert status == 0
    after = hashes(submissions) if submissions.is_dir() else {".": hashlib.sha256(submissions.read_bytes()).hexdigest()}
    assert after == before, "grading changed the submissions"
    frame = pd.read_csv(csv, index_col="learner")
    assert list(frame.columns) == ["solved", "exercises", *[f"{LESSON}/{e}" for e in EXERCISES]]
    assert sorted((out / "feedback").glob("*.md")) and (out / "feedback" / "verdicts.csv").is_file()
    return frame


def statuses(frame: pd.DataFrame) -> dict[str, list[str]]:
    return {learner: list(row[2:]) for learner, row in frame.iterrows()}


def _record_outputs(status: str, exercise_id: str, message: str) -> list:
    outputs = [nbformat.v4.new_output("display_data", data=Record(LESSON, exercise_id, status, message).bundle(
        message if status in (PASSED, NOT_ATTEMPTED) else ""))]
    if status == FAILED:
        outputs.append(nbformat.v4.new_output("error", ename="AssertionError", evalue=message, traceback=[]))
    return outputs


def saved_class() -> dict[str, dict[str, object]]:
    """The class as the learners saved it after their own Run All (outputs written here, not run)."""
    learners = learner_notebooks()
    verdicts = {"ada": [PASSED, PASSED], "ben": [NOT_ATTEMPTED, NOT_ATTEMPTED], "cleo": [FAILED, None], "dora": [None, None]}
    for learner, wanted in verdicts.items():
        nb = learners[learner][f"{LESSON}.ipynb"]
        for (index, _), exercise_id, status in zip(checkers(nb), EXERCISES, wanted):
            if status:
                nb.cells[index].outputs = _record_outputs(status, exercise_id, f"{status} message of {exercise_id}")
    return learners


SAVED = {"ada": [PASSED, PASSED, NO_RECORD], "ben": [NOT_ATTEMPTED, NOT_ATTEMPTED, NO_RECORD],
         "cleo": [FAILED, NO_RECORD, NO_RECORD], "dora": [NO_RECORD] * N, "eve": [INVALID] * N,
         "finn": [MISSING] * N, "gus": [WRONG_LESSON] * N}


def test_saved_mode_reads_each_learners_verdicts_from_folders_flat_names_and_a_zip(tmp_path, capsys):
    learners = saved_class()
    write_class(tmp_path / "folders", learners)
    write_class(tmp_path / "flat", learners, flat=True)
    with zipfile.ZipFile(tmp_path / "class.zip", "w") as zipped:
        for path in sorted((tmp_path / "folders").rglob("*")):
            zipped.write(path, Path("class") / path.relative_to(tmp_path / "folders"))

    frame = grade(tmp_path / "folders", tmp_path / "out-folders", "--saved")
    assert statuses(frame) == SAVED
    assert frame.loc["ada", "solved"] == 2 and frame.loc["cleo", "solved"] == 0
    printed = capsys.readouterr().out
    assert "trusts the learners" in printed and "failed message of resized_size (1x)" in printed
    feedback = (tmp_path / "out-folders" / "feedback" / "cleo.md").read_text()
    assert "resized_size: not solved (failed): failed message of resized_size" in feedback
    for other in ("flat", "class.zip"):
        assert statuses(grade(tmp_path / other, tmp_path / f"out-{other}", "--saved")) == SAVED, other


def test_grade_refuses_to_write_into_the_submissions(tmp_path, capsys):
    write_class(tmp_path / "class", {"ada": {f"{LESSON}.ipynb": _shipped()}})
    before = hashes(tmp_path / "class")
    assert main(["grade", str(tmp_path / "class"), "--saved", "--course", str(ROOT),
                 "--feedback", str(tmp_path / "class" / "feedback")]) == 1
    assert "inside the submissions" in capsys.readouterr().err and hashes(tmp_path / "class") == before


# --------------------------------------------------------------------------- the real thing: run, then grade
def _learner_runs(folder: Path, tmp_path: Path) -> None:
    """Each learner runs their notebook top to bottom, as Run All does (it stops at the first error), and saves it."""
    env = {"TLCOURSE_SMOKE": "1", "TLCOURSE_OUTPUT": str(tmp_path / "learner-outputs")}
    for path in sorted(folder.glob(f"*/{LESSON}.ipynb")):
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception:  # the corrupt file is handed in as it is
            continue
        if nb.cells[0].source != _shipped().cells[0].source:
            continue  # another lesson's notebook: handed in without running it
        try:
            NotebookClient(nb, timeout=20, kernel_name="python3",
                           resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute(env={**os.environ, **env})
        except (CellExecutionError, CellTimeoutError):
            pass
        nbformat.write(nb, path)


@pytest.mark.slow
def test_grade_runs_a_class_again_and_reads_its_saved_verdicts(tmp_path, real_weights, capsys):
    folder = tmp_path / "submissions"
    write_class(folder, learner_notebooks())
    _learner_runs(folder, tmp_path)
    # Their own runs reached the coding exercise, whose function is left as shipped: it recorded "not attempted".
    assert statuses(grade(folder, tmp_path / "saved", "--saved")) == {
        **SAVED, "ada": [PASSED, PASSED, NOT_ATTEMPTED], "ben": [NOT_ATTEMPTED] * N}

    frame = grade(folder, tmp_path / "run", "--time-limit", "45")
    assert statuses(frame) == {"ada": [PASSED, PASSED, NOT_ATTEMPTED], "ben": [NOT_ATTEMPTED] * N,
                               "cleo": [FAILED, NOT_REACHED, NOT_REACHED], "dora": [TIMEOUT] * N,
                               "eve": [INVALID] * N, "finn": [MISSING] * N, "gus": [WRONG_LESSON] * N}
    verdicts = pd.read_csv(tmp_path / "run" / "feedback" / "verdicts.csv").set_index(["learner", "exercise"])["message"]
    assert "Hint" in verdicts["cleo", EXERCISES[0]] and "my experiment broke" in verdicts["cleo", EXERCISES[1]]
    assert "45 s time limit" in verdicts["dora", EXERCISES[0]]
    assert "re-run in a fresh kernel" in capsys.readouterr().out


def test_a_run_uses_the_course_checkers_and_keeps_the_learners_answers():
    from tlcourse.grading.execute import TAG, prepare

    lesson = load_lessons(ROOT / "notebooks")[LESSON]
    nb = _shipped()
    (first, _), (second, _) = checkers(nb)
    nb.cells[first].source = "resized_size = (1, 2)\n" + nb.cells[first].source.replace("assert", "pass  #")  # "always right"
    del nb.cells[second]  # a deleted checker comes back at the end
    cells = prepare(nb, lesson)
    assert nb.cells[cells[EXERCISES[0]]].source == "resized_size = (1, 2)\n" + lesson.checkers[EXERCISES[0]]
    assert cells[EXERCISES[1]] == len(nb.cells) - 1 and nb.cells[-1].source == lesson.checkers[EXERCISES[1]]
    tagged = [i for i, c in enumerate(nb.cells) if TAG in c.metadata.get("tags", [])]
    code_before_last = max(i for i, c in enumerate(nb.cells[:-1]) if c.cell_type == "code")  # the second answer
    coding = cells[EXERCISES[2]]  # the coding exercise's checker, after the function's cell
    coding_function = max(i for i in range(coding) if nb.cells[i].cell_type == "code")
    # each checker, and the code cell before it
    assert tagged == [first - 1, first, coding_function, coding, code_before_last, len(nb.cells) - 1]
