"""The training dashboard, driven through the training callbacks without a browser.

A tiny model on synthetic data; widgets are real ipywidgets objects (without a
front end they simply have no view). The last tests start a real Jupyter
kernel and click the Stop button the way JupyterLab does, over the kernel's
shell channel, while the training cell is busy.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import re
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.transforms.v2 import functional as TF

from tlcourse import dashboard as dashboard_module
from tlcourse.dashboard import (
    BAR_COLORS,
    KernelEventPump,
    TrainingDashboard,
    curves_svg,
    dashboard_mode,
    format_duration,
)
from tlcourse.data import TransformSettings
from tlcourse.training import Callback, fit

CLASSES = ["dog", "hotdog"]
SETTINGS = TransformSettings()


def _images(n: int = 48, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised, smooth (photo-like, so JPEG keeps them) images whose label is their brightness."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    pixels = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=True)
    y = (pixels.mean((1, 2, 3)) > 0.5).long()
    return TF.normalize(pixels, list(SETTINGS.mean), list(SETTINGS.std)), y


def _setup(batch_size: int = 8, n: int = 48):
    torch.manual_seed(0)
    x, y = _images(n)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
    model = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    return model, loader, optimizer


class Record(Callback):
    """Records what the dashboard should have seen, for reference values."""

    def __init__(self):
        self.running_acc: list[float] = []
        self.first: list[tuple[torch.Tensor, int, torch.Tensor]] = []
        self._correct = self._seen = 0

    def on_epoch_begin(self, state):
        self._correct = self._seen = 0

    def on_batch_end(self, state):
        self._correct += int((state.logits.argmax(1) == state.y).sum())
        self._seen += len(state.y)
        self.running_acc.append(self._correct / self._seen)
        self.first.append((state.x[0].clone(), int(state.y[0]), state.logits[0].clone()))


class StopAt(Callback):
    """Calls ``action`` at one (epoch, batch) position, from inside the training loop."""

    def __init__(self, epoch: int, batch: int | None, action):
        self.epoch, self.batch, self.action = epoch, batch, action

    def on_batch_end(self, state):
        if self.batch is not None and (state.epoch, state.batch) == (self.epoch, self.batch):
            self.action()

    def on_epoch_end(self, state):
        if self.batch is None and state.epoch == self.epoch:
            self.action()


SVG = "{http://www.w3.org/2000/svg}"


def _axis_map(labels: list, attr: str, percent: bool):
    """Pixel -> value, through the first and last tick labels: the plot read as a reader reads it."""
    (p0, v0), (p1, v1) = [(float(t.get(attr)), float(t.text.rstrip("%")) / (100 if percent else 1))
                          for t in (labels[0], labels[-1])]
    return lambda p: v0 + (p - p0) * (v1 - v0) / (p1 - p0)


def _read_plot(svg: str) -> dict[str, list[tuple[float, float]]]:
    """Each line of a curves_svg plot as (x, y) data values, read back through the axes' labels."""
    root = ET.fromstring(svg)  # also checks that it is well-formed
    lines: dict[str, list[tuple[float, float]]] = {}
    for group in root.iter(f"{SVG}g"):
        if group.get("class") not in ("tlcourse-loss", "tlcourse-accuracy"):
            continue  # the legend
        texts = list(group.iter(f"{SVG}text"))
        to_y = _axis_map([t for t in texts if t.get("class") == "ytick"], "y", group.get("class") == "tlcourse-accuracy")
        to_x = _axis_map([t for t in texts if t.get("class") == "xtick"], "x", False)
        for line in group.iter(f"{SVG}polyline"):
            points = [tuple(map(float, p.split(","))) for p in line.get("points").split()]
            lines.setdefault(line.get("data-series"), []).extend((to_x(x), to_y(y)) for x, y in points)
    return lines


def _flat(points) -> list[float]:
    return [value for point in points for value in point]


# --------------------------------------------------------------------------- choosing a front end
def test_mode_from_argument_env_and_auto(monkeypatch):
    monkeypatch.delenv("TLCOURSE_DASHBOARD", raising=False)
    assert dashboard_mode() == "text"  # auto, outside a Jupyter kernel
    assert dashboard_mode("widgets") == "widgets"
    monkeypatch.setenv("TLCOURSE_DASHBOARD", "Widgets ")
    assert dashboard_mode() == "widgets"
    assert dashboard_mode("text") == "text"  # the argument wins over the environment
    monkeypatch.setenv("TLCOURSE_DASHBOARD", "fancy")
    with pytest.raises(ValueError, match="TLCOURSE_DASHBOARD='fancy'.*auto, widgets, text"):
        dashboard_mode()


