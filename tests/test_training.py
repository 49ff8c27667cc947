"""Training: the epoch loss against a full-dataset pass, evaluate(), history, callbacks, stopping, seeds,
device choice, and (x, y, index) batches.

Tiny models on random tensors: the loop is the same code that trains the real backbones.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tlcourse.data import make_loader
from tlcourse.training import (
    Callback,
    History,
    TrainState,
    choose_device,
    evaluate,
    fit,
    seed_everything,
)

N, FEATURES, CLASSES, BATCH = 10, 5, 3, 4  # 10 = 4 + 4 + 2: the last batch is short


def tiny_data(n: int = N, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, FEATURES, generator=g)
    y = torch.tensor([0] * (n - 2) + [1, 2])  # unbalanced, so batch means differ from the overall mean
    return TensorDataset(x, y)


def tiny_model(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(FEATURES, CLASSES))


def full_pass(model: nn.Module, dataset: TensorDataset) -> tuple[float, float]:
    """The reference: loss and accuracy over the whole dataset in one batch."""
    x, y = dataset.tensors
    with torch.no_grad():
        logits = model(x)
    return (F.cross_entropy(logits, y, reduction="sum") / len(y)).item(), (logits.argmax(1) == y).float().mean().item()


class Recorder(Callback):
    """Records every event with where training was at that moment."""

    def __init__(self, stop_at_step: int | None = None, stop_at_epoch_end: int | None = None):
        self.events: list[tuple] = []
        self.indices: list[torch.Tensor] = []
        self.ys: list[torch.Tensor] = []
        self.stop_at_step, self.stop_at_epoch_end = stop_at_step, stop_at_epoch_end

    def on_train_begin(self, state: TrainState) -> None:
        self.events.append(("train_begin",))

    def on_epoch_begin(self, state: TrainState) -> None:
        self.events.append(("epoch_begin", state.epoch))

    def on_batch_end(self, state: TrainState) -> None:
        self.events.append(("batch_end", state.epoch, state.batch, state.step))
        assert state.logits.shape == (len(state.y), CLASSES) and not state.logits.requires_grad
        assert state.x.shape[0] == len(state.y) and np.isfinite(state.loss)
        self.ys.append(state.y.clone())
        if state.index is not None:
            self.indices.append(state.index.clone())
        if state.step == self.stop_at_step:
            state.stop_requested = True

    def on_epoch_end(self, state: TrainState) -> None:
        self.events.append(("epoch_end", state.epoch, len(state.history.epochs)))
        if state.epoch == self.stop_at_epoch_end:
            state.stop_requested = True

    def on_train_end(self, state: TrainState) -> None:
        self.events.append(("train_end",))


# --------------------------------------------------------------------------- the epoch loss
def test_epoch_loss_is_the_true_per_example_mean_with_a_short_last_batch():
    data, model = tiny_data(), tiny_model()
    loader = DataLoader(data, batch_size=BATCH)
    assert [len(y) for _, y in loader] == [4, 4, 2]
    expected_loss, expected_acc = full_pass(model, data)
    # The wrong answer (mean of batch means) must differ, or this test could not catch it.
    with torch.no_grad():
        batch_means = [F.cross_entropy(model(x), y).item() for x, y in loader]
    assert abs(np.mean(batch_means) - expected_loss) > 1e-3

    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr=0: the weights stay the same all epoch
    history = fit(model, loader, optimizer, epochs=2, val_loader=loader)
    for record in history.epochs:
        assert record["train_loss"] == pytest.approx(expected_loss, rel=1e-6)
        assert record["train_acc"] == pytest.approx(expected_acc)
        assert record["val_loss"] == pytest.approx(expected_loss, rel=1e-6)
        assert record["val_acc"] == pytest.approx(expected_acc)
    # The per-batch losses are the batch means.
    assert [b["loss"] for b in history.batches[:3]] == pytest.approx(batch_means, rel=1e-6)


def test_training_lowers_the_loss():
    data, model = tiny_data(40), tiny_model()
    before, _ = full_pass(model, data)
    fit(model, DataLoader(data, batch_size=8), torch.optim.SGD(model.parameters(), lr=0.5), epochs=5,
        keep_best=False)
    after, _ = full_pass(model, data)
    assert after < before


# --------------------------------------------------------------------------- evaluate
class ModeProbe(nn.Module):
    """A model that remembers the mode and grad setting it was called in."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(FEATURES, CLASSES)
        self.dropout = nn.Dropout(0.9)
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return self.linear(self.dropout(x))


