"""``tlcourse doctor``: is this machine ready for the lessons? One table, and the fix for each problem.

Each :class:`Check` is ``ok``, ``info`` (worth knowing, not needed), ``warn`` (lessons work, something
should be fixed) or ``missing`` (a lesson will fail; the check names the fix). The command exits
non-zero when any check is ``missing``."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .errors import DeviceError

OK, INFO, WARN, MISSING = "ok", "info", "warn", "missing"

#: The oldest versions the course supports (pyproject.toml's ranges).
MINIMUM = {"python": (3, 10), "torch": (2, 1), "torchvision": (0, 16), "jupyterlab": (4, 0), "ipywidgets": (8, 0)}
_INSTALL = 'pip install -e ".[lab]"  (or: make setup)'


@dataclass
class Check:
    """One row of the doctor's table."""

    name: str
    found: str
    status: str
    fix: str = ""


def _version_tuple(text: str) -> tuple[int, ...]:
    """The release numbers of a version string: ``"2.14.1+cpu"`` -> ``(2, 14, 1)``, ``"4.0.0rc1"`` -> ``(4, 0, 0)``."""
    match = re.match(r"\d+(?:\.\d+)*", text.strip())
    return tuple(int(n) for n in match.group(0).split(".")) if match else ()


def _package(name: str, minimum: tuple[int, ...] | None, fix: str, label: str | None = None) -> Check:
    label = label or name
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return Check(label, "not installed", MISSING, fix)
    if minimum and _version_tuple(version) < minimum:
        wanted = ".".join(map(str, minimum))
        return Check(label, f"{version} (need >= {wanted})", MISSING, f"pip install --upgrade '{name}>={wanted}'")
    return Check(label, version, OK)


def check_python() -> Check:
    """Python version (the course needs 3.10 or newer)."""
    found = platform.python_version()
    if sys.version_info[:2] < MINIMUM["python"]:
        return Check("Python", f"{found} (need >= 3.10)", MISSING,
                     "install Python 3.10 or newer and recreate .venv (make clean-venv && make setup)")
    return Check("Python", f"{found} ({sys.executable})", OK)


def check_widget_frontend() -> Check:
    """Whether JupyterLab can show widgets: the ``jupyterlab_widgets`` package and its lab extension files."""
    fix = 'pip install "jupyterlab_widgets>=3" (comes with ipywidgets 8), then restart JupyterLab'
    try:
        version = importlib.metadata.version("jupyterlab_widgets")
    except importlib.metadata.PackageNotFoundError:
        return Check("widget front end", "jupyterlab_widgets not installed", MISSING, fix)
    try:
        from jupyter_core.paths import jupyter_path

        folders = [Path(p) / "@jupyter-widgets" / "jupyterlab-manager" for p in jupyter_path("labextensions")]
    except ImportError:  # jupyter_core comes with JupyterLab; its absence is reported by that row
        folders = [Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "@jupyter-widgets" / "jupyterlab-manager"]
    installed = next((f for f in folders if (f / "package.json").is_file()), None)
    if installed is None:
        return Check("widget front end", f"jupyterlab_widgets {version}, but its lab extension is missing",
                     MISSING, f"pip install --force-reinstall jupyterlab_widgets=={version}")
    return Check("widget front end", f"jupyterlab_widgets {version}", OK)


def check_device(config: Config) -> Check:
    """The device lessons will train on (CUDA, then Apple MPS, then CPU)."""
    try:
        import torch

        from .training import choose_device
    except ImportError:
        return Check("device", "unknown (torch is not installed)", MISSING, _INSTALL)
    try:
        device = choose_device(config.device)
    except DeviceError as error:  # asked for (TLCOURSE_DEVICE) but not on this machine
        return Check("device", f"{config.device} asked for (TLCOURSE_DEVICE) but not available", MISSING, str(error))
    if device.type == "cuda":
        return Check("device", f"cuda ({torch.cuda.get_device_name(0)})", OK)
    if device.type == "mps":
        return Check("device", "mps (Apple GPU)", OK)
    return Check("device", f"cpu ({os.cpu_count()} cores); every lesson runs on a CPU", OK)


def _listing(items: list[tuple[str, str]], limit: int = 5) -> str:
    shown = "; ".join(f"{p} ({why})" for p, why in items[:limit])
    return shown + (f"; ... and {len(items) - limit} more" if len(items) > limit else "")