def test_format_duration():
    assert [format_duration(s) for s in (0.4, 8, 59.6, 125, 3725)] == ["0 s", "8 s", "1 min 00 s",
                                                                       "2 min 05 s", "1 h 02 min"]
    assert format_duration(math.nan) == "?"


# --------------------------------------------------------------------------- text mode
def test_text_mode_prints_one_line_per_epoch(capsys):
    model, loader, optimizer = _setup(batch_size=4)  # 12 batches per epoch
    dash = TrainingDashboard(CLASSES, title="tiny", mode="text")
    history = fit(model, loader, optimizer, 3, val_loader=loader, callbacks=[dash])
    lines = capsys.readouterr().out.splitlines()
    # Header, one line per epoch, summary: however many batches there are.
    assert len(lines) == 2 + 3, lines
    assert lines[0] == "Training tiny: 3 epoch(s) x 12 batches"
    for line, record in zip(lines[1:4], history.epochs):
        assert line.startswith(f"epoch {record['epoch'] + 1}/3  train loss {record['train_loss']:.3f} "
                               f"acc {record['train_acc']:.1%}  |  val loss {record['val_loss']:.3f} "
                               f"acc {record['val_acc']:.1%}")
    best = history.best()
    assert lines[4] == dash.summary
    assert dash.summary.startswith("Finished: 3 epoch(s) in ")
    assert f"best epoch {history.best_epoch + 1}: val accuracy {best['val_acc']:.1%}" in dash.summary
    assert dash.widget is None


# --------------------------------------------------------------------------- widgets mode, no front end
def test_widgets_progress_and_curve_data_match_history():
    model, loader, optimizer = _setup(batch_size=8)  # 6 batches per epoch
    record = Record()
    dash = TrainingDashboard(CLASSES, settings=SETTINGS, title="tiny", mode="widgets")
    statuses = []

    class Status(Callback):  # what the header says while batches run, and while validating
        def on_batch_end(self, state):
            statuses.append(dash.progress()["status"])

    history = fit(model, loader, optimizer, 3, val_loader=loader, callbacks=[record, dash, Status()])
    assert statuses == (["Training…"] * 5 + ["Checking the validation set…"]) * 3

    shown = dash.progress()
    assert shown["status"] == "Done" and shown["color"] == BAR_COLORS["success"]
    (epoch_bar, epoch_text), (batch_bar, batch_text) = shown["Epochs"], shown["Batches"]
    assert epoch_bar == (3, 3) and batch_bar == (6, 6)
    assert epoch_text.startswith("3 of 3 epoch(s) · ")
    assert batch_text.startswith("6/6 · ")
    assert "batch/s" in batch_text and f"loss {history.batches[-1]['loss']:.3f}" in batch_text
    assert "left" not in batch_text  # finished: nothing left to count down
    assert [dashboard_module._rate(r) for r in (0.304, 3.04, 42.49, 536.09)] == ["0.30", "3.04", "42.5", "536"]
    # ...and that is what the page shows: native <progress> bars in the success colour, the texts.
    page = dash._progress.value
    assert page.count(f"accent-color:{BAR_COLORS['success']}") == 2
    assert "<progress value='3' max='3'" in page and "<progress value='6' max='6'" in page
    assert html.escape(epoch_text) in page and html.escape(batch_text) in page
    assert f"<span class='tlcourse-status' style='color:{BAR_COLORS['success']}'>Done</span>" in page

    data = dash.curve_data()
    assert data["batch_loss"] == [b["loss"] for b in history.batches]
    assert data["batch_x"] == pytest.approx([b["epoch"] + (b["batch"] + 1) / 6 for b in history.batches])
    assert data["batch_acc"] == pytest.approx(record.running_acc)
    assert data["epoch_x"] == [1.0, 2.0, 3.0]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert data[key] == [r[key] for r in history.epochs]
    # The epoch's last running accuracy is the epoch's train accuracy, computed independently by fit.
    assert [data["batch_acc"][5], data["batch_acc"][11], data["batch_acc"][17]] == pytest.approx(data["train_acc"])

    # The plot, read back through its own tick labels, shows these numbers.
    assert dash._curves_svg in dash._figure.value
    plotted = _read_plot(dash._curves_svg)
    for key in ("train_loss", "val_loss", "train_acc", "val_acc", "batch_loss", "batch_acc"):
        xs = data["batch_x"] if key.startswith("batch") else data["epoch_x"]
        assert _flat(plotted[key]) == pytest.approx(_flat(zip(xs, data[key])), abs=0.01), key
    assert dash.draws >= 1  # at least the final drawing
    assert dash.stop_button.disabled
    assert "best epoch" in dash._summary.value and dash.summary in dash._summary.value.replace("&#x27;", "'")


