"""Watching training: text progress, or a live dashboard in JupyterLab (tqdm's progress bars, matplotlib's
loss and accuracy curves, the batch's first photo with its true and predicted label, how to stop early)."""

from __future__ import annotations

import html
import io
import math
import sys
import time
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from .config import DASHBOARD_MODES
from .data import TransformSettings, denormalize
from .errors import ConfigError
from .training import Callback, TrainState

#: How to stop early: Interrupt raises KeyboardInterrupt, which fit handles. (A Stop button's click is a
#: message the kernel would read only after the busy cell ends.)
STOP_HINT = ("To stop early, press ■ (Interrupt the kernel) in the toolbar: training stops at once (the "
             "batch under way is dropped), the model keeps its best finished epoch's weights and the notebook "
             "carries on.")


def dashboard_mode(requested: str = "auto") -> str:
    """``"widgets"`` or ``"text"``: ``auto`` (lessons pass ``get_config().dashboard``) means widgets
    inside a Jupyter kernel with ipywidgets installed, text everywhere else."""
    choice = requested.strip().lower()
    if choice not in DASHBOARD_MODES:
        raise ConfigError(f"Dashboard mode {choice!r} is not one of {', '.join(DASHBOARD_MODES)} "
                          "(TLCOURSE_DASHBOARD; auto: widgets in Jupyter, text elsewhere).")
    if choice != "auto":
        return choice
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return "text"
    ipython = sys.modules.get("IPython")  # a kernel has imported it (a terminal IPython has no .kernel)
    return "widgets" if getattr(ipython.get_ipython() if ipython else None, "kernel", None) is not None else "text"


def jpeg_bytes(image: Image.Image, max_side: int | None = None, quality: int = 85) -> bytes:
    """A photo as JPEG bytes (first shrunk to ``max_side``), for the dashboard and the widgets to show."""
    if max_side and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def to_pil(x: torch.Tensor, settings: TransformSettings) -> Image.Image:
    """A normalised ``3 x H x W`` input as the photo the network sees."""
    array = (denormalize(x, settings).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array)


