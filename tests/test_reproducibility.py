"""Reproducibility on a CPU: the same seed gives the same split, the same weights and the same metrics.

What a GPU does differently is stated in ``tlcourse.training.seed_everything``'s docstring
(and in the lessons): repeatable only with ``deterministic=True`` on the same GPU and software.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tlcourse.data import TransformSettings, load_course_data, stratified_split
from tlcourse.features import clear_memory_cache
from tlcourse.models import build_model
from tlcourse.recipes import train_discriminative, train_frozen
from tlcourse.training import evaluate, seed_everything

SMALL = TransformSettings(resize=36, crop=32)


# One torch thread: quicker on a busy machine, and the thread count is part of a CPU run's setup.
# output_dir: TLCOURSE_OUTPUT is a fresh temporary folder, so nothing is written into the repository.
pytestmark = pytest.mark.usefixtures("one_torch_thread", "output_dir")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Two classes of 20 noisy photos each: reddish 'dogs', bluish 'hotdogs'."""
    root = tmp_path_factory.mktemp("repro") / "photos"
    rng = np.random.default_rng(0)
    for name, tint in [("dog", (60, 0, -60)), ("hotdog", (-60, 0, 60))]:
        (root / name).mkdir(parents=True)
        for i in range(20):
            pixels = np.clip(rng.normal(128, 50, (40, 44, 3)) + tint, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:02d}.png")
    return root


def test_same_seed_same_split_other_seed_other_split():
    labels = np.repeat([0, 1, 2], [30, 50, 20])
    a, b = stratified_split(labels, seed=7), stratified_split(labels, seed=7)
    for part in ("train", "val", "test"):
        assert np.array_equal(getattr(a, part), getattr(b, part))
    c = stratified_split(labels, seed=8)
    assert not np.array_equal(a.test, c.test)  # the seed matters, so the check above can fail


def test_same_seed_same_course_data(folder):
    one, two = load_course_data(folder, SMALL, seed=3), load_course_data(folder, SMALL, seed=3)
    assert one.part("train").equals(two.part("train")) and one.part("test").equals(two.part("test"))
    assert not one.part("test").equals(load_course_data(folder, SMALL, seed=4).part("test"))


def run(folder: Path, seed: int, method: str, cache: Path):
    """A complete small run from scratch: data, model, features, training, test metrics.

    From scratch means the backbone's features too: the in-memory cache is emptied and ``cache`` must be
    a new folder, so the features are computed again (checked: their store is written into ``cache``).
    """
    assert not cache.exists()
    clear_memory_cache()
    data = load_course_data(folder, SMALL, seed=seed)
    seed_everything(seed)  # before build_model: the new head's initial weights come from it
    model = build_model(2, "mobilenet_v2", weights=None, dropout=0.2)
    model.transform_settings = SMALL  # this quick run's input size; data and model must agree (issue 20)
    if method == "frozen":
        history = train_frozen(model, data, epochs=2, lr=1e-2, batch_size=8, seed=seed, cache_dir=cache,
                               verbose=False)
        # Written only when this run computed them: the clean features and the augmented views.
        assert len(list(cache.glob("*.pt"))) == 2
    else:  # augmentation, shuffling, dropout and the whole network learning: every source of randomness
        history = train_discriminative(model, data, epochs=1, head_lr=1e-2, backbone_lr=1e-3, batch_size=8,
                                       seed=seed)
    test = evaluate(model, data.loader("test", batch_size=8))
    return model.state_dict(), history, test


def without_time(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.mark.parametrize("method", ["frozen", "discriminative"])
def test_two_runs_with_the_same_seed_are_identical_on_cpu(folder, method, tmp_path):
    weights_a, history_a, test_a = run(folder, 0, method, tmp_path / "a")
    weights_b, history_b, test_b = run(folder, 0, method, tmp_path / "b")
    for name, tensor in weights_a.items():
        assert torch.equal(tensor, weights_b[name]), name  # bit for bit, BatchNorm statistics included
    assert without_time(history_a.epochs) == without_time(history_b.epochs)
    assert history_a.batches == history_b.batches
    assert test_a == test_b
    # Another seed gives other weights: the comparison above can fail.
    weights_c, _, _ = run(folder, 1, method, tmp_path / "c")
    assert not torch.equal(weights_a["head.2.weight"], weights_c["head.2.weight"])


@pytest.mark.slow
@pytest.mark.timeout(1800)  # trains on the real photos
def test_two_runs_on_the_real_photos_with_real_weights_are_identical(data_dir, real_weights, tmp_path):
    from tlcourse.models import weights_enum

    settings = TransformSettings.from_weights(weights_enum("mobilenet_v2"))

    def real_run(cache: Path):
        clear_memory_cache()  # from scratch: the features are computed again, into a new folder
        data = load_course_data(data_dir, settings, seed=0, per_class=12)
        seed_everything(0)
        model = build_model(2, "mobilenet_v2")
        history = train_frozen(model, data, epochs=1, lr=1e-3, batch_size=8, seed=0, cache_dir=cache,
                               verbose=False)
        assert len(list(cache.glob("*.pt"))) == 2  # the clean features and the augmented views
        return model.head.state_dict(), history, evaluate(model, data.loader("test", batch_size=8))

    head_a, history_a, test_a = real_run(tmp_path / "a")
    head_b, history_b, test_b = real_run(tmp_path / "b")
    assert all(torch.equal(head_a[k], head_b[k]) for k in head_a)
    assert without_time(history_a.epochs) == without_time(history_b.epochs)
    assert test_a == test_b


def test_deterministic_mode_sets_the_switches_and_still_trains(folder, monkeypatch, tmp_path):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    try:
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        weights, _, _ = run(folder, 0, "frozen", tmp_path / "a")  # nothing on the CPU path refuses deterministic mode
        reference, _, _ = run(folder, 0, "frozen", tmp_path / "b")
        assert all(torch.equal(weights[k], reference[k]) for k in weights)
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]
