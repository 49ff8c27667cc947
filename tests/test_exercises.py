"""Every lesson on a learner's own folder, and every exercise checker with a right and a wrong answer.

The lessons are executed in a kernel (quick mode, ``TLCOURSE_SMOKE=1``) on a folder built like the
README's example of a learner's own folder, not the course's: three classes with spaced, non-ASCII
names ("chien de garde", "hot dög", "ñandú") copied from disjoint subsets of the shared photos, each
with a nested subfolder ("holiday 2024/"), ``.png``, ``.webp`` and upper-case ``.JPG`` files, and in
one class a truncated JPEG and a zero-byte file, which the lessons must skip and name. Nothing may
assume two classes, the names dog and hotdog, flat folders or clean files, and the accuracy checks
must print a verdict instead of stopping the notebook.

Then, in the same kernel, after the lesson's last cell, each exercise checker runs twice: with the
right answer (it must say "Correct") and with a wrong one (it must raise ``AssertionError`` with a
hint). Each time, and for the lesson's own run with the answers as shipped, the record the checker saves in
the notebook (``tlcourse.exercises``) must agree with what the learner sees: passed, failed with that
hint, not attempted. An exercise checker is a code cell that starts with ``if <answer> is None``; its answers are
declared in ``ANSWERS`` below, and a lesson whose checkers have no declared answers fails this test,
so lessons added later are covered too.
"""

from __future__ import annotations

import importlib
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from PIL import Image

from tlcourse import exercises
from tlcourse.exercises import FAILED, NOT_ATTEMPTED, PASSED, exercise, records_in
from tlcourse.grading.course import exercise_calls

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# A checker cell may import the record helper first: `from tlcourse.exercises import exercise`.
CHECKER = re.compile(r"^(?:from tlcourse\.exercises import exercise\n+)?if (\w+) is None(?: or (\w+) is None)*:")
RIGHT, WRONG = "RIGHT-ANSWER-RUN", "WRONG-ANSWER-RUN"

# Per notebook: answer variable -> (right answer, wrong answer), as Python expressions evaluated in the
# executed lesson's namespace. Constants are worked out by hand (see each lesson's solution); answers
# that depend on the trained model are computed from the results table by another route than the checker.
ANSWERS: dict[str, dict[str, tuple[str, str]]] = {
    "01_data.ipynb": {
        "resized_size": ("(309, 232)", "(341, 256)"),  # MobileNetV2's weights resize the short side to 232
        "white_red": ("(1 - 0.485) / 0.229", "1.0"),
    },
    "02_feature_extractor.ipynb": {
        "features_numbers": ("512 * 10 * 10", "512 * 7 * 7"),
        "avgpool_numbers": ("512 * 7 * 7", "512 * 10 * 10"),
        "head_parameters": ("1280 * 256 + 256 + 256 * 2 + 2", "1280 * 2 + 2"),
    },
    "03_weight_freezing.ipynb": {
        "damaged_part": ('"head"', '"backbone"'),
    },
    "04_discriminative_lr.ipynb": {
        "slow_parameters": ("2_223_872", "2_223_872 + 1280 * 2 + 2"),
    },
    "05_evaluation.ipynb": {
        "second_called_first": ("int(((results['label'] == 1) & (results['pred'] == 0)).sum())",
                                "int(((results['label'] == 1) & (results['pred'] == 0)).sum()) + 1"),
        "lowest_confidence": ("round(float(results['confidence'].min()), 2)",
                              "round(float(results['confidence'].min()), 2) + 0.1"),
    },
    "06_learning_rates.ipynb": {
        "suggested_rate": ("float(f'{finder.suggestion:.1g}')", "finder.suggestion * 10"),  # read to 1 figure
    },
    "07_real_world.ipynb": {
        "photos_needed": ("73", "60"),  # all right: the Wilson lower end n / (n + 1.96**2) > 0.95 from n = 73
    },
    "08_confidence.ipynb": {
        "ece_by_hand": ("0.5 * abs(0.9 - 0.7) + 0.5 * abs(0.6 - 0.6)", "abs(0.9 - 0.7)"),  # two bins of 10 photos
        "unsure_count": ("int(unsure.sum())", "int(unsure.sum()) + 1"),
    },
}

# Three classes, disjoint photos, 20 usable each (the quick mode would take up to 40): small, so the test is cheap.
OWN_CLASSES = {"chien de garde": ("dog", 0), "hot dög": ("hotdog", 0), "ñandú": ("dog", 20)}
PER_CLASS = 20
NESTED = "holiday 2024"  # a subfolder of a class folder: its photos belong to the class
BROKEN_CLASS = "hot dög"  # holds the two files that cannot be used
TRUNCATED, EMPTY = "cut off.jpg", "empty.jpg"


