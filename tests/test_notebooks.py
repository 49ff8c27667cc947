"""Policy tests for the lesson notebooks (they do not execute them; nbval does that).

* Output policy: only cells tagged ``nbval-check-output`` (cell metadata, read by nbval) store outputs
  (and those must, or nbval has nothing to compare); no execution counts, so diffs stay clean.
* Learner cells hold no test scaffolding: no nbval markers, quick-run branches or strictness switches.
* Every image a notebook shows (markdown ``![](...)`` or ``<img src=...>``) exists, and every
  figure in ``images/`` is drawn by ``images/make_figures.py``.
* Kernel metadata: JupyterLab opens each lesson with the ``python3`` kernel, without asking.
* Teach, then import: a lesson may write out a function or class that the package provides only to
  teach it, once in the whole course; a later cell must check it against the package's version (an
  ``assert`` next to the package's name), and the lesson must then use the package's version.
* Learner text speaks to learners: no words about CI, benchmarks, budgets or the course's machines.
* The original notebook's defects stay gone from the code cells.
* Every lesson starts from ``get_config()``, ends with exercises, and the README's lesson table
  lists exactly the notebooks that exist.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import nbformat
import pytest

import tlcourse

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHECK_TAG = "nbval-check-output"

MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_IMAGE = re.compile(r"<img\b[^>]*\bsrc\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _python_source(cell) -> str:
    """A code cell's source with IPython magics and shell escapes blanked, so ``ast`` can parse it."""
    lines = []
    for line in cell.source.splitlines():
        stripped = line.lstrip()
        lines.append("" if stripped.startswith(("%", "!")) else line)
    return "\n".join(lines)


def _package_names() -> set[str]:
    """Public functions and classes defined in the tlcourse package's modules."""
    names = set()
    for info in pkgutil.walk_packages(tlcourse.__path__, "tlcourse."):  # subpackages too (tlcourse.data, ...)
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional module whose extra is not installed
            continue
        for name, obj in vars(module).items():
            if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj)) \
                    and getattr(obj, "__module__", "") == module.__name__:
                names.add(name)
    return names


def test_there_are_lessons():
    assert len(NOTEBOOKS) >= 5, f"expected the course's lessons in notebooks/, found {[p.name for p in NOTEBOOKS]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_valid_notebook_with_python3_kernel(path):
    nb = _read(path)
    nbformat.validate(nb)
    kernelspec = nb.metadata.get("kernelspec", {})
    assert kernelspec.get("name") == "python3", f"{path.name}: kernelspec {kernelspec!r}; JupyterLab would ask"
    assert kernelspec.get("language") == "python"
    assert nb.metadata.get("language_info", {}).get("name") == "python"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_only_in_checked_cells(path):
    """Committed notebooks carry outputs only where nbval compares them."""
    problems = []
    for index, cell in enumerate(_code_cells(_read(path))):
        checked = CHECK_TAG in cell.metadata.get("tags", [])
        if cell.outputs and not checked:
            problems.append(f"code cell {index} has outputs but no {CHECK_TAG} tag")
        if checked and not cell.outputs:
            problems.append(f"code cell {index} is tagged {CHECK_TAG} but stores no output to compare")
        # nbval fails a checked cell without an execution count ("unrun reference cell has outputs").
        if checked and cell.execution_count is None:
            problems.append(f"code cell {index} is checked but has no execution count")
        if not checked and cell.execution_count is not None:
            problems.append(f"code cell {index} has an execution count")
        if any(o.get("output_type") == "error" for o in cell.outputs):
            problems.append(f"code cell {index} stores an error")
    assert not problems, (f"{path.name}: " + "; ".join(problems)
                          + ". Fix: python scripts/store_checked_outputs.py notebooks/" + path.name)


# Test scaffolding that must stay out of the learner's cells (issue 22, section 4): nbval markers go
# in cell tags, quick-run sizes come from the config (cfg.photos_per_class, cfg.photos, cfg.epochs),
# and the strictness of a lesson's checks is decided in the package (tlcourse.evaluation.lesson_verdict).
SCAFFOLDING = ("NBVAL", "cfg.smoke", "smoke_images_per_class", "strict=", "is_course_example")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_learner_cells_hold_no_test_scaffolding(path):
    found = [f"cell {index}: {word}" for index, cell in enumerate(_read(path).cells)
             for word in SCAFFOLDING if word in cell.source]
    assert not found, f"{path.name}: {found}"


