"""The training dashboard in a real JupyterLab, driven by headless Chromium.

Starts JupyterLab on loopback in a temporary root with a small notebook, runs
it (as "Run All": the training cell, then a cell that evaluates and prints),
checks that the dashboard rendered (progress bars, the curves, the sample
photo, how to stop), saves screenshots to ``test-artifacts/``, presses the
toolbar's Interrupt button and checks that training ended cleanly (best weights,
summary) and the next cell ran.

Needs Chromium (Debian's ``chromium``; ``CHROMIUM_PATH`` overrides
``/usr/bin/chromium``) and Python Playwright. Skipped where they are missing,
except in CI, where that fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from conftest import _require  # the suite's one rule for missing material: skip here, fail in CI

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
EPOCHS = 40  # the bar's total; training never reaches it: it waits for Interrupt after HOLD_AFTER epochs
HOLD_AFTER = 2  # finished epochs (both curves have points) before training may wait for the test's Interrupt
HOLD_LIMIT_S = 600  # without an Interrupt, training stops by itself after waiting this long
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(1200)]  # the waits below add up to less



def _chromium() -> str:
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
    _require(Path(path).is_file(), f"Chromium ({path}; install Debian's chromium or set CHROMIUM_PATH)")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the server's process: get SIGTERM when pytest dies (say, killed by a timeout), so the
    server still shuts its kernel down instead of training on, orphaned."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _notebook(per_class: int, batch_size: int) -> nbformat.NotebookNode:
    """The notebook the browser runs; kernelspec metadata so JupyterLab asks no questions."""
    cells = [
        nbformat.v4.new_code_cell(
            "from tlcourse.config import get_config\n"
            "from tlcourse.dashboard import TrainingDashboard\n"
            "from tlcourse.data import load_course_data\n"
            "from tlcourse.models import build_model\n"
            "from tlcourse.recipes import train_frozen\n"
            "from tlcourse.training import evaluate\n"
            "cfg = get_config()\n"
            "model = build_model(2, offline=cfg.offline)  # MobileNetV2 with its ImageNet weights\n"
            f"data = load_course_data(cfg.data_dir, model.transform_settings, per_class={per_class})\n"
            "print('ready', data.split.sizes())"
        ),
        nbformat.v4.new_code_cell(
            "import time\n"
            "from tlcourse.training import Callback\n"
            "class WaitForInterrupt(Callback):\n"
            "    # Training ends on an event, the Interrupt the test presses, not after a number of epochs that\n"
            "    # a fast machine would finish first: once the first epochs are done and the dashboard has drawn\n"
            "    # its curves and photo twice (it draws within a time budget, so not on every epoch), each batch\n"
            "    # waits for it (bounded).\n"
            "    def on_batch_end(self, state):\n"
            f"        if len(state.history.epochs) >= {HOLD_AFTER} and dash.draws >= 2:\n"
            f"            deadline = time.monotonic() + {HOLD_LIMIT_S}\n"
            "            while time.monotonic() < deadline:\n"
            "                time.sleep(0.1)  # KeyboardInterrupt lands here\n"
            "            state.stop_requested = True\n"
            "dash = TrainingDashboard(data.classes, settings=model.transform_settings, dataset=data.dataset('train'),\n"
            "                         title='Weight freezing: training the new head', mode=cfg.dashboard)\n"
            "# cache=False: the backbone runs on every batch of photos, as in a long training run.\n"
            f"history = train_frozen(model, data, epochs={EPOCHS}, lr=1e-3, batch_size={batch_size}, "
            "cache=False, callbacks=[dash, WaitForInterrupt()])"
        ),
        nbformat.v4.new_code_cell(
            f"val = evaluate(model, data.loader('val', {batch_size}))\n"
            "print(f\"interrupted={history.interrupted} epochs_run={len(history.epochs)} \"\n"
            "      f\"best_epoch={history.best_epoch} val_acc={val['accuracy']:.3f}\")"
        ),
    ]
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                       "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


class JupyterLab:
    """A JupyterLab server on loopback in its own temporary root and config folders."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root = root
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root.parent / "jupyterlab.log"
        config = root.parent / "jupyter-config"
        (config / "labconfig").mkdir(parents=True)
        # No "get Jupyter news?" toast over the page.
        (config / "labconfig" / "page_config.json").write_text(
            json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
        )
        self.env = {**env, "JUPYTER_CONFIG_DIR": str(config),
                    "JUPYTER_DATA_DIR": str(root.parent / "jupyter-data"),
                    "JUPYTER_RUNTIME_DIR": str(root.parent / "jupyter-runtime"),
                    "IPYTHONDIR": str(root.parent / "ipython")}
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> None:
        command = [
            sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
            f"--port={self.port}", "--port-retries=0", f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}", "--LabApp.expose_app_in_browser=True",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly", "--allow-root",  # CI runs as root, offline
        ]
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=self.root, env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.api("status")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        pytest.fail(f"JupyterLab did not answer on {self.url} within {timeout} s:\n{self.log_tail()}")

    def api(self, path: str, method: str = "GET") -> object:
        request = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is None:
            return
        try:  # shut kernels down through the API so none is left behind
            for kernel in self.api("kernels"):  # type: ignore[union-attr]
                self.api(f"kernels/{kernel['id']}", method="DELETE")
        except Exception:
            pass
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()


