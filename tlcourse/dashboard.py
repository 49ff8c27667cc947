"""A live training dashboard: progress, curves, a sample photo and a Stop button.

Pass a :class:`TrainingDashboard` as a training callback::

    dash = TrainingDashboard(data.classes, settings=model.transform_settings, title="head only")
    history = train_frozen(model, data, epochs=5, callbacks=[dash])

In JupyterLab it shows, as soon as training begins, one panel with

* progress bars for the epochs and for the batches of the current epoch, with
  speed and time left;
* curves of train and validation loss and accuracy (per epoch, plus the loss
  and running accuracy of the batches within an epoch);
* the first photo of the current batch, de-normalised, with its true and
  predicted label;
* a Stop button that ends training cleanly after the current batch (the model
  keeps its best weights, the history is complete up to that point);
* a summary at the end (best epoch, accuracy, time).

Outside a live widget front end (plain ``python``, a terminal, nbval, CI) the
same callback prints one line per epoch and a summary instead.
``TLCOURSE_DASHBOARD=text|widgets|auto`` overrides the choice (default ``auto``:
widgets inside a Jupyter kernel, text elsewhere).

Why the Stop button needs help: a Jupyter kernel handles one shell message at
a time, and a widget event (the button's click) is a shell message, so while a
cell is busy training the click just waits in the kernel's queue until the cell
ends. :class:`KernelEventPump` reads that queue from inside the training loop
(once per batch, a non-blocking read of a local socket): widget messages are
handled at once, every other message (say the next cell's ``execute_request``
after "Run All") is handed back to the kernel, in order, to run when the cell
finishes. The ``jupyter-ui-poll`` library does the same job for older kernels,
but it drives ``Kernel.do_one_iteration``, which ipykernel 7 no longer has.

What it costs: the dashboard must not slow training by more than a few
percent, even a sub-second run on cached features (lesson 3's cell when run
again), so its fixed costs matter as much as its redraws:

* the panel is six widgets (10 widget models with their shared layout and
  style, each a comm the front end opens), not one widget per bar and label;
* bars and texts are one HTML view (native ``<progress>`` elements), refreshed
  at most twice a second (every 0.25 s at an epoch's edges), one message each;
* the curves are SVG text that the browser draws (about a millisecond to
  write, where a matplotlib PNG of the same plots takes 0.1-0.3 s), and they
  and the photo are redrawn only while their total drawing time stays under
  :attr:`TrainingDashboard.draw_budget` of the time elapsed;
* per batch it appends three numbers (``fit`` counts the running accuracy)
  and asks the kernel's socket whether a message waits.

``benchmarks/dashboard_overhead.py`` measures it, side by side with no dashboard.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import html
import inspect
import io
import itertools
import math
import os
import sys
import threading
import time
from typing import Any, Sequence

import numpy as np
import torch

from .data import TransformSettings, denormalize
from .training import Callback, TrainState

MODE_ENV = "TLCOURSE_DASHBOARD"
MODES = ("auto", "widgets", "text")


# --------------------------------------------------------------------------- choosing a front end
def _in_kernel() -> bool:
    """True inside a Jupyter (IPython) kernel, as opposed to plain python or a terminal IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def dashboard_mode(requested: str | None = None) -> str:
    """Decide how the dashboard shows itself: ``"widgets"`` or ``"text"``.

    ``requested`` (or else the ``TLCOURSE_DASHBOARD`` environment variable) may be
    ``"widgets"``, ``"text"`` or ``"auto"`` (the default): ``auto`` means widgets
    inside a Jupyter kernel with ipywidgets installed, text everywhere else. A
    kernel cannot tell whether a browser is watching, so headless runners that
    execute notebooks (the test suite's nbval run sets ``TLCOURSE_DASHBOARD=text``)
    should ask for text; widgets there would be harmless, only wasted drawing.
    """
    choice = (requested or os.environ.get(MODE_ENV) or "auto").strip().lower()
    if choice not in MODES:
        raise ValueError(
            f"{MODE_ENV}={choice!r} is not a dashboard mode; use one of {', '.join(MODES)} "
            "(auto: widgets in Jupyter, text elsewhere)."
        )
    if choice == "auto":
        if not _in_kernel():
            return "text"
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            return "text"
        return "widgets"
    return choice