def test_sample_photo_is_denormalised_with_true_and_predicted_label():
    # Reference: torchvision's normalize applied to known pixels; the dashboard must give them back.
    g = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (3, 40, 56), generator=g, dtype=torch.uint8)
    normalised = TF.normalize(pixels.float() / 255, list(SETTINGS.mean), list(SETTINGS.std))
    array = dashboard_module._to_uint8_image(normalised, SETTINGS)
    assert array.shape == (40, 56, 3) and array.dtype == np.uint8
    assert np.abs(array.astype(int) - pixels.permute(1, 2, 0).numpy().astype(int)).max() <= 1

    model, loader, optimizer = _setup(batch_size=8)
    record = Record()
    dash = TrainingDashboard(CLASSES, settings=SETTINGS, mode="widgets")
    fit(model, loader, optimizer, 1, callbacks=[record, dash])
    x0, y0, logits0 = record.first[-1]  # the final draw shows the last batch's first example
    assert base64.b64encode(dash._sample_jpeg).decode() in dash._figure.value  # shown as an <img>
    shown = np.asarray(Image.open(io.BytesIO(dash._sample_jpeg)).convert("RGB")).astype(int)
    expected = (x0 * torch.tensor(SETTINGS.std).view(3, 1, 1)  # undo the normalisation by hand
                + torch.tensor(SETTINGS.mean).view(3, 1, 1)).clamp(0, 1).permute(1, 2, 0).numpy() * 255
    assert shown.shape == expected.shape
    assert np.abs(shown - expected).mean() < 8  # JPEG is lossy; another image differs by ~40+
    pred = int(logits0.argmax())
    caption = dash._caption
    assert caption in dash._figure.value
    assert f"true: <b>{CLASSES[y0]}</b>" in caption
    assert f">{CLASSES[pred]}</b> ({float(torch.softmax(logits0, 0)[pred]):.0%})" in caption
    assert ("#2ca02c" in caption) == (pred == y0)  # green when right, red when wrong


