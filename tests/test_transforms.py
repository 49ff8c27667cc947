"""Transforms: the hand-written SquareCrop/ImageToTensor against torchvision, normalisation, augmentation.

References: torchvision's own ``v2.Resize`` + ``v2.CenterCrop`` + ``v2.ToImage`` + ``v2.ToDtype`` and
the preset transforms that come with each weights enum.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import MobileNet_V2_Weights, ResNet18_Weights, VGG11_Weights
from torchvision.transforms import v2

import tlcourse
from tlcourse.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageToTensor,
    SquareCrop,
    TransformSettings,
    denormalize,
    eval_transform,
    load_image,
    train_transform,
)


def noise_image(width: int, height: int, seed: int = 0, low: int = 0) -> Image.Image:
    """A random RGB image (noise makes any misplaced pixel show up)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(low, 256, (height, width, 3), dtype=np.uint8))


def torchvision_reference(size: int, to_float: bool = True) -> v2.Compose:
    steps = [v2.Resize(size), v2.CenterCrop(size), v2.ToImage()]
    if to_float:
        steps.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(steps)


def assert_matches_torchvision(image: Image.Image, size: int) -> None:
    ours = ImageToTensor()(SquareCrop(size, random=False)(image))
    # Pixel for pixel: the same geometry and resampling as torchvision (exact uint8 values) ...
    pixels = torchvision_reference(size, to_float=False)(image)
    assert ours.shape == pixels.shape == (3, size, size)
    assert torch.equal((ours * 255).round().to(torch.uint8), pixels.as_subclass(torch.Tensor))
    # ... and the same float scaling as ToDtype(scale=True) (x/255 vs x*(1/255): at most 1 ulp apart).
    torch.testing.assert_close(ours, torchvision_reference(size)(image).as_subclass(torch.Tensor),
                               rtol=0, atol=1e-6)


#: The example set's manifest as shipped with the package (the same rows as the photo folder's MANIFEST.tsv,
#: which a downloaded folder need not have): so choosing photos never depends on that file being there.
MANIFEST = Path(tlcourse.__file__).parent / "dogs_vs_hotdogs.tsv"


def manifest_photos(data_dir: Path, orientation: str, n: int) -> list[Path]:
    """The first ``n`` photos of an orientation, chosen by the manifest's width and height."""
    chosen = []
    with MANIFEST.open(newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            w, h = int(row["width"]), int(row["height"])
            if (orientation == "portrait" and h > w) or (orientation == "landscape" and w > h) or (
                orientation == "odd" and (w % 2 or h % 2)
            ):
                chosen.append(data_dir / row["class"] / row["file"])
        return chosen[:n]


@pytest.mark.parametrize("orientation", ["portrait", "landscape", "odd"])
def test_square_crop_matches_torchvision_on_real_photos(data_dir, orientation):
    paths = manifest_photos(data_dir, orientation, 3)
    assert len(paths) == 3 and all(p.is_file() for p in paths), paths
    for path in paths:
        image = load_image(path)
        if orientation == "portrait":
            assert image.height > image.width  # the orientation survives EXIF handling
        for size in (224, 97):
            assert_matches_torchvision(image, size)


@pytest.mark.parametrize("width, height", [(37, 91), (91, 37), (255, 301), (301, 255), (640, 480), (33, 33),
                                           (500, 333), (99, 100)])
@pytest.mark.parametrize("size", [16, 31, 64])
def test_square_crop_matches_torchvision_on_synthetic_images(width, height, size):
    assert_matches_torchvision(noise_image(width, height), size)


def test_square_crop_reads_width_and_height_the_right_way_round():
    # The original swapped them: a tall image came out stretched sideways.
    tall = Image.new("RGB", (20, 60))
    tall.paste((255, 0, 0), (0, 0, 20, 20))  # red top third
    tall.paste((0, 0, 255), (0, 40, 20, 60))  # blue bottom third
    out = np.asarray(SquareCrop(20)(tall))
    assert out.shape == (20, 20, 3)
    # The centre crop of a tall image is its middle third: neither red nor blue.
    assert out[:, :, 0].max() < 50 and out[:, :, 2].max() < 50


def test_random_square_crop_stays_inside_the_resized_image():
    image = noise_image(24, 50, low=1)  # no zero pixels: a crop beyond the edge would bring in black
    size = 12
    resized = np.asarray(v2.Resize(size)(image))  # torchvision's resize, 12 x 25 (H x W is 25 x 12)
    h, w = resized.shape[:2]
    windows = {(top, left): resized[top:top + size, left:left + size] for top in range(h - size + 1)
               for left in range(w - size + 1)}
    crop = SquareCrop(size, random=True)
    np.random.seed(0)
    seen = set()
    for _ in range(200):
        out = np.asarray(crop(image))
        assert out.shape == (size, size, 3)
        matches = [pos for pos, window in windows.items() if np.array_equal(out, window)]
        assert len(matches) == 1, "the random crop is not a window of the resized image"
        seen.add(matches[0])
    # Random: many different windows, including both ends of the long side.
    assert len(seen) > 5
    assert min(top for top, _ in seen) == 0 and max(top for top, _ in seen) == h - size


def test_square_crop_rejects_bad_sizes():
    for size in (0, -3, 2.5):
        with pytest.raises(ValueError, match="positive integer"):
            SquareCrop(size)  # type: ignore[arg-type]


def test_image_to_tensor_layout_and_range():
    image = Image.fromarray(np.array([[[0, 128, 255], [10, 20, 30]]], dtype=np.uint8))  # 1 x 2 pixels
    x = ImageToTensor()(image)
    assert x.shape == (3, 1, 2) and x.dtype == torch.float32
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([0, 128, 255]) / 255.0)
    torch.testing.assert_close(x[:, 0, 1], torch.tensor([10, 20, 30]) / 255.0)


