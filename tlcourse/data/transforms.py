"""Transforms: the original notebook's two hand-written ones (fixed), and the model's input pipeline,
whose sizes and normalisation come from the pretrained weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

#: ImageNet channel statistics; used only when no weights are given.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SquareCrop:
    """The original's hand-written transform, fixed: resize the short side to ``size``, crop a square.
    Taught in lesson 1.

    PIL's ``image.size`` is ``(width, height)``. The original named the two the other way round,
    consistently, so its output was right (a naming slip); its defect was a random crop at test time.
    ``random=False`` takes the centre crop (as torchvision's ``Resize`` + ``CenterCrop``).
    """

    def __init__(self, size: int, random: bool = False):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        self.size = size
        self.random = random

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        short, long = min(width, height), max(width, height)
        new_long = int(self.size * long / short)  # truncates like torchvision's Resize
        new_w, new_h = (self.size, new_long) if width <= height else (new_long, self.size)
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
        if self.random:
            left = int(np.random.randint(new_w - self.size + 1))
            top = int(np.random.randint(new_h - self.size + 1))
        else:
            left = int(round((new_w - self.size) / 2.0))
            top = int(round((new_h - self.size) / 2.0))
        return image.crop((left, top, left + self.size, top + self.size))


class ImageToTensor:
    """The original's hand-written transform, fixed: PIL image -> float tensor ``C x H x W`` in [0, 1].
    Taught in lesson 1."""

    def __call__(self, image: Image.Image) -> torch.Tensor:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # H x W x C
        return torch.from_numpy(array.transpose(2, 0, 1).copy())  # C x H x W


@dataclass(frozen=True)
class TransformSettings:
    """What the model's input pipeline needs: sizes, resampling and normalisation statistics.

    A model built from pretrained weights carries its own (:meth:`from_weights`); the defaults are
    the ImageNet standard, which a model without pretrained weights uses. Taught in lesson 1.
    """

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # an InterpolationMode value

    @classmethod
    def from_weights(cls, weights) -> "TransformSettings":
        """The settings of a torchvision weights enum's own evaluation preset, ``weights.transforms()``
        (its documented sizes, statistics and interpolation); ImageNet defaults for ``None``."""
        if weights is None:
            return cls()
        preset = weights.transforms()
        return cls(resize=int(preset.resize_size[0]), crop=int(preset.crop_size[0]),
                   mean=tuple(float(m) for m in preset.mean), std=tuple(float(s) for s in preset.std),
                   interpolation=InterpolationMode(preset.interpolation).value)


def eval_transform(settings: TransformSettings) -> v2.Compose:
    """Deterministic evaluation transform: resize, centre crop, tensor, normalise (random crops at test
    time, as in the original, make the test accuracy change from run to run). For pretrained weights
    it equals their own ``weights.transforms()``. Taught in lesson 1.
    """
    return v2.Compose(
        [
            v2.Resize(settings.resize, interpolation=InterpolationMode(settings.interpolation), antialias=True),
            v2.CenterCrop(settings.crop),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(settings.mean), std=list(settings.std)),
        ]
    )


@dataclass(frozen=True)
class Augmentation:
    """The training transform's random parts (the augmentation explorer's sliders); the defaults make
    :func:`train_transform`. Taught in lesson 1."""

    scale: tuple[float, float] = (0.5, 1.0)  # share of the photo's area the random crop keeps
    flip: bool = True  # random left-right flip
    jitter: float = 0.0  # brightness, contrast and saturation change, up to +-this share (0: off)
    downscale: int = 0  # first shrink the short side to this many pixels, a low-resolution photo (0: off)

    def code(self, settings: TransformSettings = TransformSettings()) -> str:
        """Python source of the transform (``from torchvision.transforms import v2`` and ``import torch``)."""
        lines = []
        if self.downscale:
            lines.append(f"v2.Resize({self.downscale}, antialias=True),")
        scale = tuple(round(float(s), 4) for s in self.scale)
        lines.append(f"v2.RandomResizedCrop({settings.crop}, scale={scale!r}, antialias=True),")
        if self.flip:
            lines.append("v2.RandomHorizontalFlip(),")
        if self.jitter:
            j = round(float(self.jitter), 4)
            lines.append(f"v2.ColorJitter(brightness={j}, contrast={j}, saturation={j}),")
        lines += ["v2.ToImage(),", "v2.ToDtype(torch.float32, scale=True),",
                  f"v2.Normalize(mean={list(settings.mean)!r}, std={list(settings.std)!r}),"]
        return "v2.Compose([\n" + "".join(f"    {line}\n" for line in lines) + "])"

    def transform(self, settings: TransformSettings = TransformSettings()) -> v2.Compose:
        """The torchvision v2 transform these settings make: :meth:`code` run, so the two cannot differ."""
        return eval(self.code(settings), {"v2": v2, "torch": torch})  # our own text, made just above


def train_transform(settings: TransformSettings) -> v2.Compose:
    """Training transform with augmentation (:class:`Augmentation`'s defaults: random crop and flip), then
    the same normalisation. Taught in lesson 1."""
    return Augmentation().transform(settings)


def denormalize(x: torch.Tensor, settings: TransformSettings = TransformSettings()) -> torch.Tensor:
    """Undo :func:`eval_transform`'s normalisation so an input can be shown as a photo (values in [0, 1]);
    ``settings``: the model's (default: ImageNet statistics, those of every torchvision classifier)."""
    mean = torch.tensor(settings.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.tensor(settings.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x * std + mean).clamp(0, 1)