@pytest.mark.parametrize("start_in_train_mode", [True, False])
def test_evaluate_uses_eval_mode_without_gradients_and_restores_the_mode(start_in_train_mode):
    torch.manual_seed(0)
    data, model = tiny_data(), ModeProbe()
    model.train(start_in_train_mode)
    loader = DataLoader(data, batch_size=BATCH)
    first = evaluate(model, loader)
    second = evaluate(model, loader)
    assert model.training is start_in_train_mode
    assert model.calls and all(call == (False, False) for call in model.calls)  # eval mode, no grad
    assert first == second  # dropout (p=0.9) off: deterministic
    model.eval()
    loss, acc = full_pass(model, data)
    assert first["loss"] == pytest.approx(loss, rel=1e-6)
    assert first["accuracy"] == pytest.approx(acc)
    assert first["n"] == N


def test_evaluate_rejects_an_empty_loader():
    with pytest.raises(ValueError, match="empty"):
        evaluate(tiny_model(), [])


# --------------------------------------------------------------------------- history and callbacks
def test_history_records_every_epoch_and_batch():
    data, model = tiny_data(), tiny_model()
    loader = DataLoader(data, batch_size=BATCH)
    history = fit(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), epochs=3, val_loader=loader)
    assert [r["epoch"] for r in history.epochs] == [0, 1, 2]
    for record in history.epochs:
        assert set(record) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"}
        assert record["seconds"] >= 0
    assert [(b["epoch"], b["batch"]) for b in history.batches] == [(e, b) for e in range(3) for b in range(3)]
    assert not history.stopped_early and not history.interrupted
    assert history.best_epoch in (0, 1, 2)
    assert history.best()["val_acc"] == max(r["val_acc"] for r in history.epochs)
    frame = history.to_frame()
    assert list(frame["epoch"]) == [0, 1, 2] and "val_loss" in frame
    assert History.from_dict(history.to_dict()) == history


def test_keep_best_puts_back_the_best_weights():
    data = tiny_data(40)
    val = DataLoader(tiny_data(40, seed=1), batch_size=8)
    model = tiny_model()
    snapshots = []

    class Snap(Callback):
        def on_epoch_end(self, state):
            snapshots.append({k: v.clone() for k, v in model.state_dict().items()})

    history = fit(model, DataLoader(data, batch_size=8), torch.optim.SGD(model.parameters(), lr=1.0), epochs=4,
                  val_loader=val, callbacks=[Snap()])
    best = snapshots[history.best_epoch]
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())


def test_best_epoch_breaks_accuracy_ties_by_validation_loss():
    # A tiny, separable validation set: every epoch scores 100%, but the loss keeps falling,
    # so the last epoch is the best one (the first would be kept if ties went to the earliest).
    data = tiny_data(40)
    model = tiny_model()
    history = fit(model, DataLoader(data, batch_size=8), torch.optim.SGD(model.parameters(), lr=0.5),
                  epochs=4, val_loader=DataLoader(data, batch_size=8))
    accs = [r["val_acc"] for r in history.epochs]
    losses = [r["val_loss"] for r in history.epochs]
    assert max(accs) == accs[-1] and accs.count(max(accs)) > 1, accs  # a tie really happens
    best = max(range(4), key=lambda e: (accs[e], -losses[e]))
    assert history.best_epoch == best != accs.index(max(accs))