@pytest.mark.parametrize("weights", [MobileNet_V2_Weights.DEFAULT, ResNet18_Weights.DEFAULT,
                                     VGG11_Weights.DEFAULT])
def test_settings_come_from_the_weights_enum(weights):
    preset = weights.transforms()
    settings = TransformSettings.from_weights(weights)
    assert settings.mean == tuple(preset.mean) and settings.std == tuple(preset.std)
    assert [settings.resize] == list(preset.resize_size) and [settings.crop] == list(preset.crop_size)


def test_eval_transform_equals_the_weights_preset():
    weights = MobileNet_V2_Weights.DEFAULT
    transform = eval_transform(TransformSettings.from_weights(weights))
    for image in (noise_image(300, 250, seed=1), noise_image(250, 300, seed=2), noise_image(231, 517, seed=3)):
        ours = transform(image).as_subclass(torch.Tensor)
        torch.testing.assert_close(ours, weights.transforms()(image), rtol=0, atol=1e-5)


def test_settings_without_weights_are_imagenet_defaults():
    assert TransformSettings.from_weights(None) == TransformSettings(256, 224, IMAGENET_MEAN, IMAGENET_STD)


def test_eval_transform_is_deterministic():
    image = noise_image(320, 200)
    transform = eval_transform(TransformSettings(resize=40, crop=32))
    torch.manual_seed(0)
    first = transform(image)
    torch.manual_seed(1)
    assert torch.equal(first, transform(image))
    assert first.shape == (3, 32, 32)


def test_train_transform_is_random_and_seedable():
    image = noise_image(320, 200)
    transform = train_transform(TransformSettings(resize=40, crop=32))
    torch.manual_seed(0)
    outs = [transform(image) for _ in range(5)]
    assert all(o.shape == (3, 32, 32) for o in outs)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    torch.manual_seed(0)
    assert torch.equal(outs[0], transform(image))  # the same seed gives the same augmentation


def test_transforms_normalise_with_the_settings():
    settings = TransformSettings(resize=8, crop=8, mean=(0.1, 0.5, 0.9), std=(0.5, 0.25, 0.1))
    image = Image.new("RGB", (8, 8), (51, 102, 255))  # 0.2, 0.4, 1.0
    x = eval_transform(settings)(image)
    expected = (torch.tensor([0.2, 0.4, 1.0]) - torch.tensor(settings.mean)) / torch.tensor(settings.std)
    torch.testing.assert_close(x[:, 4, 4], expected)


def test_denormalize_inverts_normalize():
    settings = TransformSettings.from_weights(MobileNet_V2_Weights.DEFAULT)
    x = torch.rand(2, 3, 5, 7)
    normalised = v2.Normalize(mean=list(settings.mean), std=list(settings.std))(x)
    torch.testing.assert_close(denormalize(normalised, settings), x, rtol=0, atol=1e-6)
    # Works on a single image too, and clamps to the displayable range.
    torch.testing.assert_close(denormalize(normalised[0], settings), x[0], rtol=0, atol=1e-6)
    assert denormalize(torch.full((3, 2, 2), 100.0), settings).max() == 1.0


def test_denormalize_of_eval_transform_gives_back_the_photo():
    image = noise_image(32, 32)
    x = eval_transform(TransformSettings(resize=32, crop=32))(image)
    back = (denormalize(x) * 255).round().to(torch.uint8)
    assert torch.equal(back, torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy()))
