"""The training dashboard, driven through the training callbacks without a browser.

A tiny model on synthetic data; widgets are real ipywidgets objects (without a
front end they simply have no view). Every number the dashboard shows is checked
against an independent computation: the history fit returns, a running accuracy
recomputed here from the logits, a photo de-normalised by hand.
"""

from __future__ import annotations

import io
import math
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.transforms.v2 import functional as TF

from tlcourse import dashboard as dashboard_module
from tlcourse.dashboard import TrainingDashboard, dashboard_mode, format_duration
from tlcourse.data import TransformSettings
from tlcourse.errors import ConfigError
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


def _by_hand(x: torch.Tensor) -> np.ndarray:
    """Undo the normalisation by hand: x * std + mean, as 0-255 HWC values."""
    std, mean = torch.tensor(SETTINGS.std).view(3, 1, 1), torch.tensor(SETTINGS.mean).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1).permute(1, 2, 0).numpy() * 255


def _shown_photo(dash: TrainingDashboard) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(dash._photo.value)).convert("RGB")).astype(int)


def _setup(batch_size: int = 8, n: int = 48):
    torch.manual_seed(0)
    x, y = _images(n)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
    model = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 2))
    return model, loader, torch.optim.SGD(model.parameters(), lr=0.05)


class Record(Callback):
    """What the dashboard should have seen, computed here from each batch's logits and labels."""

    def __init__(self):
        self.running_acc: list[float] = []
        self.first: list[tuple[torch.Tensor, int, torch.Tensor]] = []

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


# --------------------------------------------------------------------------- choosing a front end
def test_mode_from_argument_and_auto():
    assert dashboard_mode() == dashboard_mode("auto") == "text"  # auto, outside a Jupyter kernel
    assert dashboard_mode("Widgets ") == "widgets" and dashboard_mode("text") == "text"
    with pytest.raises(ConfigError, match="'fancy'.*auto, widgets, text"):
        dashboard_mode("fancy")


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
    assert len(lines) == 2 + 3, lines  # header, one line per epoch, summary: however many batches
    assert lines[0] == "Training tiny: 3 epoch(s) x 12 batches"
    for line, record in zip(lines[1:4], history.epochs):
        assert line.startswith(f"epoch {record['epoch'] + 1}/3  train loss {record['train_loss']:.3f} "
                               f"acc {record['train_acc']:.1%}  |  val loss {record['val_loss']:.3f} "
                               f"acc {record['val_acc']:.1%}")
    best = history.best()
    assert lines[4] == dash.summary and dash.summary.startswith("Finished: 3 epoch(s) in ")
    assert f"best epoch {history.best_epoch + 1}: val accuracy {best['val_acc']:.1%}" in dash.summary
    assert dash.widget is None


# --------------------------------------------------------------------------- widgets mode, no front end
def test_widgets_progress_and_curves_match_history():
    model, loader, optimizer = _setup(batch_size=8)  # 6 batches per epoch
    record = Record()
    dash = TrainingDashboard(CLASSES, settings=SETTINGS, title="tiny", mode="widgets")
    statuses = []

    class Status(Callback):
        def on_batch_end(self, state):
            statuses.append(dash.progress()["status"])

    history = fit(model, loader, optimizer, 3, val_loader=loader, callbacks=[record, dash, Status()])
    assert statuses == ["Training…"] * 18
    assert dash.progress() == {"status": "Done", "Epochs": (3, 3), "Batches": (18, 18)}
    assert "Done" in dash._header.value and "tiny" in dash._header.value

    data = dash.curve_data()
    assert data["batch_loss"] == [b["loss"] for b in history.batches]
    assert data["batch_x"] == pytest.approx([b["epoch"] + (b["batch"] + 1) / 6 for b in history.batches])
    assert data["batch_acc"] == pytest.approx(record.running_acc)  # recomputed here from the logits
    assert data["epoch_x"] == [1.0, 2.0, 3.0]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert data[key] == [r[key] for r in history.epochs]

    # What matplotlib drew: each line of both plots holds these numbers; the image is a PNG.
    loss_ax, acc_ax = dash.figure.axes
    for ax, key in ((loss_ax, "loss"), (acc_ax, "acc")):
        for line, series in zip(ax.lines, ("batch", "train", "val")):
            xs = data["batch_x" if series == "batch" else "epoch_x"]
            np.testing.assert_allclose(line.get_xydata(), np.column_stack([xs, data[f"{series}_{key}"]]))
    assert Image.open(io.BytesIO(dash._curves.value)).format == "PNG"
    assert dash.draws >= 1  # at least the final drawing
    assert dash.summary in dash._footer.value.replace("&#x27;", "'") and "best epoch" in dash.summary