# Coding exercises: the learner writes a function, and the checker cell runs
# `exercise(lesson, id).run(check_..., function)`. Their variants live in tests/exercise_code/<lesson>.py as
# CODE = {exercise id: {"checker": "tlcourse.checkers.<module>:<checker>", "function": "<the learner's name>",
#                       "correct": source of a correct implementation that differs from the solution,
#                       "wrong": source of a typical mistake, "hint": words the hint must contain,
#                       "stub": source of a half-written answer}}.
CODE_RUN = re.compile(r"exercise\([^)]*\)\.run\(")
VARIANTS = ("correct", "wrong", "stub")


def coding_variants() -> dict[str, dict[str, dict[str, str]]]:
    """lesson stem -> exercise id -> its variants (tests/exercise_code/<stem>.py)."""
    found = {}
    for path in sorted((Path(__file__).parent / "exercise_code").glob("[0-9]*.py")):
        found[path.stem] = importlib.import_module(f"tests.exercise_code.{path.stem}").CODE
    return found


def coding_cells(nb, lesson: str) -> dict[str, int]:
    """exercise id -> index of the coding checker cell (the one that calls ``.run(...)``)."""
    return {exercise_id: index for index, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and CODE_RUN.search(cell.source)
            for named, exercise_id in exercise_calls(cell.source) if named == lesson}


def load_checker(dotted: str):
    module, name = dotted.split(":")
    return getattr(importlib.import_module(module), name)


CODING = [(lesson, exercise_id) for lesson, code in coding_variants().items() for exercise_id in code]


def test_every_lesson_has_a_coding_exercise_and_each_has_variants():
    """Every lesson has a coding exercise; each coding checker cell has variants, and each variant set a cell."""
    variants, problems = coding_variants(), []
    for path in NOTEBOOKS:
        cells = coding_cells(nbformat.read(path, as_version=4), path.stem)
        declared = set(variants.get(path.stem, {}))
        if not cells:
            problems.append(f"{path.name} has no coding exercise (a cell with exercise(...).run(checker, function))")
        if set(cells) - declared:
            problems.append(f"{path.name}: add variants for {sorted(set(cells) - declared)} in tests/exercise_code/{path.stem}.py")
        if declared - set(cells):
            problems.append(f"tests/exercise_code/{path.stem}.py has {sorted(declared - set(cells))}, which no cell checks")
    assert not problems, "; ".join(problems)


@pytest.mark.parametrize("lesson, exercise_id", CODING, ids=[f"{l}.{e}" for l, e in CODING])
def test_coding_checker_accepts_another_solution_rejects_a_mistake_with_its_hint_and_never_crashes(
        lesson, exercise_id, monkeypatch):
    """Called directly: a correct implementation unlike the solution passes; the typical mistake fails with
    its hint; the stub is not attempted (or failed) without an exception escaping the checker cell."""
    spec = coding_variants()[lesson][exercise_id]
    shown = []
    monkeypatch.setattr(exercises, "_show", lambda record, visible: shown.append((record, visible)))
    for variant in VARIANTS:
        namespace: dict = {}
        exec(compile(spec[variant], f"<{exercise_id} {variant}>", "exec"), namespace)
        exercise(lesson, exercise_id).run(load_checker(spec["checker"]), namespace[spec["function"]])
        record, seen = shown.pop()
        assert record.message == seen, f"{variant}: the learner sees one message, the record the same: {record}"
        if variant == "correct":
            assert record.status == PASSED, f"{lesson}/{exercise_id}: a correct answer was rejected: {record.message}"
        elif variant == "wrong":
            assert record.status == FAILED and spec["hint"].lower() in record.message.lower(), \
                f"{lesson}/{exercise_id}: the mistake should fail with a hint about {spec['hint']!r}: {record}"
        else:
            assert record.status in (NOT_ATTEMPTED, FAILED), f"{lesson}/{exercise_id}: the stub: {record}"


def checkers(nb) -> list[tuple[int, list[str]]]:
    """(cell index, answer variables) of each exercise checker cell."""
    found = []
    for index, cell in enumerate(nb.cells):
        match = CHECKER.match(cell.source) if cell.cell_type == "code" else None
        if match:
            found.append((index, re.findall(r"(\w+) is None", match.group(0))))
    return found


def test_checker_finder_and_answers_cover_every_lesson():
    """Each checker's answers are declared, and each declared answer belongs to a checker."""
    assert CHECKER.match("if a is None or b is None:") and not CHECKER.match("x = 1\nif a is None:")
    assert CHECKER.match("from tlcourse.exercises import exercise\n\nif a is None:")
    problems = []
    for path in NOTEBOOKS:
        variables = {v for _, names in checkers(nbformat.read(path, as_version=4)) for v in names}
        declared = set(ANSWERS.get(path.name, {}))
        if variables - declared:
            problems.append(f"{path.name}: declare right and wrong answers for {sorted(variables - declared)} in ANSWERS")
        if declared - variables:
            problems.append(f"{path.name}: ANSWERS has {sorted(declared - variables)}, which no checker reads")
    assert not problems, "; ".join(problems)
    assert sum(len(checkers(nbformat.read(p, as_version=4))) for p in NOTEBOOKS) >= 9


