"""Robustness report: each change does to a photo what its docstring says (against torchvision's own
operations, numpy, or hand-computed pixel values), the report's rows against predictions computed without
tlcourse, and the learner's folder is byte-for-byte unchanged by `tlcourse robustness`."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from tlcourse import cli
from tlcourse.robustness import (DEFAULT_CHANGES, blur, brightness, contrast, corner_crop, hflip, jpeg, long_side,
                                 plot_robustness)

from test_cli import random_checkpoint, reference_probabilities, small_folder  # noqa: F401 - fixtures


@pytest.fixture(scope="module")
def photo(data_dir) -> Image.Image:
    path = sorted((data_dir / "dog").glob("*.jpg"))[0]
    return Image.open(path).convert("RGB")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


@pytest.mark.parametrize("n", [224, 160, 112])
def test_long_side_shrinks_like_torchvision_resize_with_max_size(photo, n):
    changed = long_side(photo, n)
    assert max(changed.size) == n
    w, h = photo.size
    assert changed.size == ((n, int(h * n / w)) if w >= h else (int(w * n / h), n))  # aspect kept
    reference = TF.resize(photo, size=None, max_size=n, interpolation=v2.InterpolationMode.BICUBIC)
    np.testing.assert_array_equal(pixels(changed), pixels(reference))


def test_long_side_never_enlarges():
    small = Image.new("RGB", (200, 150), (10, 20, 30))
    assert long_side(small, 224) is small
    assert long_side(Image.new("RGB", (500, 375)), 224).size == (224, 168)  # 375 * 224 / 500 = 168


@pytest.mark.parametrize("quality", [30, 10])
def test_jpeg_matches_torchvision_jpeg(photo, quality):
    changed = jpeg(photo, quality)
    reference = TF.jpeg(TF.pil_to_tensor(photo), quality).permute(1, 2, 0).numpy()
    assert changed.size == photo.size
    assert np.abs(pixels(changed) - reference).mean() < 0.5  # same codec settings, at most rounding apart
    assert np.abs(pixels(changed) - pixels(photo)).mean() > 1  # and it really changed the photo


def test_lower_jpeg_quality_loses_more():
    assert (np.abs(pixels(jpeg(photo_like(), 10)) - pixels(photo_like())).mean()
            > np.abs(pixels(jpeg(photo_like(), 30)) - pixels(photo_like())).mean())


def photo_like() -> Image.Image:
    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.normal(0, 1, (64, 64, 3)), 0), 1)
    smooth = (smooth - smooth.min()) / np.ptp(smooth) * 255
    return Image.fromarray(smooth.astype(np.uint8))


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_blur_spreads_a_point_as_a_gaussian(sigma):
    # One white pixel on black: the result is 255 * g(dy) * g(dx), g the normalised Gaussian on
    # the kernel's 2*ceil(3 sigma)+1 integer offsets (written out here from the formula).
    image = np.zeros((31, 31, 3), np.uint8)
    image[15, 15] = 255
    half = math.ceil(3 * sigma)
    offsets = np.arange(-half, half + 1)
    g = np.exp(-0.5 * (offsets / sigma) ** 2)
    g /= g.sum()
    expected = np.zeros((31, 31))
    expected[15 - half:16 + half, 15 - half:16 + half] = 255 * np.outer(g, g)
    got = pixels(blur(Image.fromarray(image), sigma))
    for channel in range(3):
        np.testing.assert_allclose(got[..., channel], expected, atol=0.51)  # uint8 rounding


def test_brightness_multiplies_and_clips():
    image = Image.fromarray(np.full((4, 4, 3), [100, 200, 40], np.uint8))
    np.testing.assert_array_equal(pixels(brightness(image, 0.5))[0, 0], [50, 100, 20])
    np.testing.assert_array_equal(pixels(brightness(image, 1.5))[0, 0], [150, 255, 60])  # 300 clipped


def test_contrast_blends_with_the_mean_grey():
    # Half the pixels grey 100, half grey 200: mean 150; factor 0.5 -> 125/175, 1.5 -> 75/225.
    image = np.full((4, 4, 3), 100, np.uint8)
    image[:, 2:] = 200
    image = Image.fromarray(image)
    np.testing.assert_array_equal(pixels(contrast(image, 0.5))[0, [0, 3], 0], [125, 175])
    np.testing.assert_array_equal(pixels(contrast(image, 1.5))[0, [0, 3], 0], [75, 225])


def test_corner_crop_and_flip_against_numpy(photo):
    w, h = photo.size
    np.testing.assert_array_equal(pixels(corner_crop(photo, 0.6)), pixels(photo)[: int(h * 0.6), : int(w * 0.6)])
    np.testing.assert_array_equal(pixels(hflip(photo)), pixels(photo)[:, ::-1])


def test_default_changes_cover_the_issue_list():
    kinds = {c.kind for c in DEFAULT_CHANGES}
    assert kinds == {"none", "size", "jpeg", "blur", "brightness", "contrast", "crop", "flip"}
    assert DEFAULT_CHANGES[0].name == "original"
    names = [c.name for c in DEFAULT_CHANGES]
    assert len(set(names)) == len(names)


def folder_state(root: Path) -> dict[str, tuple[str, float]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder",
                                       p.stat().st_mtime)
            for p in sorted(root.rglob("*"))}


def test_robustness_cli_rows_match_a_reference_and_leave_the_folder_unchanged(small_folder, random_checkpoint,
                                                                              tmp_path, capsys):
    before = folder_state(small_folder)
    images = sorted(small_folder.rglob("*.jpg"))
    labels = np.array([0 if p.parent.name == "dog" else 1 for p in images])

    assert cli.main(["robustness", str(random_checkpoint), str(small_folder), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = {row["change"]: row for row in result["changes"]}
    assert list(rows) == [c.name for c in DEFAULT_CHANGES]
    # The unchanged row and the flipped row against torchvision-only predictions on the same photos.
    preds = reference_probabilities(random_checkpoint, images).argmax(1)
    assert rows["original"]["correct"] == int((preds == labels).sum())
    flipped = tmp_path / "flipped-reference"  # outside the learner's folder
    for path in images:
        target = flipped / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        hflip(Image.open(path).convert("RGB")).save(target.with_suffix(".png"))
    flipped_preds = reference_probabilities(random_checkpoint, sorted(flipped.rglob("*.png"))).argmax(1)
    assert rows["horizontal flip"]["correct"] == int((flipped_preds == labels).sum())
    for row in rows.values():
        assert row["n"] == 12 and row["low"] <= row["accuracy"] <= row["high"]
        assert row["drop"] == pytest.approx(rows["original"]["accuracy"] - row["accuracy"])

    assert folder_state(small_folder) == before  # nothing written, nothing touched


def test_robustness_cli_prints_a_table(tmp_path, small_folder, random_checkpoint, capsys):
    for name in ("dog", "hotdog"):  # one photo per class is enough for the layout
        (tmp_path / name).mkdir()
        first = sorted((small_folder / name).glob("*.jpg"))[0]
        (tmp_path / name / first.name).write_bytes(first.read_bytes())
    assert cli.main(["robustness", str(random_checkpoint), str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "accuracy" in lines[0] and "drop" in lines[0]
    for change in DEFAULT_CHANGES:
        assert any(line.startswith(change.name) for line in lines), change.name


def test_plot_robustness_draws_one_bar_per_change():
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    report = pd.DataFrame({"accuracy": [0.9, 0.7], "low": [0.8, 0.5], "high": [0.95, 0.85]},
                          index=pd.Index(["original", "blur"], name="change"))
    ax = plot_robustness(report, title="t")
    bars = {round(p.get_y() + p.get_height() / 2): p.get_width() for p in ax.patches}
    assert bars == pytest.approx({1: 0.9, 0: 0.7})  # first row on top
    assert {t.get_text() for t in ax.get_yticklabels()} == {"original", "blur"}
