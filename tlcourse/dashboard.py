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

Redrawing is throttled so the dashboard costs at most a few percent of training
time: text and progress bars at most twice a second, and the plot and photo
(tens of milliseconds to render) only while their total drawing time stays
under :attr:`TrainingDashboard.draw_budget` of the time elapsed.
"""

from __future__ import annotations

import asyncio
import functools
import html
import inspect
import io
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
        for _ in range(limit):
            try:
                frames = self._stream.socket.recv_multipart(zmq.NOBLOCK, copy=False)
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
            if self.mode == "widgets" and self.widget is not None:
                self._stop_button.disabled = True
                self._stop_button.description = "Stopping…"
                self._status.value = self._status_html("Stopping after this batch…", "#b26a00")

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
        self._seen = self._correct = self._epoch_batches = 0
        if self.mode == "widgets":
            self._batch_bar.value = 0
            self._batch_bar.max = max(state.batches, 1)
            self._update_text(state, force=True)

    def on_batch_end(self, state: TrainState) -> None:
        # Cheap bookkeeping every batch: loss and running accuracy for the curves.
        if state.y is not None and state.logits is not None:
            self._seen += len(state.y)
            self._correct += int((state.logits.argmax(1) == state.y).sum().item())
        self._batch_x.append(state.epoch + (state.batch + 1) / max(state.batches, 1))
        self._batch_loss.append(float(state.loss))
        self._batch_acc.append(self._correct / self._seen if self._seen else math.nan)
        self._epoch_batches += 1

        if self._pump is not None:
            self._pump.poll()  # a Stop click waiting in the kernel's queue is handled here
        if self._stop_wanted:
            state.stop_requested = True

        if self.mode == "widgets":
            last = state.batches and state.batch + 1 == state.batches
            self._update_text(state, force=bool(last) or state.stop_requested)
            if last and not state.stop_requested:
                self._status.value = self._status_html("Checking the validation set…", "#555")
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
                self._status.value = self._status_html("Training…", "#555")
            self._update_text(state, force=True)
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
        self._seen = self._correct = self._epoch_batches = 0
        self._last_text = -math.inf
        self._last_draw = -math.inf
        self._live_line = 0
        self._pump: KernelEventPump | None = None
        self.draws, self.draw_seconds = 0, 0.0
        self._draw_cost = 0.05  # seconds per draw, until measured
        self._figure: Any = None

    def _rates(self, state: TrainState) -> tuple[float, float, float]:
        """(batches per second this epoch, seconds left in this epoch, seconds left in the run)."""
        now = time.perf_counter()
        done = state.batch + 1
        rate = done / max(now - self._epoch_started, 1e-9)
        epoch_left = (state.batches - done) / rate if state.batches else math.nan
        finished = [r["seconds"] for r in state.history.epochs[self._first_epoch:]]
        per_epoch = float(np.mean(finished)) if finished else (state.batches / rate if state.batches else math.nan)
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
    @staticmethod
    def _status_html(text: str, color: str) -> str:
        return f"<span style='color:{color}'>{html.escape(text)}</span>"

    def _build_widgets(self, state: TrainState) -> None:
        import ipywidgets as w
        from IPython.display import display

        bar_layout = w.Layout(width="340px")
        label_layout = w.Layout(width="64px")
        self._epoch_bar = w.IntProgress(value=len(state.history.epochs), min=0, max=max(state.epochs, 1),
                                        bar_style="info", layout=bar_layout)
        self._batch_bar = w.IntProgress(value=0, min=0, max=max(state.batches, 1), bar_style="info",
                                        layout=bar_layout)
        self._epoch_text = w.HTML()
        self._batch_text = w.HTML()
        title = html.escape(self.title) if self.title else "Training"
        header = w.HTML(f"<b style='font-size:1.15em'>{title}</b>")
        self._status = w.HTML(self._status_html("Starting…", "#555"))
        self._curves = w.Image(format="png", layout=w.Layout(width="640px", height="240px"))
        self._curves.add_class("tlcourse-curves")
        self._sample = w.Image(format="jpeg", layout=w.Layout(width="176px", height="176px"))
        self._sample.add_class("tlcourse-sample")
        self._caption = w.HTML("<i>first batch coming…</i>", layout=w.Layout(width="176px"))
        self._stop_button = w.Button(description="Stop", icon="stop", button_style="danger",
                                     tooltip="End training after the current batch (keeps the best weights)",
                                     layout=w.Layout(width="110px"))
        self._stop_button.add_class("tlcourse-stop")
        self._stop_button.on_click(lambda _button: self._stop_clicked())
        self._summary = w.HTML(
            "<span style='color:#666'>Stop ends training after the current batch; the model keeps "
            "its best weights and the notebook carries on.</span>"
        )
        self._summary.add_class("tlcourse-summary")

        def row(name: str, bar: Any, text: Any) -> Any:
            box = w.HBox([w.Label(name, layout=label_layout), bar, text],
                         layout=w.Layout(align_items="center"))
            box.add_class(f"tlcourse-{name.lower()}-progress")
            return box

        sample_box = w.VBox([self._sample, self._caption], layout=w.Layout(margin="0 0 0 12px",
                                                                             align_items="center"))
        self.widget = w.VBox(
            [
                w.HBox([header, self._status], layout=w.Layout(justify_content="space-between")),
                row("Epochs", self._epoch_bar, self._epoch_text),
                row("Batches", self._batch_bar, self._batch_text),
                w.HBox([self._curves, sample_box], layout=w.Layout(align_items="center")),
                w.HBox([self._stop_button, self._summary], layout=w.Layout(align_items="center",
                                                                          grid_gap="12px")),
            ],
            layout=w.Layout(border="1px solid #ddd", padding="8px 12px", width="860px", grid_gap="4px"),
        )
        self.widget.add_class("tlcourse-dashboard")
        self._curves.value = _empty_curves(self._first_epoch)
        self._draw_cost = DRAW_COST_ESTIMATE
        self._last_draw = time.perf_counter()  # the first real drawing after draw_interval
        self._update_text(state, force=True)
        display(self.widget)

    def _stop_clicked(self) -> None:
        self.stop_reason = "Stop button"
        self.stop()

    def _update_text(self, state: TrainState, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last_text < self.text_interval:
            return
        self._last_text = now
        done_epochs = len(state.history.epochs)
        self._epoch_bar.value = min(done_epochs, self._epoch_bar.max)
        elapsed = format_duration(now - self._started)
        if not self._epoch_batches:  # a new epoch, no batch yet: no speed to show
            self._epoch_text.value = f"epoch {state.epoch + 1}/{state.epochs} &middot; {elapsed} elapsed"
            self._batch_text.value = f"0/{state.batches} &middot; starting…" if state.batches else "starting…"
            return
        rate, epoch_left, run_left = self._rates(state)
        self._batch_bar.value = min(state.batch + 1, self._batch_bar.max)
        self._epoch_text.value = (f"epoch {min(state.epoch + 1, state.epochs)}/{state.epochs} &middot; "
                                  f"{elapsed} elapsed &middot; ~{format_duration(run_left)} left")
        running = f" &middot; acc {self._batch_acc[-1]:.0%}" if self._batch_acc and self._seen else ""
        self._batch_text.value = (f"{state.batch + 1}/{state.batches} &middot; {rate:.2f} batch/s &middot; "
                                  f"~{format_duration(epoch_left)} left &middot; loss {state.loss:.3f}{running}")
        if state.stop_requested:
            self._status.value = self._status_html("Stopping after this batch…", "#b26a00")

    def _maybe_draw(self, state: TrainState) -> None:
        # Three rules keep drawing within draw_budget of the training time:
        # * after a draw that took c seconds, wait c / draw_budget (and at least draw_interval);
        # * the total drawing time, with the next draw, stays within the budget of the time
        #   elapsed (so a short run is not charged a draw it cannot pay for);
        # * no drawing in the last seconds of a run: the final drawing comes right after.
        # c is a running mean of the draws so far, first estimated from the empty plot.
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
        self._curves.value = self._render_curves()
        sample = self._render_sample(state)
        if sample is not None:
            self._sample.value, self._caption.value = sample
            # No photo (cached features without dataset=): hide the empty <img> rather than
            # show a broken-image icon.
            self._sample.layout.display = None if sample[0] else "none"
        self._last_draw = time.perf_counter()
        took = self._last_draw - started
        self._draw_cost = took if not self.draws else 0.7 * self._draw_cost + 0.3 * took
        self.draws += 1
        self.draw_seconds += took

    def _render_curves(self) -> bytes:
        if self._figure is None:
            self._figure = CurvesFigure()
        return self._figure.render(self.curve_data(), self._first_epoch)

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
        caption = (f"<div style='text-align:center;line-height:1.3'>true: <b>{html.escape(true_label)}</b><br>"
                   f"predicted: <b style='color:{color}'>{html.escape(self._name(pred))}</b> "
                   f"({float(probs[pred]):.0%})</div>")
        if image is None:
            caption += ("<div style='color:#888;font-size:0.85em;line-height:1.3;margin-top:4px'>"
                        "No photo: training on cached features. Pass <code>dataset=</code> to see it.</div>")
            return b"", caption
        return _encode(_to_uint8_image(image, self.settings)), caption

    def _name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

    def _finish_widgets(self, state: TrainState) -> None:
        history = state.history
        self._update_text(state, force=True)
        self._draw(state)
        if history.interrupted:
            style, status, color = "warning", "Interrupted", "#b26a00"
        elif history.stopped_early:
            style, status, color = "warning", "Stopped", "#b26a00"
        else:
            style, status, color = "success", "Done", "#2ca02c"
        self._epoch_bar.bar_style = self._batch_bar.bar_style = style
        self._status.value = self._status_html(status, color)
        ran = len(history.epochs) - self._first_epoch
        self._epoch_text.value = (f"{ran} of {state.epochs - self._first_epoch} epoch(s) &middot; "
                                  f"{format_duration(time.perf_counter() - self._started)}")
        if history.stopped_early or history.interrupted:  # no time left to count down
            self._batch_text.value = (f"stopped after batch {state.batch + 1}/{state.batches} &middot; "
                                      f"loss {state.loss:.3f}")
        # The button has done its job: the row now holds the summary.
        self._stop_button.disabled = True
        self._stop_button.description = "Stopped" if history.stopped_early else "Stop"
        self._stop_button.layout.display = "none"
        self._summary.value = f"<b>{html.escape(self.summary)}</b>"


class CurvesFigure:
    """The dashboard's loss and accuracy plots as a PNG, redrawn from new data.

    One matplotlib figure per run, updated in place: no pyplot (so nothing is
    displayed behind the dashboard's back) and no layout engine (fixed margins
    cost nothing, a layout engine a good share of each redraw).
    """

    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import PercentFormatter

        fig = Figure(figsize=(8.0, 3.0), dpi=80)
        FigureCanvasAgg(fig)
        fig.subplots_adjust(left=0.08, right=0.98, top=0.88, bottom=0.16, wspace=0.22)
        loss_ax, acc_ax = fig.subplots(1, 2)
        light, train, val = "#9ecae1", "#1f77b4", "#ff7f0e"
        self.lines = {
            "batch_loss": loss_ax.plot([], [], color=light, lw=1, label="train (batches)")[0],
            "train_loss": loss_ax.plot([], [], "o-", color=train, lw=2, ms=4, label="train")[0],
            "val_loss": loss_ax.plot([], [], "s-", color=val, lw=2, ms=4, label="validation")[0],
            "batch_acc": acc_ax.plot([], [], color=light, lw=1)[0],
            "train_acc": acc_ax.plot([], [], "o-", color=train, lw=2, ms=4)[0],
            "val_acc": acc_ax.plot([], [], "s-", color=val, lw=2, ms=4)[0],
        }
        for ax, name in ((loss_ax, "loss"), (acc_ax, "accuracy")):
            ax.set_title(name, fontsize=11)
            ax.set_xlabel("epoch", fontsize=9)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
        # One legend for both plots (same colours), fixed in place: "best" placement and a
        # second legend would each cost a good share of the drawing time.
        loss_ax.legend(fontsize=8, loc="upper right", frameon=False)
        acc_ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        self.figure, self.loss_ax, self.acc_ax = fig, loss_ax, acc_ax

    def render(self, data: dict[str, list[float]], first_epoch: int = 0) -> bytes:
        """PNG bytes of the plots for :meth:`TrainingDashboard.curve_data`-style ``data``."""
        for key, line in self.lines.items():
            line.set_data(data["batch_x"] if key.startswith("batch") else data["epoch_x"], data[key])
        last_x = max(data["batch_x"][-1] if data["batch_x"] else 0.0,
                     data["epoch_x"][-1] if data["epoch_x"] else 0.0)
        start = float(first_epoch)
        for ax in (self.loss_ax, self.acc_ax):
            ax.set_xlim(start, max(math.ceil(last_x), start + 1))
        accuracies = [v for v in data["batch_acc"] + data["train_acc"] + data["val_acc"] if math.isfinite(v)]
        low = min(accuracies) if accuracies else 0.5
        self.acc_ax.set_ylim(max(0.0, min(low, 0.9) - 0.05), 1.01)
        losses = [v for v in data["batch_loss"] + data["train_loss"] + data["val_loss"] if math.isfinite(v)]
        self.loss_ax.set_ylim(0.0, max(losses) * 1.08 + 1e-6 if losses else 1.0)
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png")
        return buffer.getvalue()


#: Seconds one drawing of the plots takes on this machine: measured by the first empty plot,
#: it is the drawing budget's starting estimate (a busy laptop draws several times slower).
DRAW_COST_ESTIMATE = 0.05


@functools.lru_cache(maxsize=8)
def _empty_curves(first_epoch: int) -> bytes:
    """The plots before any data, drawn once per session: the panel is complete from the start
    and a run pays for its first real drawing only once it has something to show."""
    global DRAW_COST_ESTIMATE
    empty: dict[str, list[float]] = {key: [] for key in (
        "batch_x", "batch_loss", "batch_acc", "epoch_x", "train_loss", "train_acc", "val_loss", "val_acc")}
    started = time.perf_counter()
    png = CurvesFigure().render(empty, first_epoch)
    DRAW_COST_ESTIMATE = max(0.01, time.perf_counter() - started)
    return png