def check_data(data_dir: Path, verify_images: bool = True) -> list[Check]:
    """The photo folder through :func:`tlcourse.verify.verify_folder` (so doctor and lessons agree):
    skipped files are a warning, folder-level problems are missing."""
    fix = f"tlcourse download-data --dest {data_dir}  (or point TLCOURSE_DATA at your photo folder)"
    if not data_dir.is_dir() or not any(p for p in data_dir.iterdir() if not p.name.startswith(".")):
        return [Check("data folder", f"{data_dir}: missing or empty", MISSING, fix)]
    try:
        from .verify import verify_folder
    except ImportError:  # torch, torchvision, pandas or Pillow missing: reported by their own rows
        return [Check("data folder", f"{data_dir}: not checked (packages missing)", MISSING, _INSTALL)]
    report = verify_folder(data_dir, check="decode" if verify_images else "header")
    counts = report.images["class_name"].value_counts()
    found = ", ".join(f"{name} {int(counts.get(name, 0))}" for name in report.classes) or "no class subfolders"
    rows = [Check("data folder", str(data_dir), OK)]
    if report.errors:
        rows.append(Check("classes", found, MISSING, " ".join(report.errors) + f" Or: {fix}"))
    else:
        rows.append(Check("classes", found, OK))
    loud = report.loud
    checked = f"{'decoded' if verify_images else 'headers read'}"
    if len(loud):
        listing = _listing(list(zip(loud["file_path"], loud["reason"])))
        rows.append(Check("unreadable files", f"{len(loud)} skipped ({checked})", WARN,
                          f"the lessons leave these out; replace or remove them (or run tlcourse download-data "
                          f"again for the example set): {listing}"))
    else:
        rows.append(Check("unreadable files", f"none of {len(report.images)} ({checked})", OK))
    return rows


def check_weights(config: Config) -> list[Check]:
    """Which supported backbones have pretrained weights in the torch cache; the configured one is required."""
    try:
        from .models import SUPPORTED_BACKBONES, weights_enum, weights_path
    except ImportError:
        return [Check("pretrained weights", "unknown (torch/torchvision not installed)", MISSING, _INSTALL)]
    names = list(dict.fromkeys([config.backbone, *SUPPORTED_BACKBONES]))
    rows = []
    for name in names:
        try:
            path = weights_path(weights_enum(name))
        except ValueError as error:
            rows.append(Check(f"weights {name}", "unknown backbone", MISSING,
                              f"set TLCOURSE_BACKBONE to one of {', '.join(SUPPORTED_BACKBONES)} ({error})"))
            continue
        needed = name == config.backbone
        if path.is_file():
            rows.append(Check(f"weights {name}", f"cached ({path})", OK))
        else:
            fix = f"tlcourse prefetch-weights {name}" + (f"  (or: tlcourse prefetch-weights {name} --from DIR)"
                                                         if needed else "")
            rows.append(Check(f"weights {name}" + (" (lessons)" if needed else ""), f"not cached ({path.parent})",
                              MISSING if needed else INFO, fix))
    return rows


def run_checks(config: Config, data_dir: str | Path | None = None, verify_images: bool = True) -> list[Check]:
    """Every check, in the order of the table (``data_dir``: default the configured one)."""
    return [
        check_python(),
        _package("torch", MINIMUM["torch"], _INSTALL),
        _package("torchvision", MINIMUM["torchvision"], _INSTALL),
        _package("jupyterlab", MINIMUM["jupyterlab"], _INSTALL, "JupyterLab"),
        _package("ipywidgets", MINIMUM["ipywidgets"], _INSTALL),
        check_widget_frontend(),
        check_device(config),
        *check_data(Path(data_dir or config.data_dir), verify_images),
        *check_weights(config),
    ]


def format_table(checks: list[Check]) -> str:
    """The checks as an aligned text table, followed by the fixes for what is missing."""
    marks = {OK: "ok", INFO: "--", WARN: "warn", MISSING: "MISSING"}
    name_w = max(len(c.name) for c in checks)
    mark_w = max(len(m) for m in marks.values())
    lines = [f"{'check':<{name_w}}  {'status':<{mark_w}}  found", "-" * (name_w + mark_w + 40)]
    lines += [f"{c.name:<{name_w}}  {marks[c.status]:<{mark_w}}  {c.found}" for c in checks]
    problems = [c for c in checks if c.status == MISSING]
    lines.append("")
    if problems:
        lines.append(f"Not ready: {len(problems)} problem(s). Fix:")
        lines += [f"  - {c.name}: {c.fix}" for c in problems]
    else:
        lines.append("Ready: everything the lessons need is here.")
    for status, title in ((WARN, "Worth fixing:"), (INFO, "Optional:")):  # a warn row always has a fix
        rows = [f"  - {c.name}: {c.fix}" for c in checks if c.status == status and c.fix]
        lines += [title, *rows] if rows else []
    return "\n".join(lines)
