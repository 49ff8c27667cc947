"""The pip route (pyproject.toml) and the conda route (environment.yml) install the same packages,
with compatible versions, and the torch pins agree with the Makefile (which CI uses through `make test`)."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
TORCH_PACKAGES = {"torch", "torchvision"}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pip_requirements() -> dict[str, Requirement]:
    """What `pip install -e ".[lab,test]"` (the Makefile's install) asks for: base plus every extra."""
    project = pyproject()["project"]
    lines = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        lines += extra
    requirements: dict[str, Requirement] = {}
    for line in lines:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name not in requirements, f"{req.name} is listed twice in pyproject.toml"
        requirements[name] = req
    return requirements


def environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def conda_requirements() -> tuple[dict[str, str], dict[str, Requirement], list[str]]:
    """(conda packages -> conda version spec, pip-section packages -> requirement, other pip lines)."""
    conda: dict[str, str] = {}
    pip: dict[str, Requirement] = {}
    other: list[str] = []
    for entry in environment()["dependencies"]:
        if isinstance(entry, dict):
            for line in entry["pip"]:
                if line.startswith("-"):
                    other.append(line)
                else:
                    req = Requirement(line)
                    pip[canonicalize_name(req.name)] = req
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", entry.strip())
        assert match, f"cannot read the environment.yml entry {entry!r}"
        name = canonicalize_name(match.group(1))
        assert name not in conda, f"{name} is listed twice in environment.yml"
        conda[name] = match.group(2).strip()
    return conda, pip, other


def makefile_pins() -> dict[str, Requirement]:
    text = (ROOT / "Makefile").read_text()
    match = re.search(r"^TORCH_PIN\s*\??=\s*(.+)$", text, re.MULTILINE)
    assert match, "the Makefile defines no TORCH_PIN"
    return {canonicalize_name(r.name): r for r in map(Requirement, match.group(1).split())}


def pinned_version(spec: SpecifierSet) -> Version | None:
    pins = [s for s in spec if s.operator == "=="]
    return Version(pins[0].version) if len(pins) == 1 and len(spec) == 1 else None


def test_both_routes_install_the_same_packages():
    pip = set(pip_requirements())
    conda, conda_pip, other = conda_requirements()
    conda_side = (set(conda) | set(conda_pip)) - {"python", "pip"}
    assert conda_side == pip, (
        f"only in environment.yml: {sorted(conda_side - pip)}; only in pyproject.toml: {sorted(pip - conda_side)}"
    )
    assert "-e ." in other  # the course package itself
    assert not set(conda) & set(conda_pip), "a package is listed both as conda and as pip package"


def test_version_bounds_are_compatible():
    pip = pip_requirements()
    conda, conda_pip, _ = conda_requirements()
    for name, req in pip.items():
        if name in conda_pip:
            other = conda_pip[name].specifier
        else:
            # conda's ">=1.24" means what pip's does; a single "=" is a prefix match, like pip's "==X.*".
            text = conda[name]
            text = re.sub(r"(?<![<>=!])=(?!=)([0-9.]+)", r"==\1.*", text)
            other = SpecifierSet(text.replace(" ", ","))
        pin = pinned_version(other)
        if pin is not None:
            assert req.specifier.contains(pin), f"environment.yml pins {name}=={pin}, outside pyproject's {req}"
        else:
            assert other == req.specifier, f"{name}: pyproject.toml says {req.specifier}, environment.yml {other}"


def test_torch_pins_agree_with_the_makefile_and_ci():
    pins = makefile_pins()
    _, conda_pip, _ = conda_requirements()
    assert set(pins) == TORCH_PACKAGES
    for name in TORCH_PACKAGES:
        assert pinned_version(pins[name].specifier) is not None, f"the Makefile does not pin {name} exactly"
        assert conda_pip[name].specifier == pins[name].specifier, (
            f"environment.yml has {conda_pip[name]}, the Makefile {pins[name]}"
        )
    # The pins for CI; .ci/run installs through `make test`, so it gets the Makefile's.
    assert str(pins["torch"].specifier) == "==2.14.1" and str(pins["torchvision"].specifier) == "==0.29.1"
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^\s*make test\b", ci, re.MULTILINE), ".ci/run does not run the README's `make test`"
    assert "TORCH_PIN" not in ci, ".ci/run overrides the Makefile's TORCH_PIN"
    for name, version in re.findall(r"\b(torch|torchvision)==([0-9][0-9.]*)", ci):
        assert pins[name].specifier.contains(version), f".ci/run mentions {name}=={version}"


def test_python_versions_agree():
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    conda, _, _ = conda_requirements()
    conda_python = conda["python"].lstrip("=")
    assert requires.contains(conda_python + ".0"), f"environment.yml's python={conda_python} vs {requires}"
    assert requires.contains(".".join(map(str, sys.version_info[:3])))


def test_this_environment_satisfies_the_declared_bounds():
    # The venv the tests run in was installed from these files: a bound nobody can satisfy shows up here.
    for name, req in pip_requirements().items():
        if req.marker is not None and not req.marker.evaluate():
            continue
        installed = Version(metadata.version(name))
        assert req.specifier.contains(installed, prereleases=True), f"{name} {installed} does not satisfy {req}"


def test_yaml_parser_is_declared():
    # This file parses environment.yml with PyYAML; the test extra must install it.
    assert "pyyaml" in pip_requirements()


def test_every_test_has_a_time_limit():
    """pytest-timeout's suite-wide limit, nbval's cell limit (and the cells' pytest limit above it, set in
    conftest.py), and the limit of slow tests: all set, each above what it bounds."""
    import conftest

    options = pyproject()["tool"]["pytest"]["ini_options"]
    assert 0 < int(options["timeout"]) < conftest.SLOW_TIMEOUT
    assert f"--nbval-cell-timeout={conftest.NBVAL_CELL_TIMEOUT}" in options["addopts"].split()
    assert "pytest-timeout" in pip_requirements()


def test_the_time_limits_are_applied(request):
    """This test runs under the suite-wide limit (a quick test with no mark of its own)."""
    assert request.node.get_closest_marker("timeout") is None
    assert int(request.config.getini("timeout")) == int(pyproject()["tool"]["pytest"]["ini_options"]["timeout"])