# --------------------------------------------------------------------------- widget events while busy
class KernelEventPump:
    """Let widget events (a button click) through while the kernel is busy running a cell.

    Call :meth:`poll` from inside a long computation. It drains the kernel's
    main shell socket without blocking. Widget traffic is handled at once:
    ``comm_open``/``comm_msg``/``comm_close`` (as ipykernel itself does for comms
    that arrive while an async cell awaits), and the two read-only questions a
    front end asks before it can show widgets, ``comm_info_request`` and
    ``kernel_info_request`` (JupyterLab's widget manager waits for the former
    when it connects, so without an answer a busy kernel's widgets would show
    only "Loading widget..." until the cell ends). Every other message is passed
    to the kernel's own receive callback, which queues it behind the running cell
    exactly as if the kernel had read it itself, so "Run All" keeps its order.

    Works with ipykernel 6 and 7 (with or without kernel subshells) when called
    from the kernel's main thread; elsewhere (plain python, another thread, an
    unknown kernel) :attr:`available` is False and :meth:`poll` does nothing.
    """

    NOW_TYPES = frozenset({"comm_open", "comm_msg", "comm_close", "comm_info_request", "kernel_info_request"})

    def __init__(self) -> None:
        self.available = False
        self.handled = 0  # messages handled while busy
        self.deferred = 0  # other messages handed back to the kernel
        self._kernel: Any = None
        self._stream: Any = None
        self._reply: Any = None
        try:
            self._attach()
        except Exception:  # an unknown kernel layout: no pump, training still works
            self.available = False

    def _attach(self) -> None:
        if threading.current_thread() is not threading.main_thread() or not _in_kernel():
            return
        from IPython import get_ipython

        kernel = get_ipython().kernel
        if getattr(kernel, "_supports_kernel_subshells", False):
            # ipykernel >= 7: the shell channel thread forwards the main shell's messages over a
            # socket pair; replies go back over another one (what Kernel.dispatch_shell uses).
            manager = kernel.shell_channel_thread.manager
            stream = manager.get_shell_channel_to_subshell_pair(None).to_stream
            reply = manager.get_subshell_to_shell_channel_socket(None)
        else:  # ipykernel 6, or 7 without subshells: the shell socket itself
            stream = reply = getattr(kernel, "shell_stream", None)
        needed = (getattr(stream, "socket", None), getattr(stream, "_recv_callback", None), reply,
                  getattr(kernel, "session", None), getattr(kernel, "shell_handlers", None))
        if any(part is None for part in needed):
            return
        self._kernel, self._stream, self._reply = kernel, stream, reply
        self.available = True

    def poll(self, limit: int = 100) -> int:
        """Handle up to ``limit`` pending messages; return how many were handled at once."""
        if not self.available:
            return 0
        import zmq

        handled = 0
        socket = self._stream.socket
        for _ in range(limit):
            try:
                # Asking whether a message waits costs a few microseconds; a read that
                # finds none would raise (and build) a zmq.Again every batch.
                if not socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    break
                frames = socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            except zmq.ZMQError:  # socket closed (kernel shutting down)
                self.available = False
                break
            if self._msg_type(frames) in self.NOW_TYPES and self._handle_now(frames):
                handled += 1
            else:
                self._defer(frames)
        self.handled += handled
        return handled

    def _msg_type(self, frames: list) -> str | None:
        session = self._kernel.session
        try:
            _, parts = session.feed_identities(frames, copy=False)
            # content=False: a header-only read does not record the signature, so the
            # kernel can still read (and verify) a deferred message later.
            return session.deserialize(parts, content=False, copy=False)["header"].get("msg_type")
        except Exception:
            return None

    def _handle_now(self, frames: list) -> bool:
        """Run the kernel's handler for this message now; False if it must wait after all."""
        kernel = self._kernel
        # Outputs of the cell must keep going to the cell: remember its parent message.
        parent = kernel.get_parent("shell")
        parent_ident = kernel._parent_ident["shell"]
        try:
            idents, parts = kernel.session.feed_identities(frames, copy=False)
            msg = kernel.session.deserialize(parts, content=True, copy=False)
            handler = kernel.shell_handlers.get(msg["header"]["msg_type"])
            if handler is None:
                return True
            kernel.set_parent(idents, msg, channel="shell")
            result = handler(self._reply, idents, msg)
            if inspect.iscoroutine(result):
                # ipykernel 7's handlers are coroutines that never actually wait for
                # anything: run it to its end right here.
                try:
                    result.send(None)
                except StopIteration:
                    pass
                else:  # it did wait: cannot finish it here, so leave it to the kernel
                    result.close()
                    kernel.log.warning("tlcourse dashboard: handler of %s waited; not handled early",
                                       msg["header"]["msg_type"])
            return True
        except Exception as error:  # a faulty widget handler must not end training
            kernel.log.error("tlcourse dashboard: message handling failed: %s", error)
            return True
        finally:
            kernel.set_parent(parent_ident, parent, channel="shell")

    def _defer(self, frames: list) -> None:
        # The stream's own callback (ipykernel's shell_main / schedule_dispatch) queues the
        # message behind the running cell, in arrival order.
        self.deferred += 1
        result = self._stream._recv_callback(frames)
        if inspect.isawaitable(result):
            asyncio.ensure_future(result)


