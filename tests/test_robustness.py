"""Robustness report: each change does to a photo what its docstring says (against torchvision's own
operations, numpy, or hand-computed pixel values), the report's rows against predictions computed without
tlcourse, and the learner's folder is byte-for-byte unchanged by `tlcourse robustness`."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from sklearn.metrics import balanced_accuracy_score
from torchvision.transforms.v2 import functional as TF

from tlcourse import cli
from tlcourse.robustness import (DEFAULT_CHANGES, blur, brightness, contrast, corner_crop, hflip, jpeg, long_side,
                                 plot_robustness)

from test_cli import (labels_of, loader_batch_sizes, reference_probabilities, small_folder,  # noqa: F401 - fixtures
                      varied_checkpoint)
from test_fieldtest import wilson


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


def synthetic(width: int = 300, height: int = 200) -> Image.Image:
    """A smooth random image with texture (for JPEG), a different mean per channel, wider than tall."""
    rng = np.random.default_rng(1)
    smooth = np.cumsum(np.cumsum(rng.normal(0, 1, (height, width, 3)), 0), 1)
    smooth = (smooth - smooth.min(axis=(0, 1))) / np.ptp(smooth, axis=(0, 1)) * 200 + 20
    return Image.fromarray(smooth.astype(np.uint8))


def parameter(name: str) -> float:
    """The number a change's name states: "blur sigma 3.0" -> 3.0, "corner crop 60 %" -> 60."""
    numbers = re.findall(r"\d+(?:\.\d+)?", name)
    assert len(numbers) == 1, name
    return float(numbers[0])


def gaussian_of_a_point(sigma: float, size: int = 41) -> np.ndarray:
    """255 * g(dy) * g(dx) around the centre, g the normalised Gaussian on 2*ceil(3 sigma)+1 integer offsets."""
    half = math.ceil(3 * sigma)
    offsets = np.arange(-half, half + 1)
    g = np.exp(-0.5 * (offsets / sigma) ** 2)
    g /= g.sum()
    out = np.zeros((size, size))
    c = size // 2
    out[c - half:c + half + 1, c - half:c + half + 1] = 255 * np.outer(g, g)
    return out


@pytest.mark.parametrize("change", DEFAULT_CHANGES, ids=lambda c: c.name)
def test_each_default_change_uses_the_parameter_its_name_states(change):
    """Each change of the report, on a synthetic image, against a reference built here from the number
    in its name (so a name and its function cannot drift apart)."""
    image = synthetic()
    got = change.apply(image)
    if change.kind == "none":
        np.testing.assert_array_equal(pixels(got), pixels(image))
    elif change.kind == "size":
        n = int(parameter(change.name))
        assert got.size == (n, int(200 * n / 300))
        reference = TF.resize(image, size=None, max_size=n, interpolation=v2.InterpolationMode.BICUBIC)
        np.testing.assert_array_equal(pixels(got), pixels(reference))
    elif change.kind == "jpeg":
        quality = int(parameter(change.name))
        error = {q: np.abs(pixels(got) - TF.jpeg(TF.pil_to_tensor(image), q).permute(1, 2, 0).numpy()).mean()
                 for q in (quality - 5, quality, quality + 5)}
        assert error[quality] < 0.5 and min(error[quality - 5], error[quality + 5]) > 2 * error[quality], error
    elif change.kind == "blur":
        point = np.zeros((41, 41, 3), np.uint8)
        point[20, 20] = 255
        spread = pixels(change.apply(Image.fromarray(point)))[..., 0]
        np.testing.assert_allclose(spread, gaussian_of_a_point(parameter(change.name)), atol=0.51)
    elif change.kind == "brightness":
        factor = parameter(change.name)
        flat = Image.fromarray(np.full((4, 4, 3), [100, 160, 40], np.uint8))
        expected = np.clip(np.round(np.array([100, 160, 40]) * factor), 0, 255)
        np.testing.assert_array_equal(pixels(change.apply(flat))[0, 0], expected)
    elif change.kind == "contrast":
        factor = parameter(change.name)
        halves = np.full((4, 4, 3), 100, np.uint8)
        halves[:, 2:] = 200  # mean grey 150
        expected = np.clip(np.round(150 + factor * (np.array([100, 200]) - 150)), 0, 255)
        np.testing.assert_array_equal(pixels(change.apply(Image.fromarray(halves)))[0, [0, 3], 0], expected)
    elif change.kind == "crop":
        fraction = parameter(change.name) / 100
        np.testing.assert_array_equal(pixels(got), pixels(image)[: int(200 * fraction), : int(300 * fraction)])
    elif change.kind == "flip":
        np.testing.assert_array_equal(pixels(got), pixels(image)[:, ::-1])
    else:
        pytest.fail(f"no reference for the change kind {change.kind!r}: add one here")
    if change.kind != "none":
        assert not np.array_equal(pixels(got.resize(image.size)), pixels(image)), "the change did nothing"


