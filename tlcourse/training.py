"""Training: a loop with correct loss handling, an evaluation pass, callbacks, device and seed helpers.

The loss is ``F.cross_entropy`` of the logits (log-softmax inside, numerically stable); the epoch loss
is the sum of per-example losses over the number of examples, so a short last batch counts as it should."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .errors import DataError, DeviceError, NonFiniteLossError
from .evaluation import collect_logits
from .models import model_device


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and PyTorch so a run can be repeated: on a CPU with the same software and
    thread count, bit for bit. On a GPU cuDNN may add numbers in a varying order; ``deterministic=True``
    asks PyTorch for deterministic algorithms (slower; fine-tuning's adaptive pooling has none on CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS generators
    if deterministic:
        # Older CUDA/PyTorch versions need a fixed cuBLAS workspace for deterministic matrix
        # products; it is read when CUDA starts, so it only helps before the first CUDA call.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        # warn_only: an operation without a deterministic version warns instead of failing a lesson.
        torch.use_deterministic_algorithms(True, warn_only=True)


def choose_device(preference: str = "auto") -> torch.device:
    """Pick CUDA if available, else Apple's MPS, else the CPU (or the one asked for: raises at once,
    with the fix, if this machine lacks it)."""
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if preference == "auto":
        return torch.device(next((kind for kind, ok in available.items() if ok), "cpu"))
    device = torch.device(preference)
    if not available.get(device.type, True):
        raise DeviceError(f"{device.type.upper()} was asked for (TLCOURSE_DEVICE={preference}) but is not available "
                          "on this machine. Set TLCOURSE_DEVICE=auto (or cpu) to use what is there.")
    return device


@dataclass
class History:
    """What a training run measured: one record per finished epoch and one per batch."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    batches: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    interrupted: bool = False
    seconds: float = 0.0

    def to_frame(self) -> pd.DataFrame:
        """Per-epoch records as a table (epoch, train_loss, train_acc, val_loss, val_acc, seconds)."""
        return pd.DataFrame(self.epochs)

    def best(self) -> dict[str, float] | None:
        """The record of the best epoch (highest validation accuracy, then lowest validation loss), if any."""
        if self.best_epoch is None:
            return None
        return next(r for r in self.epochs if r["epoch"] == self.best_epoch)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "History":
        return cls(**data)


@dataclass
class TrainState:
    """What callbacks see: where training is, the last batch, and the history so far."""

    epochs: int
    batches: int
    history: History
    epoch: int = 0
    batch: int = 0
    step: int = 0
    loss: float = math.nan
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    index: torch.Tensor | None = None  # dataset rows of the batch, when the loader yields (x, y, index)
    seen: int = 0  # examples trained on so far in this epoch...
    correct: int = 0  # ...and how many of them the model got right (before its step): running accuracy
    stop_requested: bool = False
    started: float = field(default_factory=time.perf_counter)


class Callback:
    """Override any of these to follow training. Set ``state.stop_requested = True`` to stop
    after the current batch."""

    def on_train_begin(self, state: TrainState) -> None: ...
    def on_epoch_begin(self, state: TrainState) -> None: ...
    def on_batch_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_train_end(self, state: TrainState) -> None: ...


def evaluate(model: nn.Module, loader: Iterable, device: torch.device | None = None) -> dict[str, float]:
    """Mean cross-entropy loss and accuracy over a whole loader, in eval mode without gradients
    (:func:`~tlcourse.evaluation.collect_logits`). Taught in lesson 3."""
    logits, labels = collect_logits(model, loader, device)
    if len(labels) == 0:
        raise DataError("evaluate() got an empty loader: the part of the data it was given has no photos")
    loss = F.cross_entropy(logits, labels, reduction="sum").item()
    return {"loss": loss / len(labels), "accuracy": (logits.argmax(1) == labels).sum().item() / len(labels),
            "n": len(labels)}