# --------------------------------------------------------------------------- helpers
def format_duration(seconds: float) -> str:
    """A short human duration: ``"8 s"``, ``"2 min 05 s"``, ``"1 h 03 min"``."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _rate(per_second: float) -> str:
    """``0.31``, ``3.04``, ``42.5``, ``536``: three significant figures at most."""
    return f"{per_second:.0f}" if per_second >= 100 else f"{per_second:.1f}" if per_second >= 10 else f"{per_second:.2f}"


def _to_uint8_image(image: Any, settings: TransformSettings) -> np.ndarray:
    """A normalised CHW tensor (or a PIL image) as an HWC uint8 array for display."""
    if isinstance(image, torch.Tensor):
        if image.ndim != 3:
            raise ValueError(f"expected an image tensor of shape (C, H, W), got {tuple(image.shape)}")
        pixels = denormalize(image.detach().float().cpu(), settings)
        array = (pixels.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        return array if array.shape[2] == 3 else np.repeat(array[:, :, :1], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def _encode(array: np.ndarray, fmt: str = "jpeg") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt.upper(), quality=88)
    return buffer.getvalue()


# --------------------------------------------------------------------------- the dashboard
class TrainingDashboard(Callback):
    """A training callback that shows training live (widgets) or as text.

    Parameters
    ----------
    class_names:
        Names of the classes, in label order (``data.classes``), for the sample's labels.
    settings:
        The model's :class:`~tlcourse.data.TransformSettings` (``model.transform_settings``),
        used to undo the input normalisation of the sample photo. ImageNet defaults if None.
    dataset:
        When training on cached feature vectors (2-D ``x``), the dataset whose rows the
        loader's ``index`` refers to (a ``CSVDataset`` with the evaluation transform): the
        sample photo is read from it.
    title:
        Shown in the dashboard's header and in the text output.
    mode:
        ``"widgets"``, ``"text"`` or ``"auto"``; default: the ``TLCOURSE_DASHBOARD``
        environment variable, else ``auto`` (see :func:`dashboard_mode`).

    ``dash.stop()`` (or the Stop button) asks training to end after the current batch.
    After training, :meth:`curve_data` returns the plotted numbers and :attr:`summary`
    the final summary line.
    """

    #: Seconds between updates of progress bars and text (widgets), and of a terminal's live line.
    text_interval: float = 0.5
    #: Fraction of the training time the plot and photo may take to draw.
    draw_budget: float = 0.03
    #: Never redraw the plot more often than this (seconds).
    draw_interval: float = 1.0
    #: Seconds between refreshes at an epoch's start and end (a run of many short epochs).
    edge_interval: float = 0.25
    #: Seconds between looks for a Stop click in the kernel's queue (checked after a batch).
    poll_interval: float = 0.02
    #: Seconds one drawing of the plot and photo is assumed to take until one is measured.
    draw_cost_estimate: float = 0.01

    def __init__(
        self,
        class_names: Sequence[str],
        settings: TransformSettings | None = None,
        dataset: Any = None,
        title: str = "",
        mode: str | None = None,
    ) -> None:
        self.class_names = [str(name) for name in class_names]
        self.settings = settings or TransformSettings()
        self.dataset = dataset
        self.title = title
        self.mode = dashboard_mode(mode)
        self.summary: str = ""
        self.stop_reason: str | None = None
        self.widget: Any = None  # the ipywidgets panel, once training has begun (widgets mode)
        self.draws = 0  # how many times the plot was drawn in the last run
        self.draw_seconds = 0.0  # and how long that took in total
        self._stop_wanted = False
        self._reset_run()

    # ----------------------------------------------------------------- public API
    def stop(self) -> None:
        """Ask training to stop after the current batch (what the Stop button does)."""
        if self._state is not None:  # during training: takes effect when this batch ends
            self._state.stop_requested = True
        if not self._stop_wanted:
            self._stop_wanted = True
            self.stop_reason = self.stop_reason or "stop requested"
            if self.mode == "widgets" and self.widget is not None and not self._finished:
                self._stop_button.disabled = True
                self._stop_button.description = "Stopping…"
                self._set_status("Stopping after this batch…", STOP_COLOR)
                self._show_progress()

    def curve_data(self) -> dict[str, list[float]]:
        """The numbers behind the curves: per-batch (x in epochs) and per-epoch values.

        Keys: ``batch_x``, ``batch_loss``, ``batch_acc`` (running accuracy within the
        epoch), ``epoch_x`` (end of each finished epoch), ``train_loss``, ``train_acc``,
        ``val_loss``, ``val_acc`` (NaN where the run has no validation data).
        """
        epochs = self._history.epochs if self._history is not None else []
        nan = math.nan
        return {
            "batch_x": list(self._batch_x),
            "batch_loss": list(self._batch_loss),
            "batch_acc": list(self._batch_acc),
            "epoch_x": [r["epoch"] + 1.0 for r in epochs],
            "train_loss": [r["train_loss"] for r in epochs],
            "train_acc": [r["train_acc"] for r in epochs],
            "val_loss": [r.get("val_loss", nan) for r in epochs],
            "val_acc": [r.get("val_acc", nan) for r in epochs],
        }

    @property
    def stop_button(self) -> Any:
        """The Stop button widget (widgets mode, once training has begun), else None."""
        return self._stop_button if self.widget is not None else None

    # ----------------------------------------------------------------- callbacks
    def on_train_begin(self, state: TrainState) -> None:
        self._reset_run()
        self._state = state
        self._history = state.history
        self._first_epoch = len(state.history.epochs)
        self._started = time.perf_counter()
        if self.mode == "widgets":
            self._pump = KernelEventPump()
            self._build_widgets(state)
        else:
            what = f" {self.title}" if self.title else ""
            batches = f" x {state.batches} batches" if state.batches else ""
            print(f"Training{what}: {state.epochs - self._first_epoch} epoch(s){batches}", flush=True)

    def on_epoch_begin(self, state: TrainState) -> None:
        self._epoch_started = time.perf_counter()
        self._epoch_batches = 0
        if self.mode == "widgets":
            self._bars["Batches"][:] = [0, max(state.batches, 1)]
            if not self._stop_wanted:
                self._set_status("Training…")
            self._update_text(state, edge=True)

    def on_batch_end(self, state: TrainState) -> None:
        # Cheap bookkeeping every batch: loss and running accuracy (fit's own counts) for the curves.
        self._batch_x.append(state.epoch + (state.batch + 1) / max(state.batches, 1))
        self._batch_loss.append(float(state.loss))
        self._batch_acc.append(state.correct / state.seen if state.seen else math.nan)
        self._epoch_batches += 1

        if self._pump is not None and time.perf_counter() - self._last_poll >= self.poll_interval:
            self._last_poll = time.perf_counter()
            self._pump.poll()  # a Stop click waiting in the kernel's queue is handled here
        if self._stop_wanted:
            state.stop_requested = True

        if self.mode == "widgets":
            last = state.batches and state.batch + 1 == state.batches
            if last and not state.stop_requested:
                self._set_status("Checking the validation set…")
            self._update_text(state, force=state.stop_requested, edge=bool(last))
            self._maybe_draw(state)
        else:
            self._terminal_line(state)

    def on_epoch_end(self, state: TrainState) -> None:
        if self._pump is not None:
            self._pump.poll()  # a click during validation stops before the next epoch
        if self._stop_wanted:
            state.stop_requested = True
        record = state.history.epochs[-1]
        if self.mode == "widgets":
            if not self._stop_wanted:
                self._set_status("Training…")
            self._update_text(state, edge=True)
            self._maybe_draw(state)
        else:
            if self._live_line:
                sys.stdout.write("\r" + " " * self._live_line + "\r")
                self._live_line = 0
            print(self._epoch_line(record, state), flush=True)

    def on_train_end(self, state: TrainState) -> None:
        history = state.history
        if history.interrupted:
            self.stop_reason = "interrupted"
        self.summary = self._summary_text(state)
        if self.mode == "widgets":
            self._finish_widgets(state)
        else:
            if self._live_line:
                sys.stdout.write("\r" + " " * self._live_line + "\r")
                self._live_line = 0
            print(self.summary, flush=True)
        self._state = None

    # ----------------------------------------------------------------- run state
    def _reset_run(self) -> None:
        self._stop_wanted = False
        self.stop_reason = None
        self._state: TrainState | None = None
        self._history = None
        self._first_epoch = 0
        self._started = self._epoch_started = time.perf_counter()
        self._batch_x: list[float] = []
        self._batch_loss: list[float] = []
        self._batch_acc: list[float] = []
        self._epoch_batches = 0
        self._last_text = -math.inf
        self._last_draw = -math.inf
        self._live_line = 0
        self._last_poll = -math.inf
        self._pump: KernelEventPump | None = None
        self.draws, self.draw_seconds = 0, 0.0
        self._draw_cost = self.draw_cost_estimate  # seconds per draw, until measured
        self._finished = False

    def _rates(self, state: TrainState) -> tuple[float, float, float]:
        """(batches per second this epoch, seconds left in this epoch, seconds left in the run)."""
        now = time.perf_counter()
        done = state.batch + 1
        rate = done / max(now - self._epoch_started, 1e-9)
        epoch_left = (state.batches - done) / rate if state.batches else math.nan
        finished = [r["seconds"] for r in state.history.epochs[self._first_epoch:]]
        per_epoch = sum(finished) / len(finished) if finished else (state.batches / rate if state.batches else math.nan)
        epochs_after = state.epochs - state.epoch - 1
        return rate, epoch_left, epoch_left + epochs_after * per_epoch

    # ----------------------------------------------------------------- text mode
    def _epoch_line(self, record: dict[str, float], state: TrainState) -> str:
        line = (f"epoch {record['epoch'] + 1}/{state.epochs}  train loss {record['train_loss']:.3f} "
                f"acc {record['train_acc']:.1%}")
        if "val_loss" in record:
            line += f"  |  val loss {record['val_loss']:.3f} acc {record['val_acc']:.1%}"
        return line + f"  ({format_duration(record['seconds'])})"

    def _terminal_line(self, state: TrainState) -> None:
        # A live, overwritten line only on a real terminal: in notebooks, logs and CI, \r
        # updates would pile up as separate lines, so there it is one line per epoch.
        if not getattr(sys.stdout, "isatty", lambda: False)():
            return
        now = time.perf_counter()
        if now - self._last_text < self.text_interval:
            return
        self._last_text = now
        rate, epoch_left, _ = self._rates(state)
        line = (f"  epoch {state.epoch + 1}/{state.epochs}  batch {state.batch + 1}/{state.batches}  "
                f"loss {state.loss:.3f}  {rate:.1f} batch/s  {format_duration(epoch_left)} left")
        sys.stdout.write("\r" + line.ljust(self._live_line))
        sys.stdout.flush()
        self._live_line = len(line)

    def _summary_text(self, state: TrainState) -> str:
        history = state.history
        ran = len(history.epochs) - self._first_epoch
        took = format_duration(time.perf_counter() - self._started)
        how = ""
        if history.interrupted:
            how = " (interrupted)"
        elif history.stopped_early:
            how = " (stopped early)"
        parts = [f"Finished{how}: {ran} epoch(s) in {took}"]
        best = history.best()
        if best is not None:
            score = (f"val accuracy {best['val_acc']:.1%}, val loss {best['val_loss']:.3f}"
                     if "val_acc" in best else f"train accuracy {best['train_acc']:.1%}")
            parts.append(f"best epoch {best['epoch'] + 1}: {score}")
        return "; ".join(parts) + "."

    # ----------------------------------------------------------------- widgets mode
    # The panel is two HTML views (progress; curves and photo) above the Stop button and the
    # summary beside it, in two boxes. Each ipywidgets widget costs a few comm messages to create and one
    # message per changed value, so the progress bars and texts live in one HTML view (one
    # message per refresh) rather than a dozen widgets of their own.
    def _build_widgets(self, state: TrainState) -> None:
        import ipywidgets as w
        from IPython.display import display

        self._status = ("Starting…", "#555")
        self._bar_color = BAR_COLORS["running"]
        self._bars = {"Epochs": [len(state.history.epochs), max(state.epochs, 1)],
                      "Batches": [0, max(state.batches, 1)]}
        self._lines = {"Epochs": "", "Batches": ""}
        self._sample_jpeg: bytes | None = None
        self._caption = "<i>first batch coming…</i>"
        self._curves_svg = curves_svg(self.curve_data(), self._first_epoch)

        # The HTML views, the button and its row share one Layout, and the views one style: two
        # widget models, not eight (align_items and grid_gap mean nothing outside a box).
        from ipywidgets.widgets.widget_string import HTMLStyle

        plain_layout, plain_style = w.Layout(align_items="center", grid_gap="12px"), HTMLStyle()
        self._progress = w.HTML(layout=plain_layout, style=plain_style)
        self._figure = w.HTML(layout=plain_layout, style=plain_style)
        self._stop_button = w.Button(description="Stop", icon="stop", button_style="danger",
                                     tooltip="End training after the current batch (keeps the best weights)",
                                     layout=plain_layout)
        self._stop_button.add_class("tlcourse-stop")
        self._stop_button.on_click(lambda _button: self._stop_clicked())
        self._summary = w.HTML(
            "<span style='color:#666'>Stops after this batch; the model keeps its best "
            "weights and the notebook carries on.</span>",
            layout=plain_layout, style=plain_style,
        )
        self._summary.add_class("tlcourse-summary")
        self._button_row = w.HBox([self._stop_button, self._summary], layout=plain_layout)
        self.widget = _panel_class()(
            [self._progress, self._figure, self._button_row],
            layout=w.Layout(border="1px solid #ddd", padding="8px 12px", width="860px", grid_gap="4px"),
        )
        self.widget.add_class("tlcourse-dashboard")
        self._last_draw = time.perf_counter()  # the first drawing once there is something to show
        self._show_figure()
        self._update_text(state, force=True)
        display(self.widget)

    def _stop_clicked(self) -> None:
        self.stop_reason = "Stop button"
        self.stop()

    def _set_status(self, text: str, color: str = "#555") -> None:
        self._status = (text, color)  # shown by the next refresh of the progress view

    def _update_text(self, state: TrainState, force: bool = False, edge: bool = False) -> None:
        """Refresh bars and texts: at most every ``text_interval`` seconds, at an epoch's edges
        every ``edge_interval`` (a run of many short epochs would otherwise refresh at every
        edge), and always when ``force``d."""
        now = time.perf_counter()
        interval = 0.0 if force else self.edge_interval if edge else self.text_interval
        if now - self._last_text < interval:
            return
        self._last_text = now
        self._compose_progress(state, now)
        self._show_progress()

    def _compose_progress(self, state: TrainState, now: float) -> None:
        """Bars and texts for ``state``, ready for :meth:`_show_progress`."""
        bars, lines = self._bars, self._lines
        bars["Epochs"][0] = min(len(state.history.epochs), bars["Epochs"][1])
        elapsed = format_duration(now - self._started)
        if not self._epoch_batches:  # a new epoch, no batch yet: no speed to show
            bars["Batches"][0] = 0
            lines["Epochs"] = f"epoch {state.epoch + 1}/{state.epochs} · {elapsed} elapsed"
            lines["Batches"] = f"0/{state.batches} · starting…" if state.batches else "starting…"
        else:
            rate, epoch_left, run_left = self._rates(state)
            bars["Batches"][0] = min(state.batch + 1, bars["Batches"][1])
            lines["Epochs"] = (f"epoch {min(state.epoch + 1, state.epochs)}/{state.epochs} · "
                               f"{elapsed} elapsed · ~{format_duration(run_left)} left")
            running = f" · acc {state.correct / state.seen:.0%}" if state.seen else ""
            left = "" if self._finished else f" · ~{format_duration(epoch_left)} left"
            lines["Batches"] = (f"{state.batch + 1}/{state.batches} · {_rate(rate)} batch/s{left} · "
                                f"loss {state.loss:.3f}{running}")
        if state.stop_requested and not self._finished:
            self._set_status("Stopping after this batch…", STOP_COLOR)

    def _show_progress(self) -> None:
        title = html.escape(self.title) if self.title else "Training"
        text, color = self._status
        rows = "".join(
            f"<div class='tlcourse-{name.lower()}-progress' style='display:flex;align-items:center;"
            f"gap:10px;height:26px'><span style='width:64px;flex:none'>{name}</span>"
            f"<progress value='{value}' max='{maximum}' style='width:340px;height:18px;flex:none;"
            f"accent-color:{self._bar_color}'>{value}/{maximum}</progress>"
            f"<span>{html.escape(self._lines[name])}</span></div>"
            for name, (value, maximum) in self._bars.items()
        )
        self._progress.value = (
            "<div style='line-height:1.4'><div style='display:flex;justify-content:space-between;"
            f"align-items:baseline;margin-bottom:2px'><b style='font-size:1.15em'>{title}</b>"
            f"<span class='tlcourse-status' style='color:{color}'>{html.escape(text)}</span></div>{rows}</div>"
        )

    def _show_figure(self) -> None:
        if self._sample_jpeg:
            source = "data:image/jpeg;base64," + base64.b64encode(self._sample_jpeg).decode("ascii")
            photo = (f"<img class='tlcourse-sample' src='{source}' width='176' height='176' "
                     "style='object-fit:contain;display:block;margin:0 auto 4px' alt='first photo of the batch'>")
        else:
            photo = ""
        self._figure.value = (
            "<div style='display:flex;align-items:center;gap:12px;line-height:1.3'>"
            f"{self._curves_svg}<div class='tlcourse-sample-box' style='width:176px'>{photo}{self._caption}</div></div>"
        )

    def _maybe_draw(self, state: TrainState) -> None:
        # Three rules keep drawing within draw_budget of the training time:
        # * after a draw that took c seconds, wait c / draw_budget (and at least draw_interval);
        # * the total drawing time, with the next draw, stays within the budget of the time
        #   elapsed (so a short run is not charged a draw it cannot pay for);
        # * no drawing in the last seconds of a run: the final drawing comes right after.
        # c is a running mean of the draws so far, first estimated by draw_cost_estimate.
        now = time.perf_counter()
        if now - self._last_draw < max(self.draw_interval, self._draw_cost / self.draw_budget):
            return
        if self.draw_seconds + self._draw_cost > self.draw_budget * (now - self._started):
            return
        if state.batches and self._rates(state)[2] < 3 * self.draw_interval:
            return
        self._draw(state)

    def _draw(self, state: TrainState) -> None:
        started = time.perf_counter()
        self._curves_svg = self._render_curves()
        sample = self._render_sample(state)
        if sample is not None:
            self._sample_jpeg, self._caption = sample
        self._show_figure()
        self._last_draw = time.perf_counter()
        took = self._last_draw - started
        self._draw_cost = took if not self.draws else 0.7 * self._draw_cost + 0.3 * took
        self.draws += 1
        self.draw_seconds += took

    def _render_curves(self) -> str:
        return curves_svg(self.curve_data(), self._first_epoch)

    def _sample_image(self, state: TrainState) -> Any:
        """The first example of the batch as something displayable, or None."""
        if state.x is not None and state.x.ndim == 4:
            return state.x[0]
        if state.index is not None and self.dataset is not None and len(state.index):
            return self.dataset[int(state.index[0])][0]
        return None

    def _render_sample(self, state: TrainState) -> tuple[bytes, str] | None:
        if state.y is None or state.logits is None or not len(state.y):
            return None
        image = self._sample_image(state)
        true_label = self._name(int(state.y[0]))
        probs = torch.softmax(state.logits[0].float(), 0)
        pred = int(probs.argmax())
        color = "#2ca02c" if pred == int(state.y[0]) else "#d62728"
        caption = (f"<div style='text-align:center'>true: <b>{html.escape(true_label)}</b><br>"
                   f"predicted: <b style='color:{color}'>{html.escape(self._name(pred))}</b> "
                   f"({float(probs[pred]):.0%})</div>")
        if image is None:
            caption += ("<div style='color:#888;font-size:0.85em;margin-top:4px'>"
                        "No photo: training on cached features. Pass <code>dataset=</code> to see it.</div>")
            return b"", caption
        return _encode(_to_uint8_image(image, self.settings)), caption

    def _name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

    def _finish_widgets(self, state: TrainState) -> None:
        history = state.history
        self._finished = True
        if history.interrupted:
            kind, status = "warning", "Interrupted"
        elif history.stopped_early:
            kind, status = "warning", "Stopped"
        else:
            kind, status = "success", "Done"
        self._bar_color = BAR_COLORS[kind]
        self._set_status(status, BAR_COLORS[kind] if kind == "success" else STOP_COLOR)
        self._compose_progress(state, time.perf_counter())  # bars and counts at their final values
        ran = len(history.epochs) - self._first_epoch
        self._lines["Epochs"] = (f"{ran} of {state.epochs - self._first_epoch} epoch(s) · "
                                 f"{format_duration(time.perf_counter() - self._started)}")
        if history.stopped_early or history.interrupted:  # no time left to count down
            self._lines["Batches"] = f"stopped after batch {state.batch + 1}/{state.batches} · loss {state.loss:.3f}"
        self._show_progress()
        self._draw(state)
        # The button has done its job: the row now holds the summary.
        self._stop_button.disabled = True
        self._button_row.children = (self._summary,)
        self._summary.value = f"<b>{html.escape(self.summary)}</b>"

    # ----------------------------------------------------------------- for tests and notebooks
    def progress(self) -> dict[str, Any]:
        """What the progress view shows (widgets mode): status, and for ``"Epochs"`` and
        ``"Batches"`` the bar's ``(value, max)`` and its text."""
        if self.widget is None:
            return {}
        return {"status": self._status[0], "color": self._bar_color,
                **{name: (tuple(bar), self._lines[name]) for name, bar in self._bars.items()}}


