"""Augmentation that keeps the speed of the feature cache: K augmented views per training photo.

A random crop needs a new backbone pass, so the cached recipe could not augment. Instead, each photo
gets K fixed augmented views, each drawn from a seed made of the photo's content, the view index and the
augmentation settings (:func:`view_seed`): the same view every time, so its features are computed once and
reused by every epoch and rerun. Each epoch the head sees one view per photo, drawn at random. A store
(:class:`AugmentKey`) holds a vector per ``<photo sha256>:<view index>``."""

from __future__ import annotations

import functools
import hashlib
import math
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF

from .data import AugmentSettings, TransformSettings, downscale, load_image
from .features import CacheCounts, Digested, FeatureKey, feature_key, look_up, photo_sha256
from .inference import DEFAULT_BATCH_SIZE, DEFAULT_DECODE_THREADS, FastBackbone, in_chunks


#: Augmented views cached per training photo by default (besides the clean one); chosen on the
#: validation photos by benchmarks/recipes.py (its output and the README give the figures).
VIEWS = 2

#: Bump when the stored layout or the way views are made changes: old stores are then ignored.
FORMAT_VERSION = 1


def view_seed(photo_sha256: str, view: int, augment: AugmentSettings) -> int:
    """The seed of one view: the same photo content, view index and settings give the same view."""
    return int(hashlib.sha256(f"{photo_sha256}:{view}:{augment!r}".encode()).hexdigest()[:15], 16)


def augmented_view(image: Image.Image, photo_sha256: str, view: int, augment: AugmentSettings,
                   settings: TransformSettings) -> torch.Tensor:
    """The normalised input tensor of view ``view`` of a photo. Taught in lesson 7.

    Every random number comes from a ``torch.Generator`` seeded by :func:`view_seed`, drawn in the order
    and from the distributions of torchvision's ``RandomResizedCrop``, ``RandomHorizontalFlip`` and
    ``ColorJitter`` (the lesson checks this against those transforms, bit for bit). No global random state
    is touched, so views can be made in several threads."""
    g = torch.Generator().manual_seed(view_seed(photo_sha256, view, augment))

    def uniform(low: float, high: float) -> float:
        return torch.empty(1).uniform_(low, high, generator=g).item()

    if torch.rand(1, generator=g) < augment.downscale_p:  # sometimes: a small web image, enlarged again
        image = downscale(image, uniform(*augment.downscale))
    top, left, h, w = _crop_box(image.size, augment, uniform, g)
    x = TF.resized_crop(image, top, left, h, w, size=[settings.crop, settings.crop], antialias=True)
    if torch.rand(1, generator=g) < augment.flip:
        x = TF.horizontal_flip(x)
    order = torch.randperm(4, generator=g)
    jitter = [(TF.adjust_brightness, augment.brightness), (TF.adjust_contrast, augment.contrast),
              (TF.adjust_saturation, augment.saturation)]
    factors = [uniform(max(0.0, 1 - amount), 1 + amount) if amount else None for _, amount in jitter]
    for k in order.tolist():
        if k < 3 and factors[k] is not None:
            x = jitter[k][0](x, factors[k])
    x = TF.to_dtype(TF.to_image(x), torch.float32, scale=True)
    return TF.normalize(x, mean=list(settings.mean), std=list(settings.std))


