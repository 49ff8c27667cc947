"""Interrupted training (the kernel's Interrupt button), resuming from a checkpoint, non-finite losses.

The Interrupt button raises KeyboardInterrupt wherever Python happens to be; here a
callback raises it in ``on_batch_end`` at a chosen batch. Models use ``weights=None`` and
32x32 inputs so every test takes seconds.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tlcourse.checkpoint import load_checkpoint, save_checkpoint
from tlcourse.models import build_model
from tlcourse.training import Callback, NonFiniteLossError, fit, seed_everything

CLASSES = ["dog", "hotdog"]
N, BATCH = 48, 8  # 6 batches an epoch


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tensors(seed: int = 0, n: int = N):
    """Learnable toy data: the class is whether the red channel is brighter than the blue one."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = (x[:, 0].mean((1, 2)) > x[:, 2].mean((1, 2))).long()
    return x, y


def loaders():
    train = DataLoader(TensorDataset(*tensors(0)), batch_size=BATCH)  # no shuffle: runs can be compared
    val = DataLoader(TensorDataset(*tensors(1, 24)), batch_size=BATCH)
    return train, val


def frozen_model(seed: int = 0):
    seed_everything(seed)
    return build_model(2, "mobilenet_v2", weights=None, dropout=0.0).freeze()


def head_optimizer(model, lr=3e-2):
    return torch.optim.AdamW(model.head.parameters(), lr=lr)


class Recorder(Callback):
    """Keeps a copy of the weights at the end of every epoch; raises KeyboardInterrupt at (epoch, batch)."""

    def __init__(self, model, interrupt_at=None):
        self.model, self.interrupt_at = model, interrupt_at
        self.at_epoch_end, self.at_interrupt = {}, None

    def on_epoch_end(self, state):
        self.at_epoch_end[state.epoch] = copy.deepcopy(self.model.state_dict())

    def on_batch_end(self, state):
        if (state.epoch, state.batch) == self.interrupt_at:
            self.at_interrupt = copy.deepcopy(self.model.state_dict())
            raise KeyboardInterrupt


def same_weights(model, state_dict) -> bool:
    return all(torch.equal(t, state_dict[k]) for k, t in model.state_dict().items())


def finite(model) -> bool:
    return all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())