def test_callbacks_are_called_in_order_with_correct_counts():
    data, model = tiny_data(), tiny_model()
    recorder = Recorder()
    fit(model, DataLoader(data, batch_size=BATCH), torch.optim.SGD(model.parameters(), lr=0.1), epochs=2,
        callbacks=[recorder])
    expected = [("train_begin",)]
    step = 0
    for epoch in range(2):
        expected.append(("epoch_begin", epoch))
        for batch in range(3):
            step += 1
            expected.append(("batch_end", epoch, batch, step))
        expected.append(("epoch_end", epoch, epoch + 1))  # the epoch's record is in the history already
    expected.append(("train_end",))
    assert recorder.events == expected


def test_several_callbacks_all_hear_every_event():
    data, model = tiny_data(), tiny_model()
    a, b = Recorder(), Recorder()
    fit(model, DataLoader(data, batch_size=BATCH), torch.optim.SGD(model.parameters(), lr=0.1), 1, callbacks=[a, b])
    assert a.events == b.events and len(a.events) == 1 + 1 + 3 + 1 + 1


def test_state_knows_the_run_length():
    data, model = tiny_data(), tiny_model()
    seen = []

    class Look(Callback):
        def on_batch_end(self, state):
            seen.append((state.epochs, state.batches))

    fit(model, DataLoader(data, batch_size=BATCH), torch.optim.SGD(model.parameters(), lr=0.1), 2, callbacks=[Look()])
    assert set(seen) == {(2, 3)}


def test_stop_request_ends_after_the_current_batch_with_history_intact():
    data, model = tiny_data(), tiny_model()
    loader = DataLoader(data, batch_size=BATCH)
    recorder = Recorder(stop_at_step=5)  # epoch 1 (the second), batch 1 (the second)
    history = fit(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), epochs=4, val_loader=loader,
                  callbacks=[recorder])
    batch_events = [e for e in recorder.events if e[0] == "batch_end"]
    assert batch_events[-1] == ("batch_end", 1, 1, 5)  # nothing ran after the stop
    assert recorder.events[-1] == ("train_end",)  # but training ended properly
    assert history.stopped_early and not history.interrupted
    assert [r["epoch"] for r in history.epochs] == [0]  # the finished epoch is kept, the half one is not
    assert len(history.batches) == 5
    assert history.best_epoch == 0


def test_stop_request_at_epoch_end():
    data, model = tiny_data(), tiny_model()
    recorder = Recorder(stop_at_epoch_end=0)
    history = fit(model, DataLoader(data, batch_size=BATCH), torch.optim.SGD(model.parameters(), lr=0.1), epochs=3,
                  callbacks=[recorder])
    assert history.stopped_early and len(history.epochs) == 1 and len(history.batches) == 3


def test_keyboard_interrupt_is_caught_with_history_intact(capsys):
    data, model = tiny_data(), tiny_model()

    class Interrupt(Callback):
        def on_batch_end(self, state):
            if state.step == 4:
                raise KeyboardInterrupt

    loader = DataLoader(data, batch_size=BATCH)
    history = fit(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), 3, val_loader=loader,
                  callbacks=[Interrupt()])
    assert history.interrupted and len(history.epochs) == 1 and len(history.batches) == 4
    assert "interrupted" in capsys.readouterr().out
    with pytest.raises(KeyboardInterrupt):
        fit(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), 3, callbacks=[Interrupt()],
            catch_interrupt=False)


def test_resuming_continues_the_epoch_numbering():
    data, model = tiny_data(), tiny_model()
    loader = DataLoader(data, batch_size=BATCH)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    history = fit(model, loader, optimizer, 2, val_loader=loader)
    history = fit(model, loader, optimizer, 1, val_loader=loader, history=history)
    assert [r["epoch"] for r in history.epochs] == [0, 1, 2]


