"""Checkpoints: round trip, atomic writes, clear errors for the wrong setup or a bad file.

Models are built with ``weights=None`` (random weights: quick, no download); a checkpoint
carries every weight, so what is tested here holds for pretrained ones too.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from tlcourse import checkpoint as ckpt
from tlcourse.checkpoint import CheckpointError, load_checkpoint, load_weights_into, read_checkpoint, save_checkpoint
from tlcourse.data import TransformSettings
from tlcourse.models import build_model
from tlcourse.training import History, seed_everything

CLASSES = ["dog", "hotdog"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def trained_looking_model(seed: int = 0, hidden: int | None = 16):
    """A model whose every tensor (BatchNorm statistics included) differs from a fresh build."""
    seed_everything(seed)
    model = build_model(2, "mobilenet_v2", weights=None, hidden=hidden, dropout=0.3)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.01)
            if name.endswith("running_var"):
                tensor.abs_().add_(0.5)
    model.transform_settings = TransformSettings(resize=40, crop=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    return model


def a_history() -> History:
    return History(
        epochs=[{"epoch": 0, "train_loss": 0.7, "train_acc": 0.5, "val_loss": 0.6, "val_acc": 0.6, "seconds": 1.5},
                {"epoch": 1, "train_loss": 0.5, "train_acc": 0.8, "val_loss": 0.4, "val_acc": 0.9, "seconds": 1.4}],
        batches=[{"epoch": 0, "batch": 0, "loss": 0.71}, {"epoch": 1, "batch": 0, "loss": 0.52}],
        best_epoch=1, interrupted=True, seconds=2.9,
    )


@torch.no_grad()
def outputs(model, x):
    model.eval()
    return model(x)


def test_round_trip_restores_predictions_and_everything_needed(tmp_path):
    model = trained_looking_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()  # so the optimizer has state (Adam's running averages) to save
    x = torch.randn(4, 3, 32, 32)
    expected = outputs(model, x)
    path = save_checkpoint(tmp_path / "out" / "model.pt", model, CLASSES, a_history(),
                           extra={"lr": 1e-3, "note": "frozen"}, optimizer=optimizer)
    assert path.is_file()
    loaded, info = load_checkpoint(path)
    assert not loaded.training  # ready for predictions
    assert torch.equal(outputs(loaded, x), expected)  # identical, not just close
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert loaded.backbone_name == info["backbone"] == "mobilenet_v2"
    assert info["class_names"] == CLASSES
    assert info["transform"] == model.transform_settings == loaded.transform_settings
    assert dataclasses.asdict(info["history"]) == dataclasses.asdict(a_history())
    assert info["extra"] == {"lr": 1e-3, "note": "frozen"}
    assert loaded.arguments() == model.arguments() and (loaded.hidden, loaded.dropout) == (16, 0.3)
    # The optimizer state comes back too (so resumed training continues exactly, see test_interrupt).
    fresh = torch.optim.AdamW(loaded.parameters(), lr=1e-3)
    fresh.load_state_dict(info["optimizer"])
    for a, b in zip(optimizer.state_dict()["state"].values(), fresh.state_dict()["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"])


def test_round_trip_without_history_or_optimizer(tmp_path):
    model = trained_looking_model(hidden=None)
    save_checkpoint(tmp_path / "m.pt", model, CLASSES)
    loaded, info = load_checkpoint(tmp_path / "m.pt")
    assert info["history"] is None and info["optimizer"] is None
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(outputs(loaded, x), outputs(model, x))


# --------------------------------------------------------------------------- another device
# A file torch.save wrote on a GPU machine records each tensor's device ("cuda:0") and, loaded without
# map_location on a machine without CUDA, fails. This machine (and CI) has no GPU, so such a file is
# made here: torch.save runs with an extra location tagger (torch.serialization.register_package, a
# public API) that labels CPU tensors "cuda:0" while `_saved_as_on` is active. The bytes then say
# "cuda:0" exactly as a GPU's torch.save writes it; what is simulated is only where the numbers came from.
_SAVE_LOCATION: list[str] = []


def _tag_as_other_device(storage):
    if _SAVE_LOCATION and storage.device.type == "cpu":
        return _SAVE_LOCATION[-1]
    return None  # inactive: torch's own taggers decide


torch.serialization.register_package(0, _tag_as_other_device, lambda storage, location: None)


def save_as_if_on(location: str, obj, path: Path) -> Path:
    """torch.save ``obj`` to ``path`` with every tensor recorded as being on ``location``."""
    _SAVE_LOCATION.append(location)
    try:
        torch.save(obj, path)
    finally:
        _SAVE_LOCATION.pop()
    return path


def test_a_checkpoint_saved_on_a_gpu_loads_on_a_machine_without_one(tmp_path):
    model = trained_looking_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    x = torch.randn(2, 3, 32, 32)
    expected = outputs(model, x)
    cpu_file = save_checkpoint(tmp_path / "cpu.pt", model, CLASSES, a_history(), optimizer=optimizer)
    payload = torch.load(cpu_file, map_location="cpu", weights_only=True)
    gpu_file = save_as_if_on("cuda:0", payload, tmp_path / "gpu.pt")
    if not torch.cuda.is_available():  # the simulation is real: plain torch.load refuses this file here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(gpu_file, weights_only=True)

    loaded, info = load_checkpoint(gpu_file)  # default device: the CPU
    assert all(t.device.type == "cpu" for t in loaded.state_dict().values())
    assert torch.equal(outputs(loaded, x), expected)
    fresh = torch.optim.AdamW(loaded.parameters(), lr=1e-3)
    fresh.load_state_dict(info["optimizer"])  # the optimizer's state maps to the CPU too
    assert all(t.device.type == "cpu" for s in fresh.state_dict()["state"].values() for t in s.values())
    target = trained_looking_model(seed=1)
    load_weights_into(target, gpu_file)  # the other way in, with a path
    assert torch.equal(outputs(target, x), expected)


def test_load_checkpoint_puts_the_model_on_the_device_asked_for(tmp_path):
    """Saved on the CPU, loaded onto another device: 'meta' (shapes only, no numbers) stands for a GPU here;
    on a machine with CUDA, CUDA is tried too and must predict as the original."""
    model = trained_looking_model()
    path = save_checkpoint(tmp_path / "m.pt", model, CLASSES)
    on_meta, _ = load_checkpoint(path, device="meta")
    assert {t.device.type for t in on_meta.state_dict().values()} == {"meta"}
    assert not on_meta.training
    if torch.cuda.is_available():
        on_gpu, _ = load_checkpoint(path, device="cuda")
        x = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(outputs(on_gpu, x.cuda()).cpu(), outputs(model, x))


# --------------------------------------------------------------------------- atomic writes
def _failing_save(real_save, fail_with: BaseException):
    """A torch.save that writes the first part of the real bytes, then fails (disk full, Ctrl-C)."""

    def save(obj, handle, *args, **kwargs):
        import io

        buffer = io.BytesIO()
        real_save(obj, buffer)
        data = buffer.getvalue()
        handle.write(data[: len(data) // 3])
        handle.flush()
        raise fail_with

    return save


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch, failure):
    path = tmp_path / "model.pt"
    first = trained_looking_model(seed=1)
    save_checkpoint(path, first, CLASSES, a_history())
    before = path.read_bytes()
    second = trained_looking_model(seed=2)
    monkeypatch.setattr(torch, "save", _failing_save(torch.save, failure))
    with pytest.raises(type(failure)):
        save_checkpoint(path, second, CLASSES)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the earlier checkpoint is intact...
    assert os.listdir(tmp_path) == ["model.pt"]  # ...and no half-written temporary file is left
    loaded, _ = load_checkpoint(path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(outputs(loaded, x), outputs(first, x))


def test_a_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", _failing_save(torch.save, OSError(28, "No space left on device")))
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "model.pt", trained_looking_model(), CLASSES)
    assert os.listdir(tmp_path) == []


def test_checkpoint_gets_ordinary_file_permissions(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", trained_looking_model(), CLASSES)
    reference = tmp_path / "plain"
    reference.write_bytes(b"")  # created like any file: 0o666 minus the umask
    assert path.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777


def test_never_saves_over_a_photo(tmp_path):
    photo = tmp_path / "dog.jpg"
    photo.write_bytes(b"\xff\xd8 a photo")
    with pytest.raises(ValueError, match="image file name"):
        save_checkpoint(photo, trained_looking_model(), CLASSES)
    assert photo.read_bytes() == b"\xff\xd8 a photo"


# --------------------------------------------------------------------------- wrong setup, bad files
@pytest.fixture
def saved(tmp_path) -> Path:
    return save_checkpoint(tmp_path / "model.pt", trained_looking_model(), CLASSES, a_history())


def test_wrong_class_count_is_a_clear_error(saved):
    seed_everything(0)
    three = build_model(3, "mobilenet_v2", weights=None, hidden=16)
    with pytest.raises(CheckpointError, match=r"2 classes \(dog, hotdog\).*3 outputs.*n_classes=2"):
        load_weights_into(three, saved)


def test_wrong_backbone_is_a_clear_error(saved):
    other = build_model(2, "resnet18", weights=None, hidden=16)
    with pytest.raises(CheckpointError, match="backbone 'mobilenet_v2'.*'resnet18'.*backbone='mobilenet_v2'"):
        load_weights_into(other, saved)


def test_wrong_class_names_or_head_are_clear_errors(saved):
    same_shape = build_model(2, "mobilenet_v2", weights=None, hidden=16)
    with pytest.raises(CheckpointError, match=r"classes \['dog', 'hotdog'\].*\['cat', 'dog'\]"):
        load_weights_into(same_shape, saved, class_names=["cat", "dog"])
    load_weights_into(same_shape, saved, class_names=CLASSES)  # the right setup loads
    no_hidden = build_model(2, "mobilenet_v2", weights=None, hidden=None)
    with pytest.raises(CheckpointError, match="'hidden': 16.*'hidden': None"):
        load_weights_into(no_hidden, saved)


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="Checkpoint not found"):
        read_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt is not a readable"):
        load_checkpoint(tmp_path / "garbage.pt")
    torch.save(trained_looking_model().state_dict(), tmp_path / "plain_state_dict.pt")
    with pytest.raises(CheckpointError, match="not a tlcourse checkpoint"):
        load_checkpoint(tmp_path / "plain_state_dict.pt")
    good = save_checkpoint(tmp_path / "good.pt", trained_looking_model(), CLASSES)
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:5000])  # a copy cut short
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")