@contextlib.contextmanager
def serving(notebook: nbformat.NotebookNode, name: str, tmp_path: Path, data_dir: Path):
    """A JupyterLab serving ``notebook`` as ``name`` from a temporary folder, with widgets on and the
    outputs in ``tmp_path/outputs``."""
    root = tmp_path / "root"
    root.mkdir()
    nbformat.write(notebook, root / name)
    env = {**os.environ, "TLCOURSE_DASHBOARD": "widgets", "TLCOURSE_DATA": str(data_dir),
           "TLCOURSE_OUTPUT": str(tmp_path / "outputs"), "PYTHONUNBUFFERED": "1"}
    server = JupyterLab(root, env)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def lab(tmp_path, data_dir, real_weights):
    with serving(_notebook(per_class=24, batch_size=8), "dashboard_check.ipynb", tmp_path, data_dir) as server:
        yield server


@contextlib.contextmanager
def notebook_page(lab: JupyterLab, notebook: str, failure_png: str):
    """Open ``notebook`` in JupyterLab in headless Chromium, wait for its kernel and Run All Cells, as a
    learner would. Yields ``(page, fail)``: ``fail(message)`` saves a screenshot and fails the test with
    the browser console and the server log."""
    try:
        from playwright import sync_api as playwright_api
    except ImportError:
        playwright_api = None
    _require(playwright_api is not None, "Python Playwright (pip install playwright)")
    chromium = _chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    console: list[str] = []

    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))

            def fail(message: str) -> None:
                page.screenshot(path=str(ARTIFACTS / failure_png), full_page=True)
                pytest.fail(f"{message}\n--- browser console (last 20) ---\n" + "\n".join(console[-20:])
                            + f"\n--- JupyterLab log ---\n{lab.log_tail()}", pytrace=False)

            page.goto(f"{lab.url}/lab/tree/{notebook}?reset&token={lab.token}")
            try:  # the notebook is open and its kernel has started
                page.wait_for_function(
                    "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                    " const k = w && w.sessionContext && w.sessionContext.session"
                    " && w.sessionContext.session.kernel; return !!k && k.status === 'idle'; }",
                    timeout=180_000, polling=500,
                )
            except Exception:
                fail("The notebook did not open with an idle kernel within 3 minutes.")
            # What a learner does: Run > Run All Cells.
            # (Not awaited: the command's promise settles only when every cell has run.)
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            yield page, fail
        finally:
            browser.close()


def _text(page, selector: str) -> str:
    """An element's text. textContent, not innerText: it does not depend on layout, which
    JupyterLab skips for cells scrolled out of view."""
    return page.locator(selector).first.text_content(timeout=30_000) or ""


def _epoch_shown(page) -> int:
    """The epochs bar's count (tqdm's "3/40 [...]")."""
    match = re.search(rf"(\d+)/{EPOCHS}\s\[", _text(page, ".tlcourse-dashboard"))  # tqdm's spaces are U+2007
    return int(match.group(1)) if match else 0