def build_own_folder(root: Path, data_dir: Path) -> Path:
    """A learner's folder as the README shows one, at ``root``, from the shared photos (see the module's text).

    Per class: 2 photos as PNG in the nested folder, 1 as WebP, 2 with the ending upper-case ``.JPG``,
    the rest as they are; the broken class also gets a JPEG cut off halfway and a zero-byte file.
    """
    for name, (source, start) in OWN_CLASSES.items():
        photos = sorted((data_dir / source).glob("*.jpg"))[start:start + PER_CLASS]
        assert len(photos) == PER_CLASS
        folder = root / name
        (folder / NESTED).mkdir(parents=True)
        for index, photo in enumerate(photos):
            if index < 2:
                Image.open(photo).save(folder / NESTED / f"{photo.stem}.png")
            elif index == 2:
                Image.open(photo).save(folder / f"{photo.stem}.webp")
            else:
                shutil.copy(photo, folder / (f"{photo.stem}.JPG" if index < 5 else photo.name))
    whole = photos[-1].read_bytes()
    (root / BROKEN_CLASS / TRUNCATED).write_bytes(whole[: len(whole) // 2])
    (root / BROKEN_CLASS / EMPTY).write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory, data_dir) -> Path:
    """A learner's folder built like the README's example (:func:`build_own_folder`)."""
    return build_own_folder(tmp_path_factory.mktemp("own photos") / "mes photos à moi", data_dir)


def test_own_folder_is_built_like_the_readme_example(own_folder):
    """The folder holds what it claims: the package's full scan finds 20 usable photos per class and skips
    exactly the two broken files; every kind of file is there."""
    from tlcourse.data import scan_folder

    skipped = []
    table = scan_folder(own_folder, check="decode", skipped=skipped)
    assert table["class_name"].value_counts().to_dict() == {name: PER_CLASS for name in OWN_CLASSES}
    assert sorted(s.path.name for s in skipped) == sorted([TRUNCATED, EMPTY])
    names = [Path(p) for p in table["file_path"]]
    assert {p.suffix for p in names} == {".jpg", ".JPG", ".png", ".webp"}
    assert sum(p.parent.name == NESTED for p in names) == 2 * len(OWN_CLASSES)


def _exercise_cells(nb) -> list[tuple[str, str, str]]:
    """Cells that run each checker with the right answers, and once per answer with that one wrong."""
    answers = ANSWERS[nb.metadata["tlcourse_name"]]
    cells = []
    for index, names in checkers(nb):
        source = nb.cells[index].source
        right = "\n".join(f"{n} = {answers[n][0]}" for n in names)
        cells.append((RIGHT, ",".join(names), f"print({RIGHT!r})\n{right}\n{source}"))
        for wrong_name in names:
            wrong = "\n".join(f"{n} = {answers[n][1] if n == wrong_name else answers[n][0]}" for n in names)
            cells.append((WRONG, wrong_name, f"""print({WRONG!r})
{wrong}
try:
    exec(compile({source!r}, "<exercise checker>", "exec"))
except AssertionError as error:
    print("REJECTED WITH HINT:", error)
else:
    raise RuntimeError({f"the checker accepted the wrong answer {wrong_name} = {answers[wrong_name][1]}"!r})
"""))
    return cells


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_lesson_runs_on_own_folder_and_its_exercise_checkers_work(path, own_folder, tmp_path, monkeypatch, real_weights):
    monkeypatch.setenv("TLCOURSE_DATA", str(own_folder))
    monkeypatch.setenv("TLCOURSE_SMOKE", "1")
    monkeypatch.setenv("TLCOURSE_OUTPUT", str(tmp_path / "outputs"))
    monkeypatch.setenv("TLCOURSE_DASHBOARD", "text")
    nb = nbformat.read(path, as_version=4)
    nb.metadata["tlcourse_name"] = path.name
    lesson_cells = len(nb.cells)
    added = _exercise_cells(nb) + _coding_exercise_cells(nb, path.stem)
    nb.cells += [nbformat.v4.new_code_cell(source) for _, _, source in added]
    # Raises CellExecutionError, naming the cell and the error, if any lesson cell fails on this folder.
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()

    outputs = [cell.outputs for cell in nb.cells[:lesson_cells] if cell.cell_type == "code"]
    text = "\n".join(o.get("text", "") for cell_outputs in outputs for o in cell_outputs)
    assert "chien de garde" in text, "the lesson should print the learner's classes"
    for broken in (TRUNCATED, EMPTY):
        assert broken in text, f"{path.name}: the lesson should skip the unusable file {broken!r} and name it"
    lesson = path.stem
    for index, names in checkers(nb):  # as shipped: every answer None, so "not attempted", visibly and in the record
        records = records_in(nb.cells[index].outputs)
        assert [r.status for r in records] == [NOT_ATTEMPTED] and records[0].lesson == lesson, \
            f"{path.name}: the checker for {names} as shipped should record not_attempted: {records}"
        assert records[0].message in visible(nb.cells[index].outputs) and "Fill in" in records[0].message
    for exercise_id, index in coding_cells(nb, lesson).items():  # as shipped: a stub, so "not attempted"
        records = records_in(nb.cells[index].outputs)
        assert [r.status for r in records] == [NOT_ATTEMPTED], f"{path.name}: {exercise_id} as shipped: {records}"
    for (kind, name, _), cell in zip(added, nb.cells[lesson_cells:]):
        out = visible(cell.outputs)
        records = records_in(cell.outputs)
        assert len(records) == 1 and records[0].lesson == lesson, f"{path.name}: {name}: one record expected: {records}"
        if kind in VARIANTS:
            assert not [o for o in cell.outputs if o.get("output_type") == "error"], f"{path.name}: {name} {kind}: a traceback"
            expected = {"correct": (PASSED,), "wrong": (FAILED,), "stub": (NOT_ATTEMPTED, FAILED)}[kind]
            assert records[0].status in expected and records[0].message in out, f"{path.name}: {name} {kind}: {records[0]}"
            if kind == "wrong":
                hint = coding_variants()[lesson][name]["hint"]
                assert hint.lower() in records[0].message.lower(), f"{path.name}: {name}: the hint should name {hint!r}"
        elif kind == RIGHT:
            assert "Correct" in out, f"{path.name}: the checker for {name} did not say Correct for the right answer: {out!r}"
            assert records[0].status == PASSED and records[0].message in out, f"{path.name}: {name}: {records[0]}"
        else:
            hint = out.split("REJECTED WITH HINT:", 1)[-1].strip()
            assert "REJECTED WITH HINT:" in out and len(hint) > 10, \
                f"{path.name}: the checker for {name} rejected a wrong answer without a hint: {out!r}"
            # The record holds the hint the learner saw, once (its own text/plain is empty).
            assert records[0].status == FAILED and records[0].message == hint, f"{path.name}: {name}: {records[0]}"
            assert out.count(hint) == 1, f"{path.name}: {name}: the learner should see the hint once: {out!r}"


def _coding_exercise_cells(nb, lesson: str) -> list[tuple[str, str, str]]:
    """Per coding exercise, one cell per variant: the variant's function, then the lesson's checker cell."""
    variants = coding_variants().get(lesson, {})
    return [(variant, exercise_id, variants[exercise_id][variant] + "\n" + nb.cells[index].source)
            for exercise_id, index in coding_cells(nb, lesson).items() if exercise_id in variants
            for variant in VARIANTS]


def visible(outputs) -> str:
    """What the learner sees of a cell's outputs as text: printed text and the text/plain of displays."""
    parts = []
    for output in outputs:
        if output.get("output_type") == "stream":
            parts.append(output.get("text", ""))
        elif output.get("output_type") in ("display_data", "execute_result"):
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_run_turns_stubs_mistakes_and_crashes_into_one_line_each(monkeypatch):
    """`exercise(...).run` never raises: each kind of answer gets its status and one line naming what is wrong."""
    shown = []
    monkeypatch.setattr(exercises, "_show", lambda record, visible: shown.append(record))

    def check_double(double):  # a checker in the shape of tlcourse.checkers': the reference is 2 * x
        for x in (3, -1.5):
            got = exercises.attempt(double, x)
            assert got == 2 * x, f"double({x}) gave {got!r}, but twice {x} is {2 * x}."
        return "Correct: your double doubles."

    def stub(x):
        raise NotImplementedError

    def dots(x):
        ...

    cases = {"right": (lambda x: x + x, PASSED, "Correct"), "stub": (stub, NOT_ATTEMPTED, "not written yet"),
             "dots": (dots, NOT_ATTEMPTED, "returns nothing"), "wrong": (lambda x: x * x, FAILED, "twice 3 is 6"),
             "crash": (lambda x: x.upper(), FAILED, "raised AttributeError"),
             "text": (lambda x: "6", FAILED, "gave '6'"), "not a function": (None, NOT_ATTEMPTED, "not a function")}
    for name, (answer, status, words) in cases.items():
        exercise("lesson", "double").run(check_double, answer)
        assert shown[-1].status == status and words in shown[-1].message, f"{name}: {shown[-1]}"