@functools.lru_cache(maxsize=1)
def _panel_class() -> type:
    """The dashboard's box: an ipywidgets VBox with a short text form. ``display()`` sends a
    widget's ``repr`` along as text/plain, and the default one spells out every child's value
    (the whole SVG, about 10 kB) only to keep its first 110 characters: half of the display's
    cost at the start of a sub-second run."""
    import ipywidgets as w

    class DashboardPanel(w.VBox):
        def __repr__(self) -> str:
            return "TrainingDashboard(...)"

    return DashboardPanel


#: Progress bar colours: while training, after a full run, after Stop or an interrupt.
#: Dark enough that Chromium keeps the bar's track light (it darkens the track behind a light colour).
BAR_COLORS = {"running": "#1f77b4", "success": "#2e7d32", "warning": "#b26a00"}
STOP_COLOR = BAR_COLORS["warning"]


# --------------------------------------------------------------------------- the curves, as SVG
# Why SVG text and not a matplotlib PNG: the browser draws SVG, so the kernel only formats
# a few kilobytes of numbers (about a millisecond, whatever the screen's resolution), where
# rendering a PNG of the same two plots takes matplotlib 0.1-0.3 s: more than a whole short
# training run on cached features. matplotlib still picks the ticks (MaxNLocator).
SERIES_STYLE = {  # series -> (colour, line width, marker, legend label)
    "batch": ("#9ecae1", 1.0, "", "train (batches)"),
    "train": ("#1f77b4", 2.0, "circle", "train"),
    "val": ("#ff7f0e", 2.0, "square", "validation"),
}
#: At most this many points per line: a long run's per-batch curve is thinned evenly.
MAX_POINTS = 600