def test_nbval_reads_the_check_tag():
    """The tag the lessons use is one nbval knows: it marks the cell's output for comparison."""
    from nbval.plugin import find_metadata_tags

    assert dict(find_metadata_tags({"tags": [CHECK_TAG]})) == {"check": True}


def _image_references(nb) -> list[str]:
    refs = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            refs += MARKDOWN_IMAGE.findall(cell.source) + HTML_IMAGE.findall(cell.source)
    return [r for r in refs if not r.startswith(("http://", "https://", "data:", "attachment:"))]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_referenced_images_exist(path):
    missing = [ref for ref in _image_references(_read(path)) if not (path.parent / ref).is_file()]
    assert not missing, f"{path.name} shows images that do not exist: {missing}. Run `make figures`."


def test_image_reference_patterns_find_both_syntaxes():
    """The reference finder itself: markdown and HTML images, with and without titles."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        '![VGG](../images/a.png) and ![x](../images/b.png "title")\n<img width="80%" src="../images/c.png">'
        "\n![web](https://example.com/d.png)")])
    assert _image_references(nb) == ["../images/a.png", "../images/b.png", "../images/c.png"]


def test_every_figure_is_drawn_by_the_script():
    script = (ROOT / "images" / "make_figures.py").read_text()
    pictures = sorted(p.name for p in (ROOT / "images").glob("*.png"))
    assert pictures, "no figures in images/: run `make figures`"
    assert [name for name in pictures if name not in script] == [], "images/ holds PNGs no script draws"


def test_lessons_show_the_figures():
    shown = {Path(ref).name for path in NOTEBOOKS for ref in _image_references(_read(path))}
    pictures = {p.name for p in (ROOT / "images").glob("*.png")}
    assert pictures <= shown, f"figures no lesson shows: {sorted(pictures - shown)}"


def _uses_package_version(source: str, name: str) -> bool:
    """True if ``source`` refers to the package's ``name``: imported from tlcourse, or as tlcourse.<module>.<name>."""
    return bool(re.search(rf"from tlcourse\.\w+ import [^\n]*\b{name}\b|tlcourse\.\w+\.{name}\b", source))


def _has_assert(source: str) -> bool:
    return any(isinstance(node, ast.Assert) for node in ast.walk(ast.parse(source)))


def test_package_code_is_taught_once_then_used_from_the_package():
    """A lesson may define a package function/class to teach it, once in the course; a later cell must
    assert that it agrees with the package's version, and the lesson must then import the package's
    version (so later cells use the tested code)."""
    package = _package_names()
    assert {"create_csv", "CSVDataset", "fit", "build_model"} <= package  # the finder works
    definitions: dict[str, list[str]] = {}
    problems = []
    for path in NOTEBOOKS:
        cells = _code_cells(_read(path))
        for index, cell in enumerate(cells):
            tree = ast.parse(_python_source(cell))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in package:
                    definitions.setdefault(node.name, []).append(f"{path.name} cell {index}")
                    later = [_python_source(c) for c in cells[index + 1:]]
                    if not any(_uses_package_version(source, node.name) and _has_assert(source) for source in later):
                        problems.append(f"{path.name} cell {index} defines {node.name} but no later cell asserts that "
                                        "it agrees with the package's version")
                    if not _uses_package_version("\n".join(later), node.name):
                        problems.append(f"{path.name} cell {index} defines {node.name} but never switches "
                                        "to the package's version")
    problems += [f"{name} is defined in {len(where)} places: {where}" for name, where in definitions.items()
                 if len(where) > 1]
    assert not problems, "; ".join(problems)


def test_taught_once_check_catches_an_unchecked_copy():
    """The rule itself: a copy that is only imported over, without a check, is reported."""
    assert _uses_package_version("from tlcourse.data import SquareCrop, load_image", "SquareCrop")
    assert _uses_package_version("x = tlcourse.data.SquareCrop(224)", "SquareCrop")
    assert not _uses_package_version("x = SquareCrop(224)", "SquareCrop")
    assert _has_assert("assert torch.equal(a, b)") and not _has_assert("print(a == b)")