def test_sample_photo_is_denormalised_with_true_and_predicted_label():
    model, loader, optimizer = _setup(batch_size=8)
    record = Record()
    dash = TrainingDashboard(CLASSES, settings=SETTINGS, mode="widgets")
    fit(model, loader, optimizer, 1, callbacks=[record, dash])
    x0, y0, logits0 = record.first[-1]  # the final drawing shows the last batch's first example
    shown, expected = _shown_photo(dash), _by_hand(x0)
    assert shown.shape == expected.shape
    assert np.abs(shown - expected).mean() < 8  # JPEG is lossy; another image differs by ~40+
    pred = int(logits0.argmax())
    caption = dash._caption.value
    assert f"true: <b>{CLASSES[y0]}</b>" in caption
    assert f">{CLASSES[pred]}</b> ({float(torch.softmax(logits0, 0)[pred]):.0%})" in caption
    assert ("#2ca02c" in caption) == (pred == y0)  # green when right, red when wrong


class PhotoRows(Dataset):
    """Stands in for a CSVDataset with the eval transform: row i -> (normalised image, label)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels, self.reads = images, labels, []

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        self.reads.append(i)
        return self.images[i], int(self.labels[i])


def test_cached_features_show_the_photo_of_the_row():
    images, y = _images(24, size=20)
    rows = torch.arange(24).flip(0)  # feature row k belongs to photo 23 - k
    loader = DataLoader(TensorDataset(torch.randn(24, 5), y.flip(0), rows), batch_size=6)
    photos = PhotoRows(images, y)
    model = nn.Linear(5, 2)
    dash = TrainingDashboard(CLASSES, settings=SETTINGS, dataset=photos, mode="widgets")
    fit(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), 1, callbacks=[dash])
    assert photos.reads[-1] == 23 - 18  # the last batch starts at feature row 18
    assert np.abs(_shown_photo(dash) - _by_hand(images[23 - 18])).mean() < 8

    # Without dataset= there is no photo, and the caption says how to get one.
    dash = TrainingDashboard(CLASSES, mode="widgets")
    fit(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), 1, callbacks=[dash])
    assert dash._photo.value == b"" and "Pass <code>dataset=</code>" in dash._caption.value


def test_curves_without_validation_and_with_a_nan_loss():
    model, loader, optimizer = _setup(batch_size=8)
    dash = TrainingDashboard(CLASSES, mode="widgets")
    fit(model, loader, optimizer, 2, callbacks=[dash])  # no validation set
    assert all(math.isnan(v) for v in dash.curve_data()["val_loss"])
    assert all(len(ax.lines[2].get_xydata()) == 2 for ax in dash.figure.axes)  # NaN points: nothing drawn
    dash._batch_loss[3] = math.nan  # a gap: matplotlib breaks the line there, the drawing still works
    assert Image.open(io.BytesIO(dash._render_curves())).format == "PNG"


def test_short_epochs_do_not_flood_the_front_end(monkeypatch):
    """Each bar refresh is a message to the browser: at most one per bar_interval, whatever the epochs."""
    from tqdm.notebook import tqdm_notebook

    refreshes = []
    real_display = tqdm_notebook.display
    monkeypatch.setattr(tqdm_notebook, "display", lambda self, *a, **k: (refreshes.append(1), real_display(self, *a, **k))[1])
    model, loader, optimizer = _setup(batch_size=8)
    dash = TrainingDashboard(CLASSES, mode="widgets")
    started = time.perf_counter()
    fit(model, loader, optimizer, 40, callbacks=[dash])  # 240 batches
    elapsed = time.perf_counter() - started
    assert dash.progress()["Epochs"] == (40, 40)
    # Two bars: their first and last refreshes, and one per interval in between (each bar).
    assert len(refreshes) <= 2 * (elapsed / dash.bar_interval + 3), (len(refreshes), elapsed)


# --------------------------------------------------------------------------- stopping
@pytest.mark.parametrize("mode", ["widgets", "text"])
def test_stop_ends_training_after_the_current_batch(mode):
    model, loader, optimizer = _setup(batch_size=8)  # 6 batches per epoch
    dash = TrainingDashboard(CLASSES, mode=mode)
    snapshots = {}

    class Snapshot(Callback):
        def on_epoch_end(self, state):
            snapshots[state.epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    history = fit(model, loader, optimizer, 5, val_loader=loader, callbacks=[Snapshot(), dash, StopAt(1, 2, dash.stop)])
    assert history.stopped_early and not history.interrupted
    assert [(b["epoch"], b["batch"]) for b in history.batches][-1] == (1, 2) and len(history.batches) == 9
    assert [r["epoch"] for r in history.epochs] == [0] and history.best_epoch == 0
    for key, value in model.state_dict().items():  # the best (only finished) epoch's weights
        assert torch.equal(value, snapshots[0][key]), key
    assert "(stopped early): 1 epoch(s)" in dash.summary and "best epoch 1" in dash.summary
    if mode == "widgets":
        assert dash.progress() == {"status": "Stopped", "Epochs": (1, 5), "Batches": (9, 30)}
        assert "stopped early" in dash._footer.value


def test_interrupt_shows_interrupted_and_keeps_the_best_weights():
    """The kernel's Interrupt button raises KeyboardInterrupt in the cell; fit ends cleanly."""
    def interrupt():
        raise KeyboardInterrupt

    model, loader, optimizer = _setup(batch_size=8)
    dash = TrainingDashboard(CLASSES, mode="widgets")
    hints = []
    watch = StopAt(0, 0, lambda: hints.append(dash._footer.value))
    history = fit(model, loader, optimizer, 5, val_loader=loader, callbacks=[dash, watch, StopAt(2, 1, interrupt)])
    assert "Interrupt the kernel" in hints[0]  # while training, the panel says how to stop
    assert history.interrupted and len(history.epochs) == 2
    assert dash.progress()["status"] == "Interrupted" and "(interrupted)" in dash.summary