def curves_svg(data: dict[str, list[float]], first_epoch: int = 0, width: int = 640, height: int = 252) -> str:
    """Loss and accuracy plots, side by side, as an ``<svg>`` element.

    ``data`` is :meth:`TrainingDashboard.curve_data`: per-batch values at fractional
    epochs (the light line) and per-epoch train and validation values at the end of
    each epoch. Non-finite values (a NaN loss, no validation set) leave gaps. Each
    line is a ``<polyline>`` with ``data-series="train_loss"`` etc.
    """
    last_x = max(data["batch_x"][-1:] + data["epoch_x"][-1:] + [0.0])
    x_range = (float(first_epoch), float(max(math.ceil(last_x), first_epoch + 1)))
    losses = _finite(data["batch_loss"] + data["train_loss"] + data["val_loss"])
    loss_range = (0.0, max(losses) * 1.08 + 1e-6 if losses else 1.0)
    accuracies = _finite(data["batch_acc"] + data["train_acc"] + data["val_acc"])
    low = min(accuracies) if accuracies else 0.5
    accuracy_range = (max(0.0, min(low, 0.9) - 0.05), 1.01)
    half = width / 2
    return (
        f"<svg class='tlcourse-curves' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' font-family='sans-serif' style='flex:none;background:white'>"
        + _panel(data, "loss", 0.0, half, height, x_range, loss_range, percent=False)
        + _panel(data, "acc", half, half, height, x_range, accuracy_range, percent=True)
        + _legend(width / 2, height - 9.0)  # below both plots, where no line can run under it
        + "</svg>"
    )


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _ticks(low: float, high: float, bins: int, integer: bool = False) -> list[float]:
    from matplotlib.ticker import MaxNLocator

    locator = MaxNLocator(nbins=bins, integer=integer, steps=[1, 2, 2.5, 5, 10])
    span = 1e-9 * max(1.0, abs(high - low))
    return [float(t) for t in locator.tick_values(low, high) if low - span <= t <= high + span]