def fit(model: nn.Module, train_loader: Sequence | Iterable, optimizer: torch.optim.Optimizer, epochs: int,
        val_loader: Iterable | None = None, callbacks: Iterable[Callback] = (), device: torch.device | None = None,
        keep_best: bool = True, history: History | None = None, catch_interrupt: bool = True,
        scheduler: Any | None = None) -> History:
    """Train ``model`` for ``epochs`` epochs and return its :class:`History`. Taught in lesson 3.

    Loaders yield ``(x, y)`` or ``(x, y, index)``; ``index`` reaches callbacks as ``state.index``. After each
    epoch the model is evaluated on ``val_loader``; with ``keep_best`` the best epoch's weights (validation
    accuracy, then lower loss) are put back at the end, also after a stop or an interrupt. A callback's stop
    request ends training after the current batch; the kernel's Interrupt (KeyboardInterrupt, caught when
    ``catch_interrupt``) drops the batch under way; either way the history holds the finished epochs. An
    earlier ``history`` continues its epoch numbering (resuming; its best epoch must be beaten). A NaN or
    infinite loss raises :class:`NonFiniteLossError` naming the likely cause. A ``scheduler`` (any
    ``torch.optim.lr_scheduler``) is stepped once per batch, after the optimizer; each batch record holds
    the rates it trained with (``lr``, the first group's, and ``lr_<name>`` per named group)."""
    device = device or model_device(model)
    history = history if history is not None else History()
    history.interrupted = history.stopped_early = False  # these describe the latest run
    first_epoch = len(history.epochs)
    try:
        batches = len(train_loader)  # type: ignore[arg-type]
    except TypeError:
        batches = 0
    state = TrainState(epochs=first_epoch + epochs, batches=batches, history=history)
    callbacks = list(callbacks)

    def notify(event: str, state: TrainState) -> None:
        for callback in callbacks:
            getattr(callback, event)(state)

    best_state, best_score = None, (-math.inf, -math.inf)
    if history.best_epoch is not None:  # resuming: new epochs must beat the best one so far
        best_score = _score(history.best())
        if keep_best:
            best_state = copy.deepcopy(model.state_dict())
    started = time.perf_counter()
    notify("on_train_begin", state)
    try:
        for epoch in range(first_epoch, first_epoch + epochs):
            state.epoch, epoch_start = epoch, time.perf_counter()
            state.seen = state.correct = 0
            notify("on_epoch_begin", state)
            model.train()
            loss_sum = 0.0
            for state.batch, batch in enumerate(train_loader):
                x, y = batch[0].to(device), batch[1].to(device)
                state.index = batch[2] if len(batch) > 2 else None
                rates = _rates(optimizer)  # the rates this step uses, before a scheduler moves them

                def check(loss: torch.Tensor) -> None:
                    if not torch.isfinite(loss):
                        error = NonFiniteLossError(
                            _non_finite_message(loss.item(), state, optimizer, x, model, best_state, history))
                        error.history = history
                        raise error

                loss, logits = train_step(model, optimizer, x, y, check=check)
                if scheduler is not None:
                    scheduler.step()  # once per batch: one-cycle and warm-up schedules count batches
                batch_loss = loss.item()
                loss_sum += batch_loss * len(y)
                state.correct += (logits.detach().argmax(1) == y).sum().item()
                state.seen += len(y)
                state.step += 1
                state.loss, state.x, state.y, state.logits = batch_loss, x, y, logits.detach()
                history.batches.append({"epoch": epoch, "batch": state.batch, "loss": batch_loss, **rates})
                notify("on_batch_end", state)
                if state.stop_requested:
                    break
            if state.stop_requested:
                history.stopped_early = True
                break
            record = {"epoch": epoch, "train_loss": loss_sum / state.seen, "train_acc": state.correct / state.seen}
            if val_loader is not None:
                val = evaluate(model, val_loader, device)
                record.update(val_loss=val["loss"], val_acc=val["accuracy"])
            record["seconds"] = time.perf_counter() - epoch_start
            history.epochs.append(record)
            if _score(record) > best_score:
                if keep_best:  # copy first: an interrupt here must not leave best_epoch ahead of best_state
                    best_state = copy.deepcopy(model.state_dict())
                best_score, history.best_epoch = _score(record), epoch
            notify("on_epoch_end", state)
            if state.stop_requested:
                history.stopped_early = True
                break
    except KeyboardInterrupt:
        if not catch_interrupt:
            raise
        history.interrupted = True
        print(f"Training interrupted in epoch {state.epoch + 1}, batch {state.batch + 1}; "
              f"{len(history.epochs)} epoch(s) finished"
              + (f", keeping the best weights (epoch {history.best_epoch + 1})." if best_state is not None else "."))
    finally:
        if keep_best and best_state is not None:
            model.load_state_dict(best_state)
        history.seconds += time.perf_counter() - started
    notify("on_train_end", state)
    return history


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               loss_fn=F.cross_entropy, check: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch: ``(loss, logits)``. ``check(loss)`` runs before the step (``fit``
    raises there on a NaN loss). The step of :func:`fit` and of the learning-rate range test."""
    logits = model(x)
    loss = loss_fn(logits, y)  # the mean over the batch, for the gradient
    if check is not None:
        check(loss)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, logits


def _rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The learning rates of an optimizer's parameter groups: ``lr`` (first group) and ``lr_<name>``."""
    rates = {"lr": float(optimizer.param_groups[0]["lr"])}
    for group in optimizer.param_groups:
        if "name" in group:
            rates[f"lr_{group['name']}"] = float(group["lr"])
    return rates


def _score(record: dict[str, float]) -> tuple[float, float]:
    """How good an epoch is: validation accuracy, then (on a tie, common with a small validation set)
    lower validation loss."""
    if "val_acc" in record:
        return record["val_acc"], -record["val_loss"]
    return record["train_acc"], -record["train_loss"]


def _non_finite_message(value: float, state: TrainState, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                        model: nn.Module, best_state: dict | None, history: History) -> str:
    """Name the likely cause of a NaN/inf loss, and say what state the model is left in."""
    lrs = ", ".join(f"{g['lr']:g}" for g in optimizer.param_groups)
    where = f"The training loss became {value} in epoch {state.epoch + 1}, batch {state.batch + 1}."
    if not torch.isfinite(x).all():
        cause = ("The input batch itself contains NaN or infinite values: check the data and the "
                 "transforms (e.g. a division by a zero std in Normalize).")
    elif state.step == 0:
        cause = ("It happened before this run updated any weight, so the learning rate is not the cause: "
                 "check the model's starting weights, the inputs and the loss.")
    else:
        cause = (f"The most likely cause is a learning rate that is too high (now: {lrs}): try one 10x "
                 "smaller. Other causes: inputs with extreme values, or a custom loss that takes log(0).")
    if best_state is not None:
        after = "Training stopped; the best weights so far were put back."
    elif all(torch.isfinite(p).all() for p in model.parameters()):
        after = "Training stopped before the weights became NaN."
    else:
        after = "Training stopped; the weights are no longer usable: rebuild the model (or load a checkpoint)."
    return f"{where} {cause} {after}"