class PhotoRows(Dataset):
    """Stands in for a CSVDataset with the eval transform: row i -> (normalised image, label)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels
        self.reads: list[int] = []

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        self.reads.append(i)
        return self.images[i], int(self.labels[i])


def test_cached_features_show_the_photo_of_the_row():
    images, y = _images(24, size=20)
    features = torch.randn(24, 5)
    rows = torch.arange(24).flip(0)  # feature row k belongs to photo 23 - k
    loader = DataLoader(TensorDataset(features, y.flip(0), rows), batch_size=6)
    photos = PhotoRows(images, y)
    model = nn.Linear(5, 2)
    dash = TrainingDashboard(CLASSES, settings=SETTINGS, dataset=photos, mode="widgets")
    fit(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), 1, callbacks=[dash])
    assert photos.reads[-1] == 23 - 18  # the last batch starts at feature row 18
    shown = np.asarray(Image.open(io.BytesIO(dash._sample_jpeg)).convert("RGB")).astype(int)
    expected = dashboard_module._to_uint8_image(images[23 - 18], SETTINGS).astype(int)
    assert np.abs(shown - expected).mean() < 8

    # Without dataset= there is no photo, and the caption says how to get one.
    dash = TrainingDashboard(CLASSES, mode="widgets")
    fit(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), 1, callbacks=[dash])
    assert dash._sample_jpeg == b"" and "Pass <code>dataset=</code>" in dash._caption
    assert "<img" not in dash._figure.value  # no empty picture frame, only the caption



# --------------------------------------------------------------------------- the plot
def _curve_data(batches: int, epochs: int, val: bool = True) -> dict[str, list[float]]:
    batch_x = [(i + 1) / (batches // epochs) for i in range(batches)]
    return {
        "batch_x": batch_x, "batch_loss": [1 / (1 + x) for x in batch_x], "batch_acc": [0.5 + x / (2 * epochs) for x in batch_x],
        "epoch_x": [e + 1.0 for e in range(epochs)], "train_loss": [0.8 / (e + 1) for e in range(epochs)],
        "train_acc": [0.7 + 0.05 * e for e in range(epochs)],
        "val_loss": [0.6 / (e + 1) if val else math.nan for e in range(epochs)],
        "val_acc": [0.75 + 0.04 * e if val else math.nan for e in range(epochs)],
    }


def test_curves_svg_shows_the_numbers_with_gaps_and_thinning():
    data = _curve_data(batches=24, epochs=4)
    plotted = _read_plot(curves_svg(data))
    assert set(plotted) == {f"{s}_{k}" for s in ("batch", "train", "val") for k in ("loss", "acc")}
    for key, values in plotted.items():
        xs = data["batch_x"] if key.startswith("batch") else data["epoch_x"]
        assert _flat(values) == pytest.approx(_flat(zip(xs, data[key])), abs=2e-3), key
    svg = curves_svg(data)
    # A marker per epoch on the train (circles) and validation (squares) lines of both plots, one each in the legend.
    assert svg.count("<circle") == 4 + 4 + 1 and svg.count("width='6'") == 4 + 4 + 1
    # Tick labels carry the decimals their step needs, percent on the accuracy plot.
    labels = re.findall(r"class='ytick'[^>]*>([^<]+)<", svg)
    assert any(label.endswith("%") for label in labels) and all(re.fullmatch(r"\d+(\.\d+)?%?", t) for t in labels)
    assert dashboard_module._tick_labels([0.0, 0.25, 0.5], False) == ["0.00", "0.25", "0.50"]
    assert dashboard_module._tick_labels([0.9, 0.95, 1.0], True) == ["90%", "95%", "100%"]

    # No validation set: no validation lines. A NaN loss: a gap, the line goes on after it.
    data = _curve_data(batches=24, epochs=4, val=False)
    data["batch_loss"][10] = math.nan
    svg = curves_svg(data)
    assert "data-series='val_loss'" not in svg and "data-series='val_acc'" not in svg
    assert svg.count("data-series='batch_loss'") == 2
    assert len(_read_plot(svg)["batch_loss"]) == 23

    # A long run's per-batch line is thinned evenly, keeping the last point.
    data = _curve_data(batches=5000, epochs=10)
    batch_loss = _read_plot(curves_svg(data))["batch_loss"]
    assert len(batch_loss) <= dashboard_module.MAX_POINTS + 1
    assert list(batch_loss[-1]) == pytest.approx([10.0, data["batch_loss"][-1]], abs=2e-3)

    # Before any data: the empty axes.
    empty = {key: [] for key in data}
    assert _read_plot(curves_svg(empty)) == {}


def test_panel_is_a_few_widgets_and_short_epochs_do_not_flood_the_front_end(monkeypatch):
    """Each widget costs comm messages to create and each refresh a message: both are bounded."""
    from ipywidgets.widgets import widget as widget_module

    clock = FakeClock()
    monkeypatch.setattr(dashboard_module.time, "perf_counter", clock)

    class Tick(Callback):  # 40 epochs of 6 batches, 2 ms a batch: ~0.5 s of training
        def on_batch_end(self, state):
            clock.now += 0.002

    shown = []
    real_show = TrainingDashboard._show_progress
    monkeypatch.setattr(TrainingDashboard, "_show_progress", lambda self: (shown.append(clock.now), real_show(self)))
    model, loader, optimizer = _setup(batch_size=8)
    dash = TrainingDashboard(CLASSES, mode="widgets")
    before = set(widget_module._instances)
    start = clock.now
    fit(model, loader, optimizer, 40, callbacks=[Tick(), dash])
    elapsed = clock.now - start
    created = [widget_module._instances[k] for k in set(widget_module._instances) - before]
    # Six widgets and their Layout and Style models, shared where they can be (each a comm to open).
    assert len(created) <= 10, sorted(type(w).__name__ for w in created)
    # One refresh at the start and end, one per edge_interval between: not 3 per epoch.
    assert len(shown) <= elapsed / dash.edge_interval + 3, (len(shown), elapsed)
    assert dash.progress()["Epochs"][0] == (40, 40)

# --------------------------------------------------------------------------- stopping
@pytest.mark.parametrize("mode", ["widgets", "text"])
def test_stop_ends_training_after_the_current_batch(mode, capsys):
    model, loader, optimizer = _setup(batch_size=8)  # 6 batches per epoch
    dash = TrainingDashboard(CLASSES, mode=mode)
    snapshots = {}

    class Snapshot(Callback):
        def on_epoch_end(self, state):
            snapshots[state.epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    stopper = StopAt(1, 2, dash.stop)  # during epoch 2, after its third batch
    history = fit(model, loader, optimizer, 5, val_loader=loader, callbacks=[Snapshot(), dash, stopper])
    assert history.stopped_early and not history.interrupted
    assert len(history.batches) == 6 + 3  # nothing ran after the batch that asked to stop
    assert [(b["epoch"], b["batch"]) for b in history.batches][-1] == (1, 2)
    assert [r["epoch"] for r in history.epochs] == [0]  # the unfinished epoch is not recorded
    assert history.best_epoch == 0
    for key, value in model.state_dict().items():  # the best (only finished) epoch's weights
        assert torch.equal(value, snapshots[0][key]), key
    assert "(stopped early): 1 epoch(s)" in dash.summary and "best epoch 1" in dash.summary
    if mode == "widgets":
        shown = dash.progress()
        assert shown["status"] == "Stopped" and shown["color"] == BAR_COLORS["warning"]
        assert shown["Epochs"][0] == (1, 5) and shown["Batches"][0] == (3, 6)
        assert shown["Batches"][1].startswith("stopped after batch 3/6")
        assert dash.stop_button not in dash._button_row.children and "stopped early" in dash._summary.value


def test_stop_button_click_and_stop_during_validation():
    model, loader, optimizer = _setup(batch_size=8)
    dash = TrainingDashboard(CLASSES, mode="widgets")
    # The button's click handler, as ipywidgets calls it when the front end reports a click.
    history = fit(model, loader, optimizer, 5, val_loader=loader,
                  callbacks=[dash, StopAt(0, 4, lambda: dash.stop_button.click())])
    assert history.stopped_early and len(history.batches) == 5 and history.epochs == []
    assert dash.stop_reason == "Stop button" and dash.stop_button.disabled

    # Asked between the last batch and the end of the epoch: that epoch still counts.
    model, loader, optimizer = _setup(batch_size=8)
    dash = TrainingDashboard(CLASSES, mode="widgets")
    history = fit(model, loader, optimizer, 5, val_loader=loader, callbacks=[StopAt(1, None, dash.stop), dash])
    assert history.stopped_early and [r["epoch"] for r in history.epochs] == [0, 1]
    assert len(history.batches) == 12

    # A fresh run with the same dashboard starts without the old stop request.
    history = fit(model, loader, optimizer, 2, val_loader=loader, callbacks=[dash])
    assert not history.stopped_early and len(history.epochs) == 2 and dash.progress()["status"] == "Done"


# --------------------------------------------------------------------------- throttling
class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_redraws_are_throttled_to_the_budget(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(dashboard_module.time, "perf_counter", clock)
    draw_cost = 0.12  # pretend each redraw of the plot takes 0.12 s
    real_render = TrainingDashboard._render_curves

    def slow_render(self):
        clock.now += draw_cost
        return real_render(self)

    monkeypatch.setattr(TrainingDashboard, "_render_curves", slow_render)
    monkeypatch.setattr(TrainingDashboard, "draw_cost_estimate", draw_cost)

    class Tick(Callback):  # each batch "takes" 0.05 s
        def on_batch_end(self, state):
            clock.now += 0.05

    model, loader, optimizer = _setup(batch_size=1, n=400)  # 400 batches, 20 s of fake time
    dash = TrainingDashboard(CLASSES, mode="widgets")
    start = clock.now
    fit(model, loader, optimizer, 1, callbacks=[Tick(), dash])
    elapsed = clock.now - start
    # The final drawing aside, drawing stays within the budget of the elapsed time...
    assert (dash.draws - 1) * draw_cost <= dash.draw_budget * elapsed
    # ...and is not starved either: about one draw per cost / budget = 4 s, none in the last 3 s.
    assert dash.draws - 1 >= int((elapsed - 3) / (draw_cost / dash.draw_budget)) - 1
    assert dash.draws - 1 >= 3

    # A run too short to pay for a drawing gets only the final one.
    dash_short = TrainingDashboard(CLASSES, mode="widgets")
    short_model, short_loader, short_optimizer = _setup(batch_size=8, n=48)
    fit(short_model, short_loader, short_optimizer, 2, callbacks=[Tick(), dash_short])
    assert dash_short.draws == 1

    # Text and bars: at most one update per text_interval (plus the first and the last).
    texts = []
    dash2 = TrainingDashboard(CLASSES, mode="widgets")
    real_update = TrainingDashboard._update_text

    def counting_update(self, state, force=False, edge=False):
        before = self._last_text
        real_update(self, state, force, edge)
        if self._last_text != before:
            texts.append(clock.now)

    monkeypatch.setattr(TrainingDashboard, "_update_text", counting_update)
    start = clock.now
    fit(model, loader, optimizer, 1, callbacks=[Tick(), dash2])
    elapsed = clock.now - start
    assert len(texts) <= elapsed / dash2.text_interval + 3


# --------------------------------------------------------------------------- a real kernel
def test_event_pump_is_inert_outside_a_kernel():
    pump = KernelEventPump()
    assert not pump.available and pump.poll() == 0


KERNEL_CELL = """
import time, torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tlcourse.dashboard import TrainingDashboard
from tlcourse.training import Callback, fit