def _tick_labels(ticks: list[float], percent: bool) -> list[str]:
    """Labels with as many decimals as the step between ticks needs (0.25 -> 2, 20% -> 0)."""
    values = [t * 100 if percent else t for t in ticks]
    step = min((b - a for a, b in itertools.pairwise(values)), default=1.0)
    decimals = next((d for d in range(6) if abs(step * 10**d - round(step * 10**d)) < 1e-6), 6)
    return [f"{v:.{decimals}f}" + ("%" if percent else "") for v in values]


def _panel(data: dict[str, list[float]], key: str, left: float, width: float, height: float,
           x_range: tuple[float, float], y_range: tuple[float, float], percent: bool) -> str:
    x0, x1 = left + 46, left + width - 12  # the plot area; room for tick labels left and below
    y0, y1 = 24.0, height - 52.0

    def sx(v: float) -> float:
        return x0 + (v - x_range[0]) / (x_range[1] - x_range[0]) * (x1 - x0)

    def sy(v: float) -> float:
        return y1 - (v - y_range[0]) / (y_range[1] - y_range[0]) * (y1 - y0)

    title = "loss" if key == "loss" else "accuracy"
    out = [f"<g class='tlcourse-{title}'>",
           f"<rect x='{x0:.1f}' y='{y0:.1f}' width='{x1 - x0:.1f}' height='{y1 - y0:.1f}' fill='none' stroke='#bbb'/>"]
    y_ticks = _ticks(*y_range, bins=5)
    for tick, label in zip(y_ticks, _tick_labels(y_ticks, percent)):
        y = sy(tick)
        out.append(f"<line x1='{x0:.1f}' x2='{x1:.1f}' y1='{y:.1f}' y2='{y:.1f}' stroke='#e6e6e6'/>"
                   f"<text class='ytick' x='{x0 - 5:.1f}' y='{y:.1f}' font-size='9' text-anchor='end' "
                   f"dominant-baseline='central' fill='#444'>{label}</text>")
    x_ticks = _ticks(*x_range, bins=6, integer=True)
    for tick, label in zip(x_ticks, _tick_labels(x_ticks, False)):
        x = sx(tick)
        out.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{y0:.1f}' y2='{y1:.1f}' stroke='#e6e6e6'/>"
                   f"<text class='xtick' x='{x:.1f}' y='{y1 + 13:.1f}' font-size='9' text-anchor='middle' "
                   f"fill='#444'>{label}</text>")
    out.append(f"<text x='{(x0 + x1) / 2:.1f}' y='15' font-size='12' text-anchor='middle'>{title}</text>"
               f"<text x='{(x0 + x1) / 2:.1f}' y='{y1 + 27:.1f}' font-size='10' text-anchor='middle' "
               "fill='#444'>epoch</text>")
    for series, (color, stroke, marker, _) in SERIES_STYLE.items():
        xs = data["batch_x" if series == "batch" else "epoch_x"]
        ys = data[f"{series}_{key}"]
        if len(xs) > MAX_POINTS:  # thin evenly, keeping the last point
            keep = list(range(0, len(xs), math.ceil(len(xs) / MAX_POINTS)))
            keep = keep if keep[-1] == len(xs) - 1 else keep + [len(xs) - 1]
            xs, ys = [xs[i] for i in keep], [ys[i] for i in keep]
        points = [(sx(x), sy(y)) if math.isfinite(y) else None for x, y in zip(xs, ys)]
        out.extend(_polylines(points, f"{series}_{key}", color, stroke))
        if marker and len(points) <= 60:
            out.extend(_marker(x, y, marker, color) for x, y in filter(None, points))
    out.append("</g>")
    return "".join(out)