# --------------------------------------------------------------------------- interrupting
def test_interrupt_mid_epoch_keeps_the_best_weights_and_a_complete_history(capsys):
    model = frozen_model()
    train, val = loaders()
    recorder = Recorder(model, interrupt_at=(3, 2))  # 4th epoch, 3rd batch
    history = fit(model, train, head_optimizer(model), epochs=6, val_loader=val, callbacks=[recorder])
    assert history.interrupted and not history.stopped_early
    # Epochs: complete up to the last finished one. Batches: up to the last finished step.
    assert [r["epoch"] for r in history.epochs] == [0, 1, 2]
    assert len(history.batches) == 3 * (N // BATCH) + 3
    assert history.batches[-1]["epoch"] == 3 and history.batches[-1]["batch"] == 2
    # The weights are the best epoch's (by validation accuracy), not the half-trained ones.
    accs = [r["val_acc"] for r in history.epochs]
    assert history.best_epoch == accs.index(max(accs))
    assert same_weights(model, recorder.at_epoch_end[history.best_epoch])
    assert not same_weights(model, recorder.at_interrupt)
    assert finite(model)
    assert "interrupted in epoch 4, batch 3" in capsys.readouterr().out


def test_interrupt_in_the_first_epoch_keeps_the_last_finished_step():
    model = frozen_model()
    train, val = loaders()
    recorder = Recorder(model, interrupt_at=(0, 3))
    history = fit(model, train, head_optimizer(model), epochs=3, val_loader=val, callbacks=[recorder])
    assert history.interrupted and history.epochs == [] and history.best_epoch is None
    assert len(history.batches) == 4
    assert same_weights(model, recorder.at_interrupt)  # nothing better to go back to
    assert finite(model)


def test_interrupt_can_propagate_and_still_restores_the_best_weights():
    model = frozen_model()
    train, val = loaders()
    recorder = Recorder(model, interrupt_at=(1, 0))
    with pytest.raises(KeyboardInterrupt):
        fit(model, train, head_optimizer(model), epochs=3, val_loader=val, callbacks=[recorder],
            catch_interrupt=False)
    assert same_weights(model, recorder.at_epoch_end[0])


def test_interrupt_save_resume_continues_the_epoch_numbering(tmp_path):
    """The learner's day: interrupt, save, restart the kernel, load, train on."""
    model = frozen_model()
    train, val = loaders()
    optimizer = head_optimizer(model)
    history = fit(model, train, optimizer, epochs=5, val_loader=val, callbacks=[Recorder(model, (2, 1))])
    assert history.interrupted and len(history.epochs) == 2
    path = save_checkpoint(tmp_path / "outputs" / "model.pt", model, CLASSES, history, optimizer=optimizer)
    best_before = history.best()
    del model, optimizer, history  # "restart the kernel"

    model, info = load_checkpoint(path)
    model.freeze()
    optimizer = head_optimizer(model)
    optimizer.load_state_dict(info["optimizer"])
    recorder = Recorder(model)
    resumed = fit(model, train, optimizer, epochs=2, val_loader=val, history=info["history"], callbacks=[recorder])
    assert [r["epoch"] for r in resumed.epochs] == [0, 1, 2, 3]
    assert not resumed.interrupted
    # Here the two new epochs do not beat the saved best epoch (worked out by hand from the records) ...
    assert best_by_hand(resumed.epochs) == best_before["epoch"] == resumed.best_epoch == 0
    # ... so the weights at the end are exactly the checkpoint's (read with torch.load, not load_checkpoint),
    # although training did change them in between.
    saved = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert same_weights(model, saved)
    assert not same_weights(model, recorder.at_epoch_end[3])
    assert os.listdir(tmp_path / "outputs") == ["model.pt"]  # no temp files left behind


def best_by_hand(records) -> int:
    """The best epoch as fit's docstring defines it: highest validation accuracy, then lowest validation loss."""
    return max(records, key=lambda r: (r["val_acc"], -r["val_loss"]))["epoch"]


def linear_model():
    """A plain linear classifier on the pixels: its validation score moves from epoch to epoch (a random
    frozen backbone's hardly does), so a resumed run can be made to beat the old best or not."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 2))


@pytest.mark.parametrize("first_lr, resumed_lr, beaten", [
    (1e-4, 1e-2, True),  # a new epoch (the first resumed one) beats the old best; later ones are worse again
    (1e-2, 1.0, False),  # too high a learning rate: the new epochs are worse (one ties on accuracy, higher loss)
])
def test_resuming_keeps_the_old_best_weights_unless_beaten(first_lr, resumed_lr, beaten):
    train, val = loaders()
    model = linear_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=first_lr)
    history = fit(model, train, optimizer, epochs=1, val_loader=val)
    start = copy.deepcopy(model.state_dict())  # what a checkpoint saved now would hold: epoch 0's weights
    for group in optimizer.param_groups:
        group["lr"] = resumed_lr
    recorder = Recorder(model)
    resumed = fit(model, train, optimizer, epochs=3, val_loader=val, history=history, callbacks=[recorder])

    best = best_by_hand(resumed.epochs)
    assert resumed.best_epoch == best and (best > 0) == beaten  # this case really is the one it is named after
    # Every resumed epoch changed the weights, so "which weights are kept" is a real question ...
    assert all(any(not torch.equal(t, start[k]) for k, t in recorder.at_epoch_end[e].items()) for e in (1, 2, 3))
    # ... and the answer is the best epoch's: the new one that beat the old best, else the starting weights.
    expected = recorder.at_epoch_end[best] if beaten else start
    assert same_weights(model, expected)


def test_resuming_from_a_checkpoint_gives_the_same_weights_as_one_run(tmp_path):
    """Two epochs, save, load, one more epoch == three epochs in one go (Adam state included)."""
    train, val = loaders()
    straight = frozen_model()
    one_run = fit(straight, train, head_optimizer(straight), epochs=3, val_loader=val, keep_best=False)

    first = frozen_model()
    optimizer = head_optimizer(first)
    part = fit(first, train, optimizer, epochs=2, val_loader=val, keep_best=False)
    path = save_checkpoint(tmp_path / "model.pt", first, CLASSES, part, optimizer=optimizer)
    second, info = load_checkpoint(path)
    second.freeze()
    optimizer = head_optimizer(second)
    optimizer.load_state_dict(info["optimizer"])
    resumed = fit(second, train, optimizer, epochs=1, val_loader=val, history=info["history"], keep_best=False)

    assert same_weights(second, straight.state_dict())
    drop_time = [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.epochs]
    assert drop_time == [{k: v for k, v in r.items() if k != "seconds"} for r in one_run.epochs]
    assert [b["loss"] for b in resumed.batches] == [b["loss"] for b in one_run.batches]


# --------------------------------------------------------------------------- non-finite losses
def test_huge_learning_rate_stops_with_a_message_naming_it():
    seed_everything(0)
    model = build_model(2, "mobilenet_v2", weights=None)  # whole network learning: blows up quickly
    train, _ = loaders()
    optimizer = torch.optim.SGD(model.parameters(), lr=1000.0)
    with pytest.raises(NonFiniteLossError, match=r"learning rate that is too high \(now: 1000\)") as caught:
        fit(model, train, optimizer, epochs=2)
    message = str(caught.value)
    assert "epoch 1, batch" in message and "10x smaller" in message
    assert "no longer usable" in message  # no best epoch to go back to: says so
    history = caught.value.history
    assert history is not None and len(history.batches) >= 1
    assert all(torch.isfinite(torch.tensor(b["loss"])) for b in history.batches)  # no NaN recorded


def test_nan_in_the_inputs_is_named_as_the_cause():
    model = frozen_model()
    x, y = tensors(0)
    x[20, 1, 5, 5] = float("nan")  # one pixel of one photo in the third batch
    with pytest.raises(NonFiniteLossError, match="input batch itself contains NaN") as caught:
        fit(model, DataLoader(TensorDataset(x, y), batch_size=BATCH), head_optimizer(model), epochs=1)
    assert "epoch 1, batch 3" in str(caught.value)
    assert len(caught.value.history.batches) == 2
    assert finite(model)
    assert "learning rate" not in str(caught.value)


def test_blow_up_after_a_good_epoch_puts_the_best_weights_back():
    seed_everything(0)
    model = build_model(2, "mobilenet_v2", weights=None)
    train, val = loaders()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    recorder = Recorder(model)
    history = fit(model, train, optimizer, epochs=1, val_loader=val, callbacks=[recorder])
    for group in optimizer.param_groups:
        group["lr"] = 1000.0  # a learner raises the learning rate and continues
    with pytest.raises(NonFiniteLossError, match="best weights so far were put back"):
        fit(model, train, optimizer, epochs=2, val_loader=val, history=history)
    assert same_weights(model, recorder.at_epoch_end[0])
    assert finite(model)
