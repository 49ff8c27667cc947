"""The Makefile's install step: which index torch comes from, and the fallback when the CPU-only index
cannot be reached. Nothing is downloaded: ``make`` runs with ``VENV`` pointing at a fake virtual
environment whose ``python`` logs every ``pip`` call (and does nothing), while the probe of the index
(``python -c ...``) runs for real, against servers on 127.0.0.1.
"""

from __future__ import annotations

import platform
import shutil
import socket
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from test_download import _closed_port

ROOT = Path(__file__).resolve().parents[1]
PIN = "torch==2.14.1 torchvision==0.29.1"
NOTICE = "cannot be reached: installing torch==2.14.1 torchvision==0.29.1 from the default index"

pytestmark = pytest.mark.skipif(shutil.which("make") is None or sys.platform == "win32", reason="needs make and sh")


@pytest.fixture
def fake_venv(tmp_path) -> Path:
    """A venv whose python runs ``-c`` code for real and only logs ``-m pip ...`` (one line per call)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f"""#!/bin/sh
if [ "$1" = "-c" ]; then exec {sys.executable} "$@"; fi
echo "$*" >> "{tmp_path / 'pip.log'}"
""")
    python.chmod(0o755)
    return venv


def install(venv: Path, *settings: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run the Makefile's install target with ``settings``; return the result and the logged pip calls."""
    result = subprocess.run(["make", "-C", str(ROOT), f"VENV={venv}", *settings, f"{venv}/.installed"],
                            capture_output=True, text=True, timeout=120)  # a bound against a hang, not a speed check
    log = venv.parent / "pip.log"
    return result, log.read_text().splitlines() if log.exists() else []


def test_cpu_index_unreachable_falls_back_to_the_default_index(fake_venv):
    result, calls = install(fake_venv, "TORCH_INDEX=cpu", f"TORCH_CPU_INDEX=http://127.0.0.1:{_closed_port()}/whl/cpu")
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stdout.splitlines() if NOTICE in line]
    assert len(notices) == 1, result.stdout  # one line says so
    assert calls == [f"-m pip install --quiet {PIN}", f'-m pip install --quiet -e .[lab,test] {PIN}']
    assert (fake_venv / ".installed").exists()


def test_cpu_index_that_never_answers_falls_back_after_the_timeout(fake_venv):
    with socket.socket() as silent:  # accepts connections (kernel backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/whl/cpu"
        result, calls = install(fake_venv, "TORCH_INDEX=cpu", f"TORCH_CPU_INDEX={url}", "TORCH_INDEX_TIMEOUT=1")
    assert result.returncode == 0, result.stderr
    assert NOTICE in result.stdout
    assert calls[0] == f"-m pip install --quiet {PIN}"


def test_cpu_index_reachable_installs_from_it(fake_venv, tmp_path):
    (tmp_path / "index" / "whl" / "cpu").mkdir(parents=True)
    (tmp_path / "index" / "whl" / "cpu" / "index.html").write_text("<html></html>")
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(tmp_path / "index")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"
        result, calls = install(fake_venv, "TORCH_INDEX=cpu", f"TORCH_CPU_INDEX={url}")
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    assert NOTICE not in result.stdout and "CPU-only index" in result.stdout
    assert calls == [f"-m pip install --quiet --index-url {url} {PIN}", f"-m pip install --quiet -e .[lab,test] {PIN}"]


def test_default_index_never_probes_the_cpu_one(fake_venv):
    result, calls = install(fake_venv, "TORCH_INDEX=default", "TORCH_CPU_INDEX=http://127.0.0.1:1/never")
    assert result.returncode == 0, result.stderr
    assert "CPU-only" not in result.stdout
    assert calls == [f"-m pip install --quiet {PIN}", f"-m pip install --quiet -e .[lab,test] {PIN}"]


