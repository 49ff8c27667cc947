"""The photo tester, augmentation explorer and mistakes browser in a real JupyterLab, in headless Chromium.

A small notebook (real MobileNetV2 backbone, untrained head: the prediction's
value does not matter here, only that it appears) shows the three widgets. The
test uploads a photo through the real ``FileUpload`` (its button's file chooser), waits for the
prediction, moves an augmentation slider with the keyboard and waits for the grid
to change, clicks Next and Mark in the mistakes browser, and saves screenshots
to ``test-artifacts/``. The JupyterLab server and browser set-up come from
tests/test_browser.py.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from test_browser import ARTIFACTS, notebook_page, serving

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(1200)]  # the waits below add up to less


def _notebook() -> nbformat.NotebookNode:
    cells = [
        "import torch\n"
        "from tlcourse.config import get_config\n"
        "from tlcourse.data import load_course_data\n"
        "from tlcourse.evaluation import predict\n"
        "from tlcourse.models import build_model\n"
        "from tlcourse.widgets import AugmentationExplorer, MistakesBrowser, PhotoTester\n"
        "cfg = get_config()\n"
        "torch.manual_seed(0)\n"
        "model = build_model(2)  # the real ImageNet backbone with an untrained head\n"
        "data = load_course_data(cfg.data_dir, model.transform_settings, per_class=20, exclusions=cfg.excluded_csv)\n"
        "test = data.part('test')\n"
        "results = predict(model, data.loader('test'))\n"
        "results['file_path'] = test['file_path'].to_numpy()\n"
        "print('ready', len(results))",
        "PhotoTester(model, data.classes, mode='widgets').show()",
        "AugmentationExplorer(test['file_path'][0], model.transform_settings, mode='widgets').show()",
        "MistakesBrowser(results, data.classes, exclusions=cfg.excluded_csv, mode='widgets').show()",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                       "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


@pytest.fixture
def lab(tmp_path, data_dir, real_weights):
    with serving(_notebook(), "widgets_check.ipynb", tmp_path, data_dir) as server:
        yield server


def test_widgets_in_jupyterlab(lab, data_dir, tmp_path):
    photo = sorted((data_dir / "hotdog").glob("*.jpg"))[0]
    with notebook_page(lab, "widgets_check.ipynb", "widgets-failure.png") as (page, fail):
        # 1. Photo tester: upload through the real file input, see the prediction.
        tester = page.locator(".tlcourse-photo-tester")
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                              has_text=re.compile(r"Traceback|Error"))
        started = time.monotonic()
        while not tester.is_visible():  # a cell that fails says so at once, rather than after minutes
            if errors.count():
                fail(f"A cell failed:\n{errors.first.text_content()}")
            if time.monotonic() - started > 300:
                fail("The photo tester did not appear within 5 minutes of running the notebook.")
            page.wait_for_timeout(500)
        # ipywidgets' upload button opens its own (detached) file input: answer its file chooser,
        # which sets the files on that real input element as set_input_files would.
        with page.expect_file_chooser(timeout=30_000) as chooser:
            tester.locator(".widget-upload").click()
        chooser.value.set_files(str(photo))
        verdict = tester.locator(".tlcourse-verdict")
        try:
            verdict.wait_for(timeout=60_000)
            page.wait_for_function(
                "() => { const i = document.querySelector('.tlcourse-photo-tester img.tlcourse-tested-photo');"
                " return !!i && i.complete && i.naturalWidth > 0; }", timeout=30_000, polling=250)
        except Exception:
            fail("No prediction appeared within a minute of uploading a photo.")
        text = tester.text_content() or ""
        if not (re.search(r"(dog|hotdog) \(\d+\.\d%\)", text) and photo.name in text):
            fail(f"The photo tester does not show the prediction for {photo.name}: {text}")
        if tester.locator(".tlcourse-bar").count() != 2:
            fail("The photo tester does not show one probability bar per class.")
        tester.scroll_into_view_if_needed()
        tester.screenshot(path=str(ARTIFACTS / "widgets-photo-tester.png"))

        # 2. Augmentation explorer: move the downscale slider with the keyboard, see the grid change.
        explorer = page.locator(".tlcourse-augment")
        explorer.scroll_into_view_if_needed()
        grid = explorer.locator("img.tlcourse-augment-grid")
        try:
            page.wait_for_function(
                "() => { const i = document.querySelector('img.tlcourse-augment-grid');"
                " return !!i && i.complete && i.naturalWidth > 0; }", timeout=60_000, polling=250)
        except Exception:
            fail("The augmentation grid did not show within a minute.")
        explorer.screenshot(path=str(ARTIFACTS / "widgets-augment-before.png"))
        before = grid.get_attribute("src")
        handle = explorer.locator(".widget-slider").nth(2).locator(".noUi-handle")  # downscale chance: 0.5 -> 0.6
        handle.focus()
        for _ in range(2):
            handle.press("ArrowRight")
        try:
            page.wait_for_function(  # two steps of 0.05: the transform shown and the grid follow
                "(old) => { const i = document.querySelector('img.tlcourse-augment-grid');"
                " const c = document.querySelector('.tlcourse-augment-code').textContent;"
                " return c.includes('p=0.6)') && !!i && i.src !== old"
                " && i.complete && i.naturalWidth > 0; }",
                arg=before, timeout=60_000, polling=250)
        except Exception:
            code = explorer.locator(".tlcourse-augment-code").text_content()
            fail(f"Moving the downscale chance to 0.6 did not redraw the grid and the transform: {code}")
        page.wait_for_timeout(500)  # let the new grid paint before the screenshot
        explorer.screenshot(path=str(ARTIFACTS / "widgets-augment-after.png"))

        # 3. Mistakes browser: Next, then mark the photo (it goes to the exclusion list).
        mistakes = page.locator(".tlcourse-mistakes")
        mistakes.scroll_into_view_if_needed()
        position = mistakes.locator(".tlcourse-position")
        first_info = mistakes.locator(".tlcourse-mistake-info").text_content() or ""
        match = re.search(r"1 / (\d+)", position.text_content() or "")
        if not match:
            fail(f"The mistakes browser does not show its position: {position.text_content()}")
        mistakes.locator("button.tlcourse-next").click()
        try:
            page.wait_for_function(
                "() => /^2 \\/ \\d+/.test(document.querySelector('.tlcourse-position').textContent.trim())",
                timeout=30_000, polling=250)
        except Exception:
            fail("Clicking Next did not move the mistakes browser to the second photo.")
        info = mistakes.locator(".tlcourse-mistake-info")
        try:
            page.wait_for_function("(old) => document.querySelector('.tlcourse-mistake-info').textContent !== old",
                                   arg=first_info, timeout=30_000)
        except Exception:
            fail("Clicking Next did not change the photo's description in the mistakes browser.")
        shown = re.search(r"(\S+\.jpg)", info.text_content() or "").group(1)
        mistakes.locator("button.tlcourse-mark").click()
        try:
            mistakes.locator(".tlcourse-marked").wait_for(timeout=30_000)
        except Exception:
            fail("Marking the photo did not show it as left out.")
        mistakes.screenshot(path=str(ARTIFACTS / "widgets-mistakes.png"))
    listed = pd.read_csv(tmp_path / "outputs" / "excluded.csv")
    assert [Path(p).name for p in listed["file_path"]] == [shown]
