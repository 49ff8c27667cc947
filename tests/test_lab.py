"""The README's lab command works: JupyterLab from the course's environment starts on the lessons,
answers its server's status API and the lab page, and stops cleanly.

This is what `make lab` runs (`jupyter lab notebooks/`), minus the browser. Fast, so it runs in CI.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 120  # seconds; generous for a loaded machine, it only bounds a failure
STOP_TIMEOUT = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, token: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server started like `make lab`, on a free loopback port, with a token."""
    jupyter = Path(sys.executable).parent / "jupyter"  # the one installed in the course's environment
    assert jupyter.exists(), f"{jupyter} is missing: install the lab extra (pip install -e '.[lab]')"
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))  # no files left in ~/.local
    command = [str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT / 'notebooks'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # as the Makefile's LAB_FLAGS does (containers, CI machines)
    log = (tmp_path / "lab.log").open("w+")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"jupyter lab exited with {process.returncode}:\n{log.read()[-3000:]}")
            try:
                status, _ = get(f"{base}/api/status", token)
                if status == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"jupyter lab did not answer within {START_TIMEOUT} s:\n{log.read()[-3000:]}")
            time.sleep(0.5)
        yield base, token, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # jupyter_server shuts down cleanly on SIGTERM
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)  # SIGKILL cannot be ignored: a bounded wait, never a hang
        log.close()


def test_jupyter_lab_starts_answers_and_stops(lab):
    base, token, process = lab
    status, body = get(f"{base}/api/status", token)
    assert status == 200
    assert "started" in json.loads(body)
    # The lab itself is served (the page a browser would open).
    status, page = get(f"{base}/lab", token)
    assert status == 200 and b"JupyterLab" in page
    # It serves the lessons folder, like `jupyter lab notebooks/`.
    status, body = get(f"{base}/api/contents/", token)
    listing = json.loads(body)
    assert status == 200 and listing["type"] == "directory"
    assert {item["name"] for item in listing["content"]} >= {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    # The token is required: without it the API refuses.
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{base}/api/contents/", timeout=10)
    assert info.value.code == 403

    # A clean stop: the server's own shutdown endpoint, then the process ends by itself.
    request = urllib.request.Request(f"{base}/api/shutdown", method="POST",
                                     headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 202, 204)
    assert process.wait(STOP_TIMEOUT) == 0


def test_make_lab_runs_this_command():
    # The fixture above mirrors the Makefile's lab recipe; keep the two in step.
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nlab:", 1)[1].split("\n\n", 1)[0]
    assert "$(BIN)/jupyter lab" in recipe and "notebooks/" in recipe
    assert "--allow-root" in makefile  # needed where the course runs as root (containers, CI)