class Slow(Callback):
    def on_batch_end(self, state):
        time.sleep(0.02)

torch.manual_seed(0)
x = torch.randn(64, 3, 8, 8); y = (x.mean((1, 2, 3)) > 0).long()
loader = DataLoader(TensorDataset(x, y), batch_size=8)
model = nn.Sequential(nn.Flatten(), nn.Linear(192, 2))
dash = TrainingDashboard(["neg", "pos"], title="kernel check")
history = fit(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), 500, val_loader=loader,
              callbacks=[dash, Slow()])
print("trained", history.stopped_early, len(history.epochs), dash._pump.handled, dash._pump.deferred)
"""


@pytest.fixture
def kernel():
    jupyter_client = pytest.importorskip("jupyter_client.manager")
    env = {**os.environ, "TLCOURSE_DASHBOARD": "auto", "PYTHONUNBUFFERED": "1"}
    km, kc = jupyter_client.start_new_kernel(kernel_name="python3", env=env, startup_timeout=120)
    try:
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_stop_click_reaches_a_busy_kernel_and_queued_cells_still_run(kernel):
    """JupyterLab's click is a comm_msg on the shell channel, sent while the cell is busy."""
    kc = kernel
    train_id = kc.execute(KERNEL_CELL)
    button, deadline = None, time.monotonic() + 180
    while button is None:  # the dashboard opens its widgets: find the Stop button's comm
        assert time.monotonic() < deadline, "the dashboard never opened its Stop button"
        msg = kc.get_iopub_msg(timeout=180)
        if msg["msg_type"] == "error":
            pytest.fail("\n".join(msg["content"]["traceback"]))
        if msg["msg_type"] == "comm_open":
            state = msg["content"]["data"]["state"]
            if state.get("_model_name") == "ButtonModel" and state.get("description") == "Stop":
                button = msg["content"]["comm_id"]
    # A front end that connects now (JupyterLab's widget manager) asks which widgets exist,
    # and cannot show them until it hears back: answered while the cell still trains.
    info_id = kc.comm_info(target_name="jupyter.widget")
    reply = kc.get_shell_msg(timeout=60)
    while reply["parent_header"].get("msg_id") != info_id:  # skip replies to earlier requests
        reply = kc.get_shell_msg(timeout=60)
    assert reply["msg_type"] == "comm_info_reply"
    assert button in reply["content"]["comms"]
    time.sleep(1.0)
    # "Run All": the next cell's request is already queued when Stop is clicked.
    next_id = kc.execute("print('next cell', history.stopped_early)")
    time.sleep(0.5)
    kc.shell_channel.send(kc.session.msg(
        "comm_msg", {"comm_id": button, "data": {"method": "custom", "content": {"event": "click"}}}))

    printed: dict[str, str] = {}
    deadline = time.monotonic() + 120
    while next_id not in printed or train_id not in printed:
        assert time.monotonic() < deadline, f"cells did not finish after Stop; printed: {printed}"
        msg = kc.get_iopub_msg(timeout=120)
        parent = msg["parent_header"].get("msg_id")
        if msg["msg_type"] == "error":
            pytest.fail("\n".join(msg["content"]["traceback"]))
        if msg["msg_type"] == "stream":
            printed[parent] = printed.get(parent, "") + msg["content"]["text"]
    trained = printed[train_id].split()
    assert trained[:2] == ["trained", "True"], printed
    assert int(trained[2]) < 500  # stopped long before the 500 epochs
    assert int(trained[3]) >= 2 and int(trained[4]) >= 1  # comm info and click handled, next cell deferred
    assert printed[next_id].strip() == "next cell True"