def _polylines(points: list[tuple[float, float] | None], series: str, color: str, stroke: float) -> list[str]:
    """One <polyline> per run of finite points (a NaN breaks the line)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for point in points:
        if point is None:
            runs.append([])
        else:
            runs[-1].append(point)
    return [f"<polyline data-series='{series}' points='{' '.join(f'{x:.1f},{y:.1f}' for x, y in run)}' "
            f"fill='none' stroke='{color}' stroke-width='{stroke}' stroke-linejoin='round'/>"
            for run in runs if run]


def _marker(x: float, y: float, marker: str, color: str) -> str:
    if marker == "circle":
        return f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3' fill='{color}'/>"
    return f"<rect x='{x - 3:.1f}' y='{y - 3:.1f}' width='6' height='6' fill='{color}'/>"


def _legend(center: float, y: float) -> str:
    """One row of legend entries (line, marker, label), centred on ``center``."""
    widths = [104.0, 62.0, 80.0]  # room for each entry: a 20 px line, a gap and its label at 9 px
    x = center - sum(widths) / 2
    parts = ["<g class='legend'>"]
    for (color, stroke, marker, label), room in zip(SERIES_STYLE.values(), widths):
        parts.append(f"<line x1='{x:.1f}' x2='{x + 20:.1f}' y1='{y:.1f}' y2='{y:.1f}' stroke='{color}' "
                     f"stroke-width='{stroke}'/>")
        if marker:
            parts.append(_marker(x + 10, y, marker, color))
        parts.append(f"<text x='{x + 26:.1f}' y='{y:.1f}' font-size='9' dominant-baseline='central' "
                     f"fill='#333'>{label}</text>")
        x += room
    return "".join(parts) + "</g>"
