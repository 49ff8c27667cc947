"""Shared test setup: offline pretrained weights in a writable TORCH_HOME, and the real photos.

Runs before any test or lesson notebook (nbval kernels inherit this environment).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent / "shared"
MOBILENET_FILE = "mobilenet_v2-7ebf99e0.pth"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _find_weights() -> Path | None:
    """The weights from an explicitly set TORCH_HOME, else from ../shared.

    Never the host's default cache (~/.cache/torch): a test run must not depend on what
    happens to be downloaded on the machine outside the clone.
    """
    candidates = []
    if os.environ.get("TORCH_HOME"):
        candidates.append(Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints" / MOBILENET_FILE)
    candidates.append(SHARED / "torch_home" / "hub" / "checkpoints" / MOBILENET_FILE)
    return next((c.resolve() for c in candidates if c.is_file()), None)


def _writable_torch_home() -> None:
    """Point TORCH_HOME at a fresh writable folder whose checkpoints link the real weights.

    ../shared is read-only, and a test must never download: TLCOURSE_OFFLINE makes a
    missing file fail at once with the package's clear message.
    """
    home = Path(tempfile.mkdtemp(prefix="tlcourse-torch-home-"))
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    weights = _find_weights()
    if weights is not None:
        (checkpoints / MOBILENET_FILE).symlink_to(weights)
    os.environ["TORCH_HOME"] = str(home)
    os.environ["TLCOURSE_OFFLINE"] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")


_writable_torch_home()


def _data_dir() -> Path:
    configured = os.environ.get("TLCOURSE_DATA")
    if configured:
        return Path(configured)
    for candidate in (ROOT / "data", SHARED / "data" / "dogs-vs-hotdogs"):
        if candidate.is_dir():
            return candidate
    return ROOT / "data"


# Lessons and tests read the photos from the same place.
os.environ.setdefault("TLCOURSE_DATA", str(_data_dir()))
# The field test beside them (as ../shared lays it out), unless TLCOURSE_FIELD_TEST says otherwise.
_field_test = SHARED / "data" / "field-test"
if _field_test.is_dir():
    os.environ.setdefault("TLCOURSE_FIELD_TEST", str(_field_test))
# Lessons executed by nbval have no browser watching: the training dashboard prints one
# line per epoch instead of drawing widgets nobody sees (tests/test_browser.py asks for widgets).
os.environ.setdefault("TLCOURSE_DASHBOARD", "text")


def _require(condition: bool, what: str) -> None:
    """Skip a test whose material is missing on a learner's machine; fail it in CI (CI=1, set by .ci/run)."""
    if not condition:
        if IN_CI:
            pytest.fail(f"{what} is missing in CI", pytrace=False)
        pytest.skip(f"{what} not available here")


@pytest.fixture(scope="session")
def require():
    """``require(condition, what)``: skip outside CI, fail in CI, when ``what`` is missing."""
    return _require


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real dogs-vs-hotdogs photos (fails in CI, skips elsewhere, when missing)."""
    path = Path(os.environ["TLCOURSE_DATA"])
    _require((path / "dog").is_dir() and (path / "hotdog").is_dir(), f"The photo folder {path}")
    return path


@pytest.fixture
def two_per_class(tmp_path, data_dir) -> list[Path]:
    """Copies of the first two real photos of each class (dog, dog, hotdog, hotdog) in a temporary
    folder, so a test may change or delete them."""
    paths = []
    for name in ("dog", "hotdog"):
        for source in sorted((data_dir / name).glob("*.jpg"))[:2]:
            target = tmp_path / "photos" / name / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            paths.append(target)
    return paths


@pytest.fixture(scope="session")
def real_weights() -> Path:
    """The real ImageNet MobileNetV2 weights in the test TORCH_HOME."""
    path = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints" / MOBILENET_FILE
    _require(path.exists(), f"Pretrained weights {path}")
    return path


@pytest.fixture
def output_dir(tmp_path, monkeypatch) -> Path:
    """A fresh TLCOURSE_OUTPUT for one test."""
    out = tmp_path / "outputs"
    monkeypatch.setenv("TLCOURSE_OUTPUT", str(out))
    return out


@pytest.fixture
def one_torch_thread():
    """One torch thread for a test: on a busy shared 2-core machine, two threads spin-wait on each
    other (measured up to 10x slower); tests that train small models use it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def _cleanup_torch_home():
    yield
    shutil.rmtree(os.environ["TORCH_HOME"], ignore_errors=True)


# --------------------------------------------------------------------------- time limits
#: nbval's limit per lesson cell (--nbval-cell-timeout in pyproject.toml); pytest-timeout's limit for a
#: cell is a minute above it, so that nbval's own, clearer error comes first.
NBVAL_CELL_TIMEOUT = 600


#: The limit of a test marked slow that names none itself (pyproject's suite-wide one is for quick tests).
SLOW_TIMEOUT = 1800


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if item.get_closest_marker("timeout") is not None:
            continue
        if item.nodeid.split("::")[0].endswith(".ipynb"):
            item.add_marker(pytest.mark.timeout(NBVAL_CELL_TIMEOUT + 60))
        elif item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))


# --------------------------------------------------------------------------- time per file
# The course must execute within its CI budget: print how long each lesson (and test file) took.
_seconds_per_file: dict[str, float] = {}


def pytest_runtest_logreport(report) -> None:
    path = report.nodeid.split("::")[0]
    _seconds_per_file[path] = _seconds_per_file.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter) -> None:
    if not _seconds_per_file:
        return
    terminalreporter.section("seconds per file")
    lessons = 0.0
    for path, seconds in sorted(_seconds_per_file.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{seconds:8.1f} s  {path}")
        if path.endswith(".ipynb"):
            lessons += seconds
    if lessons:
        terminalreporter.write_line(f"{lessons:8.1f} s  all lessons (notebooks/*.ipynb) together")