def format_duration(seconds: float) -> str:
    """A short human duration: ``"8 s"``, ``"2 min 05 s"``, ``"1 h 03 min"``."""
    if not math.isfinite(seconds):
        return "?"
    minutes, seconds = divmod(max(0, int(round(seconds))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def epoch_line(record: dict[str, float], epochs: int) -> str:
    """One finished epoch as text: losses, accuracies and its duration."""
    line = f"epoch {record['epoch'] + 1}/{epochs}  train loss {record['train_loss']:.3f} acc {record['train_acc']:.1%}"
    if "val_loss" in record:
        line += f"  |  val loss {record['val_loss']:.3f} acc {record['val_acc']:.1%}"
    return line + f"  ({format_duration(record['seconds'])})"


def summary_line(state: TrainState, first_epoch: int, seconds: float) -> str:
    """How a run ended: epochs run, time, and the best epoch's score."""
    history = state.history
    how = " (interrupted)" if history.interrupted else " (stopped early)" if history.stopped_early else ""
    parts = [f"Finished{how}: {len(history.epochs) - first_epoch} epoch(s) in {format_duration(seconds)}"]
    best = history.best()
    if best is not None:
        parts.append(f"best epoch {best['epoch'] + 1}: " + (
            f"val accuracy {best['val_acc']:.1%}, val loss {best['val_loss']:.3f}" if "val_acc" in best
            else f"train accuracy {best['train_acc']:.1%}"))
    return "; ".join(parts) + "."


class TextProgress(Callback):
    """Training as text: a header, a tqdm bar of the batches (terminals only), a line per epoch, a summary."""

    def __init__(self, title: str = "", file: Any = None) -> None:
        self.title, self.file = title, file
        self.summary, self._bar, self._state = "", None, None

    def stop(self) -> None:
        """Ask training to end after the current batch (the model keeps its best weights)."""
        if self._state is not None:
            self._state.stop_requested = True  # the flag fit reads after each batch

    def _print(self, text: str) -> None:
        print(text, file=self.file or sys.stdout, flush=True)

    def on_train_begin(self, state: TrainState) -> None:
        from tqdm.auto import tqdm

        self._state, self._first, self._started = state, len(state.history.epochs), time.perf_counter()
        batches = f" x {state.batches} batches" if state.batches else ""
        self._print(f"Training{' ' + self.title if self.title else ''}: {state.epochs - self._first} epoch(s){batches}")
        # disable=None: a bar only on a terminal; in logs and notebooks its redraws would pile up.
        self._bar = tqdm(total=(state.epochs - self._first) * state.batches or None, unit="batch", leave=False,
                         disable=None, mininterval=0.5, file=sys.stderr)

    def on_batch_end(self, state: TrainState) -> None:
        self._bar.set_postfix_str(f"epoch {state.epoch + 1} loss {state.loss:.3f}", refresh=False)
        self._bar.update()

    def on_epoch_end(self, state: TrainState) -> None:
        self._bar.clear()
        self._print(epoch_line(state.history.epochs[-1], state.epochs))

    def on_train_end(self, state: TrainState) -> None:
        self._state = None
        self._bar.close()
        self.summary = summary_line(state, self._first, time.perf_counter() - self._started)
        self._print(self.summary)


class TrainingDashboard(Callback):
    """A training callback that shows training live (``mode="widgets"``) or as text. ``settings`` (the
    model's) undo the sample photo's normalisation; ``dataset``: when training on cached features, where
    the rows ``state.index`` names are read from. :meth:`curve_data` gives the plotted numbers."""

    #: Fraction of the training time that drawing the curves and the photo may take.
    draw_budget: float = 0.02
    #: Never redraw more often than this (seconds).
    draw_interval: float = 1.0
    #: Seconds one drawing is assumed to take until one is measured.
    draw_cost_estimate: float = 0.1
    #: Seconds between refreshes of the progress bars.
    bar_interval: float = 0.5

    def __init__(self, class_names: Sequence[str], settings: TransformSettings | None = None, dataset: Any = None,
                 title: str = "", mode: str = "auto") -> None:
        self.class_names = [str(name) for name in class_names]
        self.settings, self.dataset, self.title = settings or TransformSettings(), dataset, title
        self.mode = dashboard_mode(mode)
        self.text = TextProgress(title) if self.mode == "text" else None
        self.widget: Any = None
        self.figure: Any = None  # the matplotlib Figure of the curves, once drawn
        self.summary, self.status = "", ""
        self.draws, self.draw_seconds = 0, 0.0
        self._state = None

    stop = TextProgress.stop  # the same flag on the state this callback keeps

    def curve_data(self) -> dict[str, list[float]]:
        """The numbers behind the curves: per batch (x in epochs; loss, running accuracy) and per epoch."""
        epochs = self._history.epochs[self._first:]
        return {"batch_x": list(self._batch_x), "batch_loss": list(self._batch_loss),
                "batch_acc": list(self._batch_acc), "epoch_x": [r["epoch"] + 1.0 for r in epochs],
                **{key: [r.get(key, math.nan) for r in epochs]
                   for key in ("train_loss", "train_acc", "val_loss", "val_acc")}}

    def progress(self) -> dict[str, Any]:
        """What the widgets show: the status and each bar's ``(value, total)``."""
        return {"status": self.status, "Epochs": (self._epochs_bar.n, self._epochs_bar.total),
                "Batches": (self._batches_bar.n, self._batches_bar.total)}

    def on_train_begin(self, state: TrainState) -> None:
        self._state, self._history, self._first = state, state.history, len(state.history.epochs)
        self._batch_x, self._batch_loss, self._batch_acc = [], [], []
        self._started = self._last_draw = time.perf_counter()
        self.draws, self.draw_seconds, self._draw_cost = 0, 0.0, self.draw_cost_estimate
        if self.text is not None:
            return self.text.on_train_begin(state)
        self._build(state)

    def on_batch_end(self, state: TrainState) -> None:
        self._batch_x.append(state.epoch + (state.batch + 1) / max(state.batches, 1))
        self._batch_loss.append(state.loss)
        self._batch_acc.append(state.correct / state.seen if state.seen else math.nan)
        if self.text is not None:
            return self.text.on_batch_end(state)
        self._batches_bar.set_postfix_str(
            f"epoch {state.epoch + 1} · loss {state.loss:.3f} · acc {state.correct / max(state.seen, 1):.0%}",
            refresh=False)
        self._batches_bar.update()
        self._maybe_draw(state)

    def on_epoch_end(self, state: TrainState) -> None:
        if self.text is not None:
            return self.text.on_epoch_end(state)
        self._epochs_bar.update()
        self._maybe_draw(state)

    def on_train_end(self, state: TrainState) -> None:
        history, self._state = state.history, None
        if self.text is not None:
            self.text.on_train_end(state)
            self.summary = self.text.summary
            return
        self.summary = summary_line(state, self._first, time.perf_counter() - self._started)
        self._epochs_bar.close()
        self._batches_bar.close()
        self._set_status("Interrupted" if history.interrupted else "Stopped" if history.stopped_early else "Done")
        self._draw(state)
        self._footer.value = f"<b>{html.escape(self.summary)}</b>"

    def _build(self, state: TrainState) -> None:
        import ipywidgets as w
        from IPython.display import display
        from tqdm.notebook import tqdm

        bars = w.Output()  # tqdm displays its bars where it is created: inside the panel

        def bar(name: str, unit: str, total: int) -> Any:
            with bars:
                return tqdm(total=total, desc=name, mininterval=self.bar_interval, unit=unit)

        self._epochs_bar = bar("Epochs", "epoch", state.epochs - self._first)
        self._batches_bar = bar("Batches", "batch", (state.epochs - self._first) * state.batches or None)
        self._header = w.HTML()
        self._curves = w.Image(format="png", layout=w.Layout(width="640px"))
        self._photo = w.Image(format="jpeg", layout=w.Layout(width="176px", height="176px", object_fit="contain"))
        self._caption = w.HTML("<i>first batch coming…</i>")
        self._footer = w.HTML(f"<span style='color:#666'>{html.escape(STOP_HINT)}</span>")
        for widget, name in ((self._curves, "curves"), (self._photo, "sample"), (self._footer, "summary")):
            widget.add_class(f"tlcourse-{name}")
        self.widget = w.VBox([self._header, bars,
                              w.HBox([self._curves, w.VBox([self._photo, self._caption])]), self._footer],
                             layout=w.Layout(border="1px solid #ddd", padding="8px 12px", width="860px"))
        self.widget.add_class("tlcourse-dashboard")
        self._set_status("Training…")
        display(self.widget)

    def _set_status(self, status: str) -> None:
        self.status = status
        color = {"Done": "#2e7d32", "Training…": "#555"}.get(status, "#b26a00")
        self._header.value = (f"<b style='font-size:1.15em'>{html.escape(self.title or 'Training')}</b> · "
                              f"<span class='tlcourse-status' style='color:{color}'>{status}</span>")

    def _maybe_draw(self, state: TrainState) -> None:
        # Drawing takes at most draw_budget of the time so far: after a draw that took c seconds, wait
        # c / draw_budget, and draw only within the budget (a short run pays for the final drawing only).
        now = time.perf_counter()
        if now - self._last_draw < max(self.draw_interval, self._draw_cost / self.draw_budget):
            return
        if self.draw_seconds + self._draw_cost <= self.draw_budget * (now - self._started):
            self._draw(state)

    def _draw(self, state: TrainState) -> None:
        started, first = time.perf_counter(), self.figure is None
        self._curves.value = self._render_curves()
        sample = self._render_sample(state)
        if sample is not None:
            self._photo.value, self._caption.value = sample
        self._last_draw = time.perf_counter()
        took = self._last_draw - started
        self.draws += 1
        if first:  # building the figure (and, once per kernel, loading fonts) is not a drawing's cost
            return
        self._draw_cost = took if self.draws == 2 else 0.7 * self._draw_cost + 0.3 * took
        self.draw_seconds += took

    def _render_curves(self) -> bytes:
        """Loss and accuracy plots side by side, as PNG bytes (matplotlib, no pyplot: no global state)."""
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator, PercentFormatter

        if self.figure is None:  # built once; each drawing only moves the lines' data
            self.figure = Figure(figsize=(6.4, 2.6), dpi=100)
            self.figure.subplots_adjust(left=0.09, right=0.98, bottom=0.18, top=0.9, wspace=0.25)
            for ax, title in zip(self.figure.subplots(1, 2), ("loss", "accuracy")):
                ax.plot([], [], color="#9ecae1", lw=1, label="train (batches)")
                ax.plot([], [], "o-", color="#1f77b4", ms=3, label="train")
                ax.plot([], [], "s-", color="#ff7f0e", ms=3, label="validation")
                ax.set(title=title, xlabel="epoch")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.grid(alpha=0.3)
            self.figure.axes[1].yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            self.figure.axes[1].legend(fontsize=7, loc="lower right")
        data = self.curve_data()
        for ax, key in zip(self.figure.axes, ("loss", "acc")):
            for line, series in zip(ax.lines, ("batch", "train", "val")):
                line.set_data(data["batch_x" if series == "batch" else "epoch_x"], data[f"{series}_{key}"])
            ax.relim()
            ax.autoscale_view()
            ax.set_xlim(self._first, max(math.ceil(max(data["batch_x"], default=1)), self._first + 1))
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png")
        return buffer.getvalue()

    def _render_sample(self, state: TrainState) -> tuple[bytes, str] | None:
        """The batch's first photo as JPEG bytes, and a caption with its true and predicted label."""
        if state.y is None or state.logits is None or not len(state.y):
            return None
        probs = torch.softmax(state.logits[0].float(), 0)
        pred, true = int(probs.argmax()), int(state.y[0])
        color = "#2ca02c" if pred == true else "#d62728"
        caption = (f"<div style='text-align:center'>true: <b>{html.escape(self._name(true))}</b><br>"
                   f"predicted: <b style='color:{color}'>{html.escape(self._name(pred))}</b> ({float(probs[pred]):.0%})</div>")
        if state.x is not None and state.x.ndim == 4:
            image = state.x[0]
        elif state.index is not None and self.dataset is not None and len(state.index):
            image = self.dataset[int(state.index[0])][0]
        else:
            return b"", caption + "<div style='color:#888'>No photo: cached features. Pass <code>dataset=</code>.</div>"
        return jpeg_bytes(to_pil(image.detach().float().cpu(), self.settings), quality=88), caption

    def _name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)
