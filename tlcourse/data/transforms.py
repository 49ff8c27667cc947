"""Transforms: the original notebook's two hand-written ones (fixed), and the model's input pipeline,
whose sizes and normalisation come from the pretrained weights."""

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

    PIL's ``image.size`` is ``(width, height)``; the original named the two the other way round, consistently
    (a naming slip). Its defect was a random crop at test time: ``random=False`` takes the centre crop."""

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
    the ImageNet standard, which a model without pretrained weights uses. Taught in lesson 1."""

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
    it equals their own ``weights.transforms()``. Taught in lesson 1."""
    return v2.Compose([
        v2.Resize(settings.resize, interpolation=InterpolationMode(settings.interpolation), antialias=True),
        v2.CenterCrop(settings.crop), v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(settings.mean), std=list(settings.std))])


def downscale(image: Image.Image, factor: float) -> Image.Image:
    """Shrink each side of ``image`` by ``factor`` and enlarge it back (bicubic): a small web photo."""
    width, height = image.size
    small = image.resize((max(1, int(width * factor)), max(1, int(height * factor))), Image.Resampling.BICUBIC)
    return small.resize((width, height), Image.Resampling.BICUBIC)


class Downscale:
    """:func:`downscale` by a factor drawn uniformly from ``factor`` (a transform for PIL images)."""

    def __init__(self, factor: tuple[float, float]):
        self.factor = tuple(factor)

    def __call__(self, image: Image.Image) -> Image.Image:
        return downscale(image, float(torch.empty(()).uniform_(*self.factor)))

    def __repr__(self) -> str:
        return f"Downscale(factor={self.factor!r})"


@dataclass(frozen=True)
class AugmentSettings:
    """The course's training augmentation, its one definition: it makes :func:`train_transform`, the cached
    augmented views (:mod:`tlcourse.augcache`, where it is part of the cache key) and the augmentation
    explorer's starting point and code text. Taught in lessons 1 and 7."""

    scale: tuple[float, float] = (0.25, 1.0)  # RandomResizedCrop's share of the photo's area
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5  # probability of a horizontal flip
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    downscale_p: float = 0.5  # probability of shrinking first (then enlarged again by the crop)
    downscale: tuple[float, float] = (0.3, 0.7)  # factor of each side when shrinking

    def code(self, settings: TransformSettings = TransformSettings()) -> str:
        """Python source of the transform (needs ``from torchvision.transforms import v2``, ``import torch``
        and ``from tlcourse.data import Downscale``)."""
        def r(values):
            return tuple(round(float(v), 4) for v in values)

        lines = []
        if self.downscale_p:
            lines.append(f"v2.RandomApply([Downscale(factor={r(self.downscale)!r})], p={round(self.downscale_p, 4)}),")
        lines.append(f"v2.RandomResizedCrop({settings.crop}, scale={r(self.scale)!r}, ratio={self.ratio!r}, "
                     "antialias=True),")
        if self.flip:
            lines.append(f"v2.RandomHorizontalFlip({round(self.flip, 4)}),")
        jitter = (self.brightness, self.contrast, self.saturation)
        if any(jitter):
            b, c, s = (round(float(j), 4) for j in jitter)
            lines.append(f"v2.ColorJitter(brightness={b}, contrast={c}, saturation={s}),")
        lines += ["v2.ToImage(),", "v2.ToDtype(torch.float32, scale=True),",
                  f"v2.Normalize(mean={list(settings.mean)!r}, std={list(settings.std)!r}),"]
        return "v2.Compose([\n" + "".join(f"    {line}\n" for line in lines) + "])"

    def transform(self, settings: TransformSettings = TransformSettings()) -> v2.Compose:
        """The torchvision v2 transform these settings make: :meth:`code` run, so the two cannot differ."""
        return eval(self.code(settings), {"v2": v2, "torch": torch, "Downscale": Downscale})  # our own text


def train_transform(settings: TransformSettings) -> v2.Compose:
    """Training transform: the course's augmentation (:class:`AugmentSettings`' defaults: a random crop of
    25-100 % of the area, flip, colour jitter, half the time a downscale), then the same normalisation.
    Taught in lesson 1."""
    return AugmentSettings().transform(settings)


def denormalize(x: torch.Tensor, settings: TransformSettings = TransformSettings()) -> torch.Tensor:
    """Undo :func:`eval_transform`'s normalisation so an input can be shown as a photo (values in [0, 1]);
    ``settings``: the model's (default: ImageNet statistics, those of every torchvision classifier)."""
    mean = torch.tensor(settings.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.tensor(settings.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x * std + mean).clamp(0, 1)