def test_dashboard_in_jupyterlab(lab):
    # The last cell's request waits in the kernel's queue behind the training cell.
    with notebook_page(lab, "dashboard_check.ipynb", "dashboard-failure.png") as (page, fail):
        dashboard = page.locator(".tlcourse-dashboard")
        try:
            dashboard.wait_for(state="visible", timeout=300_000)
        except Exception:
            fail("The dashboard did not appear within 5 minutes of running the notebook.")

        # Let it finish HOLD_AFTER epochs, so both curves have points; then training waits for Interrupt.
        started = time.monotonic()
        last_report = started
        speed = re.compile(r"\d+/\d+\s\[\d+:\d+<\d+:\d+")  # tqdm: done/total [elapsed<left, rate]
        while _epoch_shown(page) < HOLD_AFTER:
            if time.monotonic() - started > 600:
                fail(f"Training did not finish {HOLD_AFTER} epochs within 10 minutes.")
            if "Done" in _text(page, ".tlcourse-status"):
                fail("Training finished before the test could press Interrupt.")
            if time.monotonic() - last_report > 20:  # progress in the log, for slow machines
                last_report = time.monotonic()
                print(f"[browser test] {last_report - started:.0f} s: {_text(page, '.tlcourse-dashboard')[:300]}",
                      flush=True)
            page.wait_for_timeout(500)
        page.wait_for_timeout(1500)  # let the next redraw of curves and photo land

        # Rendered: two progress bars, the curves, the sample photo with labels, how to stop.
        if page.locator(".tlcourse-dashboard .widget-hprogress").count() != 2:
            fail("The two progress bars (epochs, batches) are missing.")
        for name, what in (("curves", "loss and accuracy plots"), ("sample", "sample photo")):
            try:  # an <img> whose picture has loaded (a new picture replaces it now and then)
                page.wait_for_function(
                    f"() => {{ const i = document.querySelector('img.tlcourse-{name}');"
                    " return !!i && i.complete && i.naturalWidth > 100; }", timeout=60_000, polling=250)
            except Exception:
                fail(f"The {what} did not show within a minute.")
        text = _text(page, ".tlcourse-dashboard")
        if not re.search(r"true: \w+\s*predicted: \w+ \(\d+%\)", text):
            fail(f"The sample photo's labels are missing; the dashboard says:\n{text}")
        if not speed.search(text):
            fail(f"The progress bars show no time elapsed and left; the dashboard says:\n{text}")
        if "Interrupt the kernel" not in _text(page, ".tlcourse-summary"):
            fail("The dashboard does not say how to stop early.")
        dashboard.screenshot(path=str(ARTIFACTS / "dashboard-mid-training.png"))
        page.screenshot(path=str(ARTIFACTS / "dashboard-mid-training-page.png"))

        # What a learner does: the notebook toolbar's Interrupt button (the square).
        interrupt = page.locator(".jp-NotebookPanel-toolbar [data-command='notebook:interrupt-kernel']")
        if interrupt.count() != 1:
            fail("The notebook toolbar has no Interrupt button.")
        interrupt.first.click()
        result = page.get_by_text(re.compile(r"interrupted=\w+ epochs_run=\d+"))
        try:
            result.wait_for(timeout=300_000)
        except Exception:
            fail("After Interrupt, the next cell printed nothing within 5 minutes.")
        line = result.text_content() or ""
        match = re.search(r"interrupted=(\w+) epochs_run=(\d+)", line)
        if not (match.group(1) == "True" and HOLD_AFTER <= int(match.group(2)) < EPOCHS):
            fail(f"Training did not end cleanly after Interrupt: {line}")
        summary = _text(page, ".tlcourse-summary")
        if not ("(interrupted)" in summary and "best epoch" in summary
                and "Interrupted" in _text(page, ".tlcourse-status")):
            fail(f"The dashboard does not show the interrupted run's summary: {summary}")
        dashboard.scroll_into_view_if_needed()
        dashboard.screenshot(path=str(ARTIFACTS / "dashboard-interrupted.png"))
