"""Every lesson as a learner at home has the course: a copy of it with nothing beside it.

The copy holds what a learner's clone holds for the lessons (``notebooks/``, ``images/``) and the
example photos in its ``data/``, as ``tlcourse download-data`` leaves them; the package is the one
installed in this environment, and no ``../shared`` lies beside the copy. No ``TLCOURSE_*`` setting
points anywhere: the defaults decide, as after ``make lab``. Each lesson runs top to bottom in a
fresh kernel in quick mode (``TLCOURSE_SMOKE=1``), in order, in two homes:

- ``no-field-test``: the field test was never downloaded. A lesson that uses it says once that it is
  missing, names the folder it looked in (the default, ``field-test/`` in the course folder) and goes on.
- ``field-test-setting``: the field test lies somewhere else and ``TLCOURSE_FIELD_TEST`` points at it.
  No lesson says it is missing.
- ``field-test-downloaded``: the field test is where ``download-data`` puts it by default,
  ``field-test/`` in the course folder, and no setting names it (the lessons that use it only).

Neither home may print a path into ``../shared``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
COURSE_FOLDERS = ("notebooks", "images")  # what the lessons read from the course besides the photos
# The lessons that read the field test (found by its setting, so a new lesson is covered too) run in
# every home; the others cannot tell the homes apart and run once, in the one with no field test.
FIELD_TEST_LESSONS = tuple(p.name for p in NOTEBOOKS if "field_test_dir" in p.read_text(encoding="utf-8"))
MISSING = "No field-test folder"  # tlcourse.fieldtest.load_field_test's line when the folder is not there
HOMES = ("no-field-test", "field-test-setting", "field-test-downloaded")
RUNS = [(home, p.name) for home in HOMES for p in NOTEBOOKS
        if home == "no-field-test" or p.name in FIELD_TEST_LESSONS]
# Read before any test changes the environment: where conftest found the shared field test, if anywhere.
FIELD_TEST_SOURCE = os.environ.get("TLCOURSE_FIELD_TEST")


@pytest.fixture(scope="module")
def photos(tmp_path_factory, data_dir) -> Path:
    """One copy of the example photos (dog/ and hotdog/ only), hard-linked into each home."""
    copy = tmp_path_factory.mktemp("photos") / "data"
    for name in ("dog", "hotdog"):
        shutil.copytree(data_dir / name, copy / name)
    return copy


@pytest.fixture(scope="module")
def homes(tmp_path_factory, photos, require) -> dict[str, tuple[Path, Path | None]]:
    """Per home: (the course copy, the field-test folder that TLCOURSE_FIELD_TEST names, or None)."""
    source = Path(FIELD_TEST_SOURCE or ROOT / "field-test")
    require((source / "dog").is_dir() and (source / "hotdog").is_dir(), f"The field-test folder {source}")
    made = {}
    for home in HOMES:
        base = tmp_path_factory.mktemp(home)
        course = base / "my course"
        for folder in COURSE_FOLDERS:
            shutil.copytree(ROOT / folder, course / folder, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        shutil.copytree(photos, course / "data", copy_function=os.link)
        field = None
        if home == "field-test-setting":
            field = base / "elsewhere" / "photos from elsewhere"
            shutil.copytree(source, field, ignore=shutil.ignore_patterns("*.tsv"))
        elif home == "field-test-downloaded":
            shutil.copytree(source, course / "field-test", ignore=shutil.ignore_patterns("*.tsv"))
        assert not (base / "shared").exists() and not (course.parent / "shared").exists()
        made[home] = (course, field)
    return made


@pytest.mark.slow
@pytest.mark.parametrize(("home", "name"), RUNS, ids=[f"{home}-{name}" for home, name in RUNS])
def test_lesson_runs_at_home(home, name, homes, monkeypatch, real_weights):
    course, field = homes[home]
    for variable in ("TLCOURSE_DATA", "TLCOURSE_OUTPUT", "TLCOURSE_FIELD_TEST", "TLCOURSE_BACKBONE",
                     "TLCOURSE_SEED", "TLCOURSE_DEVICE"):
        monkeypatch.delenv(variable, raising=False)  # the defaults decide, resolved in the course copy
    if field is not None:
        monkeypatch.setenv("TLCOURSE_FIELD_TEST", str(field))
    monkeypatch.setenv("TLCOURSE_SMOKE", "1")
    monkeypatch.setenv("TLCOURSE_DASHBOARD", "text")
    nb = nbformat.read(course / "notebooks" / name, as_version=4)
    # Raises CellExecutionError, naming the cell and the error, if any cell fails in this home.
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(course / "notebooks")}}).execute()

    text = "\n".join(output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
                     for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs)
    assert "../shared" not in text and "/shared/data" not in text, f"{name} printed a path into ../shared"
    if name in FIELD_TEST_LESSONS and home == "no-field-test":
        assert text.count(MISSING) == 1, f"{name} should say once that the field test is missing: {text.count(MISSING)}"
        assert str(course / "field-test") in text, f"{name} should name the folder it looked in"
    if home != "no-field-test":
        assert MISSING not in text, f"{name} did not find the field test that TLCOURSE_FIELD_TEST names"
    photos = sorted(p.name for p in (course / "data").iterdir())
    assert photos == ["dog", "hotdog"], f"nothing may be written among the photos: {photos}"