# Words about the course's own development: learners need none of them. (Lessons may name the
# setting TLCOURSE_SMOKE; they call it a quick run.)
DEVELOPER_WORDS = {
    r"\bCI\b|continuous integration": "CI",
    r"benchmark": "benchmarks",
    r"\bbudget": "budgets",
    r"\b\d+-core\b|\bbusy\b|\bour (?:machine|computer|server)s?\b|\bthis machine\b": "the course's machines",
    r"\bnbval\b|\bpytest\b|\b(?:course's|package's|our) tests\b|\btests (?:fail|pass)\b|\bfails? its tests\b":
        "the course's tests",
    r"\bwe measured\b|\bmeasured (?:on|with) (?:the|our)\b": "measurement narratives",
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_learner_text_has_no_developer_words(path):
    found = []
    for index, cell in enumerate(_read(path).cells):
        text = cell.source if cell.cell_type == "markdown" else "\n".join(
            line.split("#", 1)[1] for line in cell.source.splitlines() if "#" in line)  # code comments
        text = text.replace("NBVAL_CHECK_OUTPUT", "")
        # The opener's time line names the learner's kind of computer ("a 2-core laptop CPU"), not ours.
        text = re.sub(r"^\*\*Time:\*\* about .*$", "", text, flags=re.M) if index == 0 else text
        for pattern, what in DEVELOPER_WORDS.items():
            for match in re.finditer(pattern, text, flags=re.IGNORECASE if what != "CI" else 0):
                found.append(f"cell {index}: {match.group(0)!r} ({what})")
    assert not found, f"{path.name} talks to developers, not learners: {found}"


def test_developer_word_patterns_catch_examples():
    text = "On a busy 2-core CPU we measured it; CI runs the benchmark within its budget, so the tests fail."
    hits = {what for pattern, what in DEVELOPER_WORDS.items()
            for _ in re.finditer(pattern, text, flags=re.IGNORECASE if what != "CI" else 0)}
    assert hits == set(DEVELOPER_WORDS.values())
    assert not any(re.search(p, "a quick run on a CPU or a GPU; the test photos; testing", flags=re.IGNORECASE)
                   for p in DEVELOPER_WORDS if p != r"\bCI\b|continuous integration")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_test_photos_only_in_the_final_section(path):
    """Choices are made on validation: a lesson evaluates on the test split only in its section on
    the test photos (a heading with "test photos"), which comes after every other lesson section."""
    section, problems, sections = "", [], []
    for index, cell in enumerate(_read(path).cells):
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("## "):
                    section = line[3:].strip()
                    sections.append(section)
        elif re.search(r"""loader\(\s*["']test["']""", cell.source) and "test photos" not in section.lower():
            problems.append(f"cell {index} evaluates on the test split in section {section!r}")
    assert not problems, f"{path.name}: {problems}"
    test_sections = [i for i, name in enumerate(sections) if "test photos" in name.lower()]
    if test_sections:  # nothing but exercises, reading and the appendix may follow it
        later = [name for name in sections[test_sections[-1] + 1:]
                 if not re.match(r"exercises|further reading|what the original", name, re.IGNORECASE)]
        assert not later, f"{path.name}: sections after the test photos: {later}"


# Code patterns from the original notebook that must not come back (code cells only: the prose
# explains them).
DEFECTS = {
    r"=\s*\w+\.append\(": "df = df.append(...) (DataFrame.append was removed in pandas 2)",
    r"pretrained\s*=\s*True": "pretrained=True (use the weights enum)",
    r"%matplotlib\s+notebook": "%matplotlib notebook (not supported in JupyterLab)",
    r"\bSoftmax\s*\(": "a Softmax layer in the model (cross_entropy takes logits)",
    r"random_split\(": "an unseeded random_split",
    r"val_split\s*=": "split fractions reassigned in the notebook",
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_original_defects_are_gone(path):
    code = "\n".join(c.source for c in _code_cells(_read(path)))
    found = [what for pattern, what in DEFECTS.items() if re.search(pattern, code)]
    assert not found, f"{path.name}: {found}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_lesson_starts_from_config_and_ends_with_exercises(path):
    nb = _read(path)
    first_code = _code_cells(nb)[0].source
    assert "cfg = get_config()" in first_code, f"{path.name}: the first code cell must set cfg = get_config()"
    headings = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
                if line.startswith("#")]
    assert any("exercise" in h.lower() for h in headings), f"{path.name} has no Exercises section"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), \
        f"{path.name} must open with a title"


def test_readme_lists_exactly_the_lessons():
    readme = (ROOT / "README.md").read_text()
    listed = re.findall(r"`notebooks/([^`]+\.ipynb)`", readme)
    assert listed == [p.name for p in NOTEBOOKS], f"README lists {listed}, notebooks/ has {[p.name for p in NOTEBOOKS]}"
