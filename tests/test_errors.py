"""Expected errors are one line with the fix; a bug keeps its traceback; bad photos are skipped, named, never touched."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tlcourse import cli
from tlcourse.errors import CheckpointError, DataError, DownloadError, ImageLoadError, TLCourseError


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (and the list of names itself)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(*args: str, output: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TLCOURSE_OUTPUT": str(output), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "tlcourse", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_package_errors_share_one_base_and_keep_their_old_types():
    assert issubclass(DataError, ValueError) and issubclass(CheckpointError, ValueError)
    assert issubclass(ImageLoadError, OSError) and issubclass(DownloadError, RuntimeError)
    assert all(issubclass(e, TLCourseError) for e in (DataError, CheckpointError, ImageLoadError, DownloadError))


def test_an_expected_error_is_one_line_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    def expected(args):
        raise DataError("Data folder not found: x.\nFix: point TLCOURSE_DATA at it.")

    monkeypatch.setattr(cli, "cmd_doctor", expected)
    assert cli.main(["doctor"]) == 1
    assert capsys.readouterr().err == "tlcourse: error: Data folder not found: x. Fix: point TLCOURSE_DATA at it.\n"

    def bug(args):
        raise KeyError("a real bug")

    monkeypatch.setattr(cli, "cmd_doctor", bug)
    with pytest.raises(KeyError):  # not turned into a message: the traceback shows where it is
        cli.main(["doctor"])


def test_train_skips_and_names_bad_photos_and_never_touches_the_folder(tmp_path, data_dir, real_weights):
    photos = tmp_path / "photos"
    for name in ("dog", "hotdog"):
        (photos / name).mkdir(parents=True)
        for source in sorted((data_dir / name).glob("*.jpg"))[:12]:
            shutil.copyfile(source, photos / name / source.name)
    good = sorted((photos / "dog").glob("*.jpg"))[0].read_bytes()
    (photos / "dog" / "truncated.jpg").write_bytes(good[: len(good) // 3])  # the header still reads fine
    (photos / "dog" / "empty.jpg").write_bytes(b"")
    (photos / "hotdog" / "noise.jpg").write_bytes(random.Random(0).randbytes(5000))
    before = checksums(photos)

    result = run_cli("train", str(photos), "--epochs", "1", "--out", str(tmp_path / "model.pt"),
                     output=tmp_path / "outputs")
    assert result.returncode == 0, result.stderr
    for name, reason in (("truncated.jpg", "corrupt or truncated"), ("empty.jpg", "empty file"),
                         ("noise.jpg", "not an image")):
        assert any(name in line and reason in line for line in result.stderr.splitlines()), (name, result.stderr)
    assert "Traceback" not in result.stderr
    assert "24 photos" in result.stderr  # trained on the 24 good ones
    assert "test accuracy" in result.stdout and (tmp_path / "model.pt").is_file()
    assert checksums(photos) == before  # byte for byte, and no file added or removed


def test_train_on_a_missing_folder_is_one_line_without_traceback(tmp_path):
    result = run_cli("train", str(tmp_path / "nope"), output=tmp_path / "outputs")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Data folder not found" in lines[0] and "TLCOURSE_DATA" in lines[0]
    assert "Traceback" not in result.stderr
