"""The from-scratch comparison's material: smaller transform settings, photos decoded once, the field test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tlcourse.data import TransformSettings, eval_transform, load_image
from tlcourse.fieldtest import load_field_test
from tlcourse.scratch import photo_tensors, smaller


def _photos(root: Path, classes: dict[str, int]) -> list[Path]:
    """Small random JPEGs in class folders: {class name: number of photos}."""
    rng, paths = np.random.default_rng(0), []
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            path = root / name / f"{i}.jpg"
            Image.fromarray(rng.integers(0, 255, (60 + 7 * i, 80, 3), dtype=np.uint8)).save(path)
            paths.append(path)
    return paths


def test_smaller_keeps_the_resize_proportion():
    small = smaller(TransformSettings(resize=232, crop=224), 112)
    assert (small.resize, small.crop) == (116, 112)
    assert small.mean == TransformSettings().mean and small.std == TransformSettings().std


def test_photo_tensors_equal_the_evaluation_transform_photo_by_photo(tmp_path):
    paths = _photos(tmp_path, {"a": 3, "b": 2})
    settings = TransformSettings(resize=72, crop=64)
    dataset = photo_tensors(paths, [0, 0, 0, 1, 1], settings)
    expected = torch.stack([eval_transform(settings)(load_image(p)) for p in paths])
    assert torch.equal(dataset.tensors[0], expected)
    assert dataset.tensors[1].tolist() == [0, 0, 0, 1, 1]


def test_field_test_takes_the_training_labels_or_is_skipped_with_a_note(tmp_path, capsys):
    _photos(tmp_path / "field", {"cat": 2, "dog": 3})
    table = load_field_test(["dog", "cat"], tmp_path / "field")  # training order differs from the sorted one
    assert dict(zip(table["class_name"], table["label"])) == {"dog": 0, "cat": 1}
    assert len(table) == 5
    assert load_field_test(["dog", "hotdog"], tmp_path / "field") is None
    assert "not the training classes" in capsys.readouterr().out
    assert load_field_test(["dog", "cat"], tmp_path / "missing") is None
    assert "No field-test folder" in capsys.readouterr().out