def test_stop_during_validation_and_a_fresh_run():
    model, loader, optimizer = _setup(batch_size=8)
    dash = TrainingDashboard(CLASSES, mode="widgets")
    # Asked between the last batch and the end of the epoch: that epoch still counts.
    history = fit(model, loader, optimizer, 5, val_loader=loader, callbacks=[StopAt(1, None, dash.stop), dash])
    assert history.stopped_early and [r["epoch"] for r in history.epochs] == [0, 1] and len(history.batches) == 12
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
    draw_cost = 0.12  # pretend each drawing takes 0.12 s
    real_render = TrainingDashboard._render_curves

    def slow_render(self):
        clock.now += draw_cost
        return real_render(self)

    monkeypatch.setattr(TrainingDashboard, "_render_curves", slow_render)
    monkeypatch.setattr(TrainingDashboard, "draw_cost_estimate", draw_cost)

    class Tick(Callback):  # each batch "takes" 0.05 s
        def on_batch_end(self, state):
            clock.now += 0.05

    model, loader, optimizer = _setup(batch_size=1, n=800)  # 800 batches, 40 s of fake time
    dash = TrainingDashboard(CLASSES, mode="widgets")
    start = clock.now
    fit(model, loader, optimizer, 1, callbacks=[Tick(), dash])
    elapsed = clock.now - start
    assert (dash.draws - 1) * draw_cost <= dash.draw_budget * elapsed  # the final drawing aside
    assert dash.draws - 1 >= int(elapsed / (draw_cost / dash.draw_budget)) - 1 >= 3  # not starved either

    # A run too short to pay for a drawing gets only the final one.
    short = TrainingDashboard(CLASSES, mode="widgets")
    fit(*_setup(batch_size=8, n=48), 2, callbacks=[Tick(), short])
    assert short.draws == 1
