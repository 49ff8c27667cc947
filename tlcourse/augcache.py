"""Augmentation that keeps the speed of the feature cache: K augmented views per training photo.

A random crop needs a new backbone pass, so the cached recipe could not augment. Instead, each
photo gets K fixed augmented views (random resized crop, flip, colour jitter, sometimes a downscale
and upscale, as a web thumbnail), each drawn from a seed made of the photo's content, the view index
and the augmentation settings: the same view every time, so its features are computed once and reused
by every epoch and every rerun. Each epoch the head sees one view per photo, drawn at random.

Stores use :mod:`tlcourse.features`' key (backbone, weights fingerprint, transform settings, library
versions) plus the augmentation settings; a vector is found by ``<photo sha256>:<view index>``.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from .data import TransformSettings, load_image
from .features import (DEFAULT_BATCH_SIZE, DEFAULT_DECODE_THREADS, MEMORY, Digested, FastBackbone, FeatureKey,  # noqa: F401
                       ahead_of_time, clear_memory_cache, extraction_threads, feature_key, read_store, sha256_file,
                       using_threads, write_store)

#: Bump when the stored layout or the way views are made changes: old stores are then ignored.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class AugmentSettings:
    """How the augmented views are made; part of the cache key (changing any field recomputes them)."""

    scale: tuple[float, float] = (0.25, 1.0)  # RandomResizedCrop's share of the photo's area
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5  # probability of a horizontal flip
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    downscale_p: float = 0.5  # probability of shrinking first (then enlarged again by the crop)
    downscale: tuple[float, float] = (0.3, 0.7)  # factor of each side when shrinking


class RandomDownscale:
    """With probability ``p``, shrink a PIL image by a factor drawn from ``factors`` and enlarge it back:
    the detail of a small web image at the original size."""

    def __init__(self, p: float, factors: tuple[float, float]):
        self.p, self.factors = p, factors

    def __call__(self, image: Image.Image) -> Image.Image:
        if torch.rand(()) >= self.p:
            return image
        factor = float(torch.empty(()).uniform_(*self.factors))
        width, height = image.size
        small = image.resize((max(1, int(width * factor)), max(1, int(height * factor))), Image.Resampling.BICUBIC)
        return small.resize((width, height), Image.Resampling.BICUBIC)


def augment_transform(augment: AugmentSettings, settings: TransformSettings) -> v2.Compose:
    """The random view transform (uses torch's global random generator; :func:`view_seed` fixes it)."""
    return v2.Compose([
        RandomDownscale(augment.downscale_p, augment.downscale),
        v2.RandomResizedCrop(settings.crop, scale=augment.scale, ratio=augment.ratio, antialias=True),
        v2.RandomHorizontalFlip(augment.flip),
        v2.ColorJitter(brightness=augment.brightness, contrast=augment.contrast, saturation=augment.saturation),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(settings.mean), std=list(settings.std)),
    ])


_GLOBAL_RNG = threading.Lock()


def view_seed(photo_sha256: str, view: int, augment: AugmentSettings) -> int:
    """The seed of one view: the same photo content, view index and settings give the same view."""
    return int(hashlib.sha256(f"{photo_sha256}:{view}:{augment!r}".encode()).hexdigest()[:15], 16)


def augmented_view(image: Image.Image, photo_sha256: str, view: int, augment: AugmentSettings,
                   settings: TransformSettings) -> torch.Tensor:
    """The normalised input tensor of view ``view`` of a photo (the global random state is left untouched)."""
    # torchvision's random transforms draw from torch's one global generator: one view at a time, so
    # views made in several threads still get their own seed's numbers.
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(view_seed(photo_sha256, view, augment))
        return augment_transform(augment, settings)(image)


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
class AugmentedFeatures:
    """Features of ``views`` augmented views per photo: ``features[i, v]`` is view ``v`` of photo ``i``."""

    features: torch.Tensor  # N x K x n_features
    labels: torch.Tensor  # N
    sha256: list[str]
    n_computed: int = 0
    n_from_memory: int = 0
    n_from_disk: int = 0
    seconds: float = 0.0
    cache_file: Path | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def loader(self, batch_size: int = 32, shuffle: bool = True, seed: int = 0,
               clean: torch.Tensor | None = None) -> DataLoader:
        """``(features, y, index)`` batches with one view per photo, drawn anew every epoch (from ``seed``).

        ``clean`` (``N x n_features``, the photos' evaluation-transform features) joins as one more view:
        the head then also sees the photos as they will be judged.
        """
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
    photos and make their views ahead of the backbone (0: in the calling thread)."""
    started = time.perf_counter()
    key = AugmentKey(feature_key(model), augment)
    path = Path(cache_dir) / key.filename if cache_dir not in (None, False) else None
    memory = MEMORY.setdefault(key.digest, {})  # beside the clean features, by digest
    hashes = [sha256_file(p) for p in file_paths]
    wanted = {f"{h}:{v}" for h in hashes for v in range(views)}
    in_memory = {i for i in wanted if i in memory}
    from_disk = set()
    if path is not None and len(in_memory) < len(wanted):
        on_disk = read_store(path, key.digest)
        for i in wanted - in_memory:
            if i in on_disk:
                memory[i] = on_disk[i]
                from_disk.add(i)
    todo: dict[str, list[int]] = {}  # photo sha256 -> its missing views (identical files once)
    paths = dict(zip(hashes, map(str, file_paths)))
    for i in sorted(wanted - set(memory)):
        h, v = i.rsplit(":", 1)
        todo.setdefault(h, []).append(int(v))
    n_computed = sum(len(v) for v in todo.values())
    if todo:
        if verbose:
            print(f"Computing features of {n_computed} augmented view(s) of {len(todo)} photo(s), once"
                  + (f" (cached in {path.parent})" if path is not None else "") + "...", flush=True)
        fast = FastBackbone(model)
        settings = model.transform_settings

        def make_views(h: str) -> list[tuple[str, torch.Tensor]]:
            image = load_image(paths[h])  # decoded once for all its views
            return [(f"{h}:{v}", augmented_view(image, h, v, augment, settings)) for v in todo[h]]

        # A thread makes the next photos' views while the backbone works on a batch (both release the GIL).
        views_made = (view for made in ahead_of_time((functools.partial(make_views, h) for h in todo),
                                                     decode_threads, ahead=batch_size)
                      for view in made)
        with using_threads(extraction_threads(decode_threads)):
            while batch := list(islice(views_made, batch_size)):
                vectors = fast(torch.stack([x for _, x in batch]))
                for (i, _), vector in zip(batch, vectors):
                    memory[i] = vector.clone()  # own storage: a row view would keep the whole batch alive
        if path is not None:
            write_store(path, key.digest, memory, {"augment": repr(key.augment)})
    features = torch.stack([torch.stack([memory[f"{h}:{v}"] for v in range(views)]) for h in hashes])
    return AugmentedFeatures(
        features=features, labels=torch.as_tensor(labels, dtype=torch.long), sha256=hashes,
        n_computed=n_computed, n_from_disk=len(from_disk), n_from_memory=len(in_memory),
        seconds=time.perf_counter() - started, cache_file=path)