# --------------------------------------------------------------------------- (x, y, index) batches
class Indexed(torch.utils.data.Dataset):
    """Yields (x, y, index), like a feature cache that remembers which photo a vector came from."""

    def __init__(self, base: TensorDataset):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return x, y, i


def test_index_is_passed_through_to_callbacks():
    base = tiny_data(12)
    x_all, y_all = base.tensors
    model = tiny_model()
    recorder = Recorder()
    loader = make_loader(Indexed(base), batch_size=5, shuffle=True, seed=3)
    history = fit(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, val_loader=loader,
                  callbacks=[recorder])
    index = torch.cat(recorder.indices)
    assert sorted(index.tolist()) == list(range(12))  # every row once
    assert index.tolist() != list(range(12))  # shuffled, so the index is really needed
    assert torch.equal(torch.cat(recorder.ys), y_all[index])  # each index names its own example
    assert len(history.epochs) == 1 and history.epochs[0]["val_acc"] == pytest.approx(evaluate(model, loader)["accuracy"])


def test_plain_batches_have_no_index():
    recorder = Recorder()
    model = tiny_model()
    fit(model, DataLoader(tiny_data(), batch_size=BATCH), torch.optim.SGD(model.parameters(), lr=0.1), 1,
        callbacks=[recorder])
    assert recorder.indices == []


# --------------------------------------------------------------------------- seeds and devices
def test_seed_everything_repeats_python_numpy_and_torch():
    def draw():
        return random.random(), np.random.rand(), torch.rand(3)

    seed_everything(5)
    a = draw()
    seed_everything(5)
    b = draw()
    seed_everything(6)
    c = draw()
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    assert a[0] != c[0] and a[1] != c[1] and not torch.equal(a[2], c[2])


def test_seeded_training_runs_are_identical():
    def run(seed):
        seed_everything(seed)
        model = nn.Sequential(nn.Linear(FEATURES, 8), nn.Dropout(0.5), nn.Linear(8, CLASSES))
        fit(model, make_loader(tiny_data(20), batch_size=4, shuffle=True, seed=seed),
            torch.optim.SGD(model.parameters(), lr=0.1), epochs=2)
        return model.state_dict()

    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_choose_device_auto_picks_the_best_available():
    if torch.cuda.is_available():
        expected = "cuda"
    elif torch.backends.mps.is_available():
        expected = "mps"
    else:
        expected = "cpu"  # this machine and CI
    assert choose_device().type == expected
    assert choose_device("auto").type == expected


def test_choose_device_honours_an_explicit_preference():
    assert choose_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert choose_device("cuda").type == "cuda"
    else:
        # Asking for hardware that is not there: a clear error now, not a confusing one at .to().
        with pytest.raises(RuntimeError, match="CUDA.*TLCOURSE_DEVICE"):
            choose_device("cuda")


class DeviceSpy(nn.Module):
    """Wraps a model and records the device of every batch it is given."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.device.type)
        return self.inner(x)


def test_fit_trains_on_the_models_device():
    """Each batch is moved to the device (the model's, or the one given), and fit takes the same steps as a
    plain loop written out here. Every device this machine has is tried (CI: the CPU only)."""
    data = tiny_data()
    reference = tiny_model()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    loss_sum = 0.0
    for x, y in DataLoader(data, batch_size=BATCH):  # the reference: torchvision's train_one_epoch, by hand
        loss = F.cross_entropy(reference(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(y)

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for given in (None, choose_device(device)):  # the model's own device, or named explicitly
            model = DeviceSpy(tiny_model()).to(device)
            history = fit(model, DataLoader(data, batch_size=BATCH), torch.optim.SGD(model.parameters(), lr=0.1),
                          1, device=given)
            assert model.seen == [device] * 3  # 4 + 4 + 2 examples, each batch on the device
            assert history.epochs[0]["train_loss"] == pytest.approx(loss_sum / N)
            for name, value in reference.state_dict().items():
                torch.testing.assert_close(model.inner.state_dict()[name].cpu(), value)