def folder_state(root: Path) -> dict[str, tuple[str, float]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder",
                                       p.stat().st_mtime)
            for p in sorted(root.rglob("*"))}


def test_robustness_cli_rows_match_a_reference_and_leave_the_folder_unchanged(small_folder, varied_checkpoint,
                                                                              capsys, loader_batch_sizes):
    """Every row against the reference model (torchvision, no tlcourse) on the photos changed here."""
    before = folder_state(small_folder)
    images = sorted(small_folder.rglob("*.jpg"))
    labels = labels_of(images)

    assert cli.main(["robustness", str(varied_checkpoint), str(small_folder), "--json", "--batch-size", "5"]) == 0
    assert loader_batch_sizes == [5] * len(DEFAULT_CHANGES)  # --batch-size reaches every pass
    result = json.loads(capsys.readouterr().out)
    rows = {row["change"]: row for row in result["changes"]}
    assert list(rows) == [c.name for c in DEFAULT_CHANGES]
    original = reference_probabilities(varied_checkpoint, images).argmax(1)
    moved = []  # the changes that change at least one recall of the reference: where a report that
    # skipped its change would show a wrong row
    for change in DEFAULT_CHANGES:
        probabilities = reference_probabilities(varied_checkpoint, images, change=change.apply)
        preds = probabilities.argmax(1)
        row = rows[change.name]
        recalls = [float((preds[labels == k] == k).mean()) for k in (0, 1)]
        expected = {"n": 12, "correct": int((preds == labels).sum()), "accuracy": float((preds == labels).mean()),
                    "balanced_accuracy": balanced_accuracy_score(labels, preds),
                    "recall_dog": recalls[0], "recall_hotdog": recalls[1],
                    "loss": float(-np.log(probabilities[np.arange(12), labels]).mean())}  # mean cross-entropy
        assert {k: row[k] for k in expected} == pytest.approx(expected, rel=1e-4), (
            f"{change.name}: the report's row differs from the model's answers on the changed photos")
        low, high = wilson(expected["correct"], 12)
        assert (row["low"], row["high"]) == pytest.approx((low, high), abs=1e-5)
        assert row["drop"] == pytest.approx(rows["original"]["accuracy"] - row["accuracy"])
        if recalls != [float((original[labels == k] == k).mean()) for k in (0, 1)]:
            moved.append(change.name)
    assert len(moved) >= 5, f"only {moved} change the fixture model's answers: the rows above check little"

    assert folder_state(small_folder) == before  # nothing written, nothing touched


def test_robustness_cli_prints_a_table(tmp_path, small_folder, varied_checkpoint, capsys):
    for name in ("dog", "hotdog"):  # one photo per class is enough for the layout
        (tmp_path / name).mkdir()
        first = sorted((small_folder / name).glob("*.jpg"))[0]
        (tmp_path / name / first.name).write_bytes(first.read_bytes())
    assert cli.main(["robustness", str(varied_checkpoint), str(tmp_path)]) == 0
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
