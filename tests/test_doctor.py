"""``tlcourse doctor``: exit 0 on a ready machine, non-zero with the fix on broken ones."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import pytest

from tlcourse import cli, doctor
from tlcourse.config import get_config


@pytest.fixture
def small_data(tmp_path, data_dir) -> Path:
    """4 real photos per class."""
    root = tmp_path / "data"
    for name in ("dog", "hotdog"):
        (root / name).mkdir(parents=True)
        for path in sorted((data_dir / name).glob("*.jpg"))[:4]:
            shutil.copyfile(path, root / name / path.name)
    return root


def run_doctor(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(["doctor", *args])
    return code, capsys.readouterr().out


def test_ready_machine(data_dir, real_weights, monkeypatch, capsys):
    """The real photos (every one decoded) and the real MobileNetV2 weights: ready, exit 0."""
    monkeypatch.setenv("TLCOURSE_DATA", str(data_dir))
    code, out = run_doctor(capsys)
    assert code == 0, out
    for row in ("Python", "torch", "torchvision", "JupyterLab", "ipywidgets", "widget front end", "device",
                "data folder", "classes", "unreadable files", "weights mobilenet_v2"):
        assert row in out
    assert "dog 717, hotdog 717" in out
    assert "none of 1434" in out
    assert "Ready:" in out and "MISSING" not in out
    assert importlib.metadata.version("torch") in out


def test_no_data(tmp_path, real_weights, monkeypatch, capsys):
    monkeypatch.setenv("TLCOURSE_DATA", str(tmp_path / "data"))
    code, out = run_doctor(capsys)
    assert code == 1
    assert "data folder" in out and "MISSING" in out
    assert f"tlcourse download-data --dest {tmp_path / 'data'}" in out


def test_empty_data_folder_and_data_option(tmp_path, real_weights, capsys):
    (tmp_path / "empty").mkdir()
    code, out = run_doctor(capsys, "--data", str(tmp_path / "empty"))
    assert code == 1 and "missing or empty" in out and "tlcourse download-data" in out


def test_no_cached_weights(tmp_path, small_data, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.setenv("TLCOURSE_DATA", str(small_data))
    code, out = run_doctor(capsys)
    assert code == 1
    assert "weights mobilenet_v2 (lessons)" in out and "not cached" in out
    assert "tlcourse prefetch-weights mobilenet_v2" in out
    assert "Not ready: 1 problem(s)" in out  # the data is fine: only the weights are missing


def test_configured_backbone_is_the_one_required(tmp_path, small_data, real_weights, monkeypatch, capsys):
    monkeypatch.setenv("TLCOURSE_BACKBONE", "resnet18")
    code, out = run_doctor(capsys, "--data", str(small_data), "--quick")
    assert code == 1 and "tlcourse prefetch-weights resnet18" in out


def test_one_class_only(tmp_path, small_data, real_weights, capsys):
    shutil.rmtree(small_data / "hotdog")
    code, out = run_doctor(capsys, "--data", str(small_data))
    assert code == 1 and "classes" in out and "two classes" in out


def test_unreadable_files_are_named(small_data, real_weights, capsys):
    photo = next((small_data / "dog").glob("*.jpg"))
    truncated = small_data / "dog" / "truncated.jpg"
    truncated.write_bytes(photo.read_bytes()[:2000])
    (small_data / "hotdog" / "notes.jpg").write_text("not a photo")
    checks = doctor.check_data(small_data)
    row = next(c for c in checks if c.name == "unreadable files")
    # A warning, not a problem: the lessons leave such files out, and 4 good photos per class remain.
    assert row.status == doctor.WARN
    assert row.found.startswith("2 skipped")
    assert "truncated.jpg" in row.fix and "notes.jpg" in row.fix
    assert [c.status for c in checks if c.name == "classes"] == [doctor.OK]
    code, out = run_doctor(capsys, "--data", str(small_data))
    assert "truncated.jpg" in out and "notes.jpg" in out
    assert code == 0 and "Ready:" in out, out  # the real weights are there: warnings alone do not fail


def test_missing_package_gives_the_install_command(monkeypatch):
    real_version = importlib.metadata.version

    def version(name):
        if name in {"jupyterlab", "jupyterlab_widgets"}:
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    lab = doctor._package("jupyterlab", doctor.MINIMUM["jupyterlab"], doctor._INSTALL, "JupyterLab")
    assert lab.status == doctor.MISSING and "pip install" in lab.fix
    widgets = doctor.check_widget_frontend()
    assert widgets.status == doctor.MISSING and "jupyterlab_widgets" in widgets.fix


def test_too_old_package(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.13.0")
    row = doctor._package("torch", doctor.MINIMUM["torch"], doctor._INSTALL)
    assert row.status == doctor.MISSING and "need >= 2.1" in row.found and "torch>=2.1" in row.fix


def test_version_parsing():
    assert doctor._version_tuple("2.14.1+cpu") == (2, 14, 1)
    assert doctor._version_tuple("4.0.0rc1") == (4, 0, 0)
    assert doctor._version_tuple("0.29.1") >= doctor.MINIMUM["torchvision"]


def test_unavailable_device_is_reported(monkeypatch):
    import torch

    monkeypatch.setenv("TLCOURSE_DEVICE", "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    row = doctor.check_device(get_config())
    assert row.status == doctor.MISSING and "TLCOURSE_DEVICE=auto" in row.fix


def test_table_lists_every_fix():
    checks = [doctor.Check("a", "x", doctor.OK), doctor.Check("b", "y", doctor.MISSING, "do b"),
              doctor.Check("c", "z", doctor.INFO, "maybe c")]
    text = doctor.format_table(checks)
    assert "Not ready: 1 problem(s)" in text and "- b: do b" in text and "- c: maybe c" in text