def torch_index(*settings: str) -> str:
    """The TORCH_INDEX the Makefile chooses with ``settings``."""
    result = subprocess.run(["make", "-s", "-C", str(ROOT), "-f", "Makefile", "-f", "-", "show", *settings],
                            input="show:\n\t@echo $(TORCH_INDEX)\n", capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_cpu_index_is_the_default_on_linux_without_an_nvidia_driver():
    assert torch_index("OS_NAME=Linux", "NVIDIA_DRIVER=") == "cpu"
    assert torch_index("OS_NAME=Linux", "NVIDIA_DRIVER=yes") == "default"
    assert torch_index("OS_NAME=Darwin", "NVIDIA_DRIVER=") == "default"  # macOS wheels on PyPI have no CUDA
    assert torch_index("OS_NAME=Linux", "NVIDIA_DRIVER=", "TORCH_INDEX=default") == "default"
    # This machine, detected as the Makefile does it (nvidia-smi on PATH, or the driver's /proc folder).
    nvidia = shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia").exists()
    assert torch_index() == ("cpu" if platform.system() == "Linux" and not nvidia else "default")


# --------------------------------------------------------------------------- make data: the photos and the field test
@pytest.fixture
def installed_venv(fake_venv, tmp_path) -> Path:
    """The fake venv, already installed, with a ``tlcourse`` that logs its arguments (exit status: $FAKE_EXIT)."""
    tlcourse = fake_venv / "bin" / "tlcourse"
    tlcourse.write_text(f'#!/bin/sh\necho "$*" >> "{tmp_path / "tlcourse.log"}"\nexit ${{FAKE_EXIT:-0}}\n')
    tlcourse.chmod(0o755)
    (fake_venv / ".installed").touch()  # newer than pyproject.toml: make installs nothing
    return fake_venv


def make_data(venv: Path, *settings: str, fail: bool = False) -> tuple[subprocess.CompletedProcess, list[str]]:
    env = {"PATH": "/usr/bin:/bin", "FAKE_EXIT": "1" if fail else "0"}
    result = subprocess.run(["make", "-C", str(ROOT), f"VENV={venv}", *settings, "data"], env=env,
                            capture_output=True, text=True, timeout=120)
    log = venv.parent / "tlcourse.log"
    return result, log.read_text().splitlines() if log.exists() else []


def filled(folder: Path) -> Path:
    (folder / "dog").mkdir(parents=True)
    (folder / "dog" / "a.jpg").write_bytes(b"x")
    return folder


def test_make_data_fetches_what_is_missing(installed_venv, tmp_path):
    photos, field = tmp_path / "photos", tmp_path / "field"
    result, calls = make_data(installed_venv, f"TLCOURSE_DATA={photos}", f"TLCOURSE_FIELD_TEST={field}")
    assert result.returncode == 0, result.stderr
    assert calls == [f"download-data --only photos --dest {photos} --field-test-dest {field}",
                     f"download-data --only field-test --dest {photos} --field-test-dest {field}"]


def test_make_data_leaves_filled_folders_alone(installed_venv, tmp_path):
    photos, field = filled(tmp_path / "photos"), filled(tmp_path / "field")
    result, calls = make_data(installed_venv, f"TLCOURSE_DATA={photos}", f"TLCOURSE_FIELD_TEST={field}")
    assert result.returncode == 0 and calls == []
    assert "Photos found" in result.stdout and "Field test found" in result.stdout


def test_make_data_goes_on_without_the_field_test(installed_venv, tmp_path):
    photos, field = filled(tmp_path / "photos"), tmp_path / "field"
    result, calls = make_data(installed_venv, f"TLCOURSE_DATA={photos}", f"TLCOURSE_FIELD_TEST={field}", fail=True)
    assert result.returncode == 0, result.stderr  # the lab still opens: the lessons say how to get it
    assert calls == [f"download-data --only field-test --dest {photos} --field-test-dest {field}"]
    assert "field test was not downloaded" in result.stdout