def _crop_box(size: tuple[int, int], augment: AugmentSettings, uniform, g: torch.Generator) -> tuple[int, ...]:
    """``RandomResizedCrop``'s box: up to 10 draws of area and aspect ratio, else a centre crop."""
    width, height = size
    log_ratio = torch.log(torch.tensor(augment.ratio))
    for _ in range(10):
        target_area = width * height * uniform(*augment.scale)
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=g)).item()
        w, h = int(round(math.sqrt(target_area * aspect))), int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=g))
            return top, int(torch.randint(0, width - w + 1, size=(1,), generator=g)), h, w
    ratio = width / height
    if ratio < min(augment.ratio):
        w, h = width, int(round(width / min(augment.ratio)))
    elif ratio > max(augment.ratio):
        w, h = int(round(height * max(augment.ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass(frozen=True)
class AugmentKey(Digested):
    """A store's identity: the backbone's feature key and the augmentation settings."""

    features: FeatureKey
    augment: AugmentSettings
    version: int = FORMAT_VERSION

    @property
    def filename(self) -> str:
        return f"{self.features.filename.removesuffix('.pt')}-views-{self.digest[:16]}.pt"


@dataclass
class AugmentedFeatures(CacheCounts):
    """Features of ``views`` augmented views per photo: ``features[i, v]`` is view ``v`` of photo ``i``."""

    features: torch.Tensor  # N x K x n_features
    labels: torch.Tensor  # N
    sha256: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def loader(self, batch_size: int = 32, shuffle: bool = True, seed: int = 0,
               clean: torch.Tensor | None = None) -> DataLoader:
        """``(features, y, index)`` batches with one view per photo, drawn anew every epoch (from ``seed``);
        ``clean`` (``N x n_features``, the evaluation-transform features) joins as one more view."""
        views = self.features if clean is None else torch.cat([clean.unsqueeze(1), self.features], 1)
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(RandomViewDataset(views, self.labels, seed), batch_size=batch_size,
                          shuffle=shuffle, generator=generator)


class RandomViewDataset(Dataset):
    """Row ``i``: one of photo ``i``'s views, drawn at random at each access (so each epoch)."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, seed: int = 0):
        self.features, self.labels = features, labels
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        view = int(torch.randint(self.features.shape[1], (), generator=self.generator))
        return self.features[i, view], self.labels[i], i


def augmented_features(model: nn.Module, file_paths: Sequence[str | Path], labels: Sequence[int] | torch.Tensor,
                       views: int = 4, augment: AugmentSettings = AugmentSettings(),
                       cache_dir: str | Path | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                       verbose: bool = False, decode_threads: int = DEFAULT_DECODE_THREADS) -> AugmentedFeatures:
    """Features of views ``0 .. views-1`` of each photo: from memory, else ``cache_dir`` (``None``: memory
    only), else computed once with the fast backbone and stored. ``decode_threads`` threads decode the
    photos and make their views between backbone batches (0: the calling thread). Taught in lesson 7."""
    started = time.perf_counter()
    key = AugmentKey(feature_key(model), augment)
    hashes = [photo_sha256(p) for p in file_paths]
    found = look_up(key.digest, key.filename, sorted({f"{h}:{v}" for h in hashes for v in range(views)}), cache_dir)
    todo: dict[str, list[int]] = {}  # photo sha256 -> its missing views (identical files once)
    paths = dict(zip(hashes, map(str, file_paths)))
    for i in found.missing:
        h, v = i.rsplit(":", 1)
        todo.setdefault(h, []).append(int(v))
    if todo:
        if verbose:
            print(f"Computing features of {len(found.missing)} augmented view(s) of {len(todo)} photo(s), once"
                  + (f" (cached in {found.path.parent})" if found.path else "") + "...", flush=True)
        fast = FastBackbone(model)
        settings = model.transform_settings

        def make_views(h: str) -> list[tuple[str, torch.Tensor]]:
            image = load_image(paths[h])  # decoded once for all its views
            return [(f"{h}:{v}", augmented_view(image, h, v, augment, settings)) for v in todo[h]]

        # The next photos' views are made between backbone batches, never beside one (see in_chunks).
        views_made = (view for made in in_chunks((functools.partial(make_views, h) for h in todo), decode_threads,
                                                 chunk=batch_size)
                      for view in made)
        while batch := list(islice(views_made, batch_size)):
            found.store(zip([i for i, _ in batch], fast(torch.stack([x for _, x in batch]))))
        found.save({"augment": repr(key.augment)})
    features = torch.stack([torch.stack([found.memory[f"{h}:{v}"] for v in range(views)]) for h in hashes])
    return AugmentedFeatures(
        features=features, labels=torch.as_tensor(labels, dtype=torch.long), sha256=hashes,
        n_computed=len(found.missing), n_from_disk=len(found.from_disk), n_from_memory=len(found.in_memory),
        seconds=time.perf_counter() - started, cache_file=found.path)
