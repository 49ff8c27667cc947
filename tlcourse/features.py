"""Feature caching for the frozen method (the fast forward it uses is :mod:`tlcourse.inference`).

A frozen backbone gives a photo the same feature vector every epoch, so it is computed once (with the
deterministic evaluation transform), kept in memory and on disk, and the head gets a loader of cached
vectors. A vector is found by its store's :class:`FeatureKey` and the sha256 of the photo's bytes (an
edited photo is recomputed, a renamed one is not). Each store is one file, written atomically and
merged with what another process added meanwhile."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import PIL
import torch
import torchvision
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from .data import CourseData, TransformSettings
from .errors import ImageLoadError
from .files import atomic_write, sha256_file
from .inference import (DEFAULT_BATCH_SIZE, DEFAULT_DECODE_THREADS, FastBackbone,  # noqa: F401 - re-exported
                        batches_of_inputs, extract_features, for_predictions, using_threads)

#: Bump when the stored layout or the way features are computed changes: old stores are then ignored.
FORMAT_VERSION = 2

def photo_sha256(path: str | Path) -> str:
    """The sha256 of a photo's bytes (the cache keys photos by content, never by name or modification
    time); a photo moved or deleted since the folder was scanned is an
    :class:`~tlcourse.errors.ImageLoadError` naming it (one line, with the fix), not a traceback."""
    try:
        return sha256_file(path)
    except OSError as error:
        raise ImageLoadError(f"Cannot read {path}: {error.strerror or error}. It was moved, deleted or made "
                             "unreadable after the folder was scanned; put it back, or run again to rescan "
                             "the folder.", path) from None


def backbone_fingerprint(backbone: nn.Module) -> str:
    """sha256 over the names, shapes, dtypes and values of a module's tensors: a backbone changed in
    any weight (say by ``train_discriminative``) gets a new one."""
    digest = hashlib.sha256(type(backbone).__name__.encode())
    for name, tensor in backbone.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class Digested:
    """Mixin for a frozen dataclass of everything a store depends on: its sha256 is the store's identity."""

    @property
    def digest(self) -> str:
        return hashlib.sha256(repr(self).encode()).hexdigest()


@dataclass(frozen=True)
class FeatureKey(Digested):
    """Everything a cached feature vector depends on, apart from the photo itself."""

    backbone: str
    weights: str
    fingerprint: str
    settings: TransformSettings
    libraries: str = f"pillow={PIL.__version__},torchvision={torchvision.__version__}"
    version: int = FORMAT_VERSION

    @property
    def filename(self) -> str:
        """Store file name: readable prefix plus the digest, e.g. ``mobilenet_v2-IMAGENET1K_V2-1a2b....pt``."""
        weights = self.weights.rsplit(".", 1)[-1]
        return f"{self.backbone}-{weights}-{self.digest[:16]}.pt"


def feature_key(model: nn.Module, settings: TransformSettings | None = None) -> FeatureKey:
    """The :class:`FeatureKey` of a model's backbone (``settings``: default the model's own)."""
    return FeatureKey(backbone=model.backbone_name, weights=model.weights_name or "random",
                      fingerprint=backbone_fingerprint(model.backbone), settings=settings or model.transform_settings)


# In-memory stores by store key: {photo sha256 (augcache adds ":<view>"): vector}, shared by every call
# in a process (a notebook kernel), so a second lesson or run reuses them without touching disk.
MEMORY: dict[str, dict[str, torch.Tensor]] = {}


def clear_memory_cache() -> None:
    """Forget all features kept in memory (the disk cache stays)."""
    MEMORY.clear()


def read_store(path: Path, digest: str) -> dict[str, torch.Tensor]:
    """Vectors in a store file by id; empty for a missing, unreadable or foreign file (it is rebuilt)."""
    if not path.is_file():
        return {}
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("version") != FORMAT_VERSION or blob.get("key") != digest:
            return {}
        return dict(zip(blob["ids"], blob["features"]))
    except Exception:  # noqa: BLE001 - a damaged cache file is only a cache miss
        return {}


def write_store(path: Path, digest: str, store: dict[str, torch.Tensor], meta: dict) -> None:
    """Write a store atomically, merged with whatever another process wrote since we read it.

    ``meta`` says in words what the vectors are (backbone, weights, settings), for a person reading the file."""
    merged = {**read_store(path, digest), **store}
    ids = sorted(merged)
    blob = {"version": FORMAT_VERSION, "key": digest, "meta": meta, "ids": ids,
            "features": torch.stack([merged[i] for i in ids]) if ids else torch.empty(0)}
    with atomic_write(path) as handle:
        torch.save(blob, handle)


@dataclass
class Lookup:
    """What :func:`look_up` found of the vectors asked for: ``missing`` ids, in the order asked."""

    memory: dict[str, torch.Tensor]
    path: Path | None
    digest: str
    in_memory: set[str] = field(default_factory=set)
    from_disk: set[str] = field(default_factory=set)
    missing: list[str] = field(default_factory=list)

    def store(self, vectors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Keep computed vectors in memory."""
        for i, vector in vectors:
            self.memory[i] = vector.clone()  # own storage: a row view would keep the whole batch alive

    def save(self, meta: dict) -> None:
        """Write the store to disk (with a cache folder); ``meta`` says in words what the vectors are."""
        if self.path is not None:
            write_store(self.path, self.digest, self.memory, meta)


def look_up(digest: str, filename: str, ids: Sequence[str], cache_dir: str | Path | None) -> Lookup:
    """The one cache lookup (clean features and augmented views alike): ``ids`` from memory, else from
    the store file ``cache_dir/filename`` (``None``: memory only); the rest are ``missing``."""
    path = Path(cache_dir) / filename if cache_dir not in (None, False) else None
    found = Lookup(MEMORY.setdefault(digest, {}), path, digest)
    wanted = list(dict.fromkeys(ids))  # identical photos are looked up (and computed) once
    found.in_memory = {i for i in wanted if i in found.memory}
    if path is not None and len(found.in_memory) < len(wanted):
        on_disk = read_store(path, digest)
        for i in wanted:
            if i not in found.in_memory and i in on_disk:
                found.memory[i] = on_disk[i]
                found.from_disk.add(i)
    found.missing = [i for i in wanted if i not in found.memory]
    return found


@dataclass(kw_only=True)
class CacheCounts:
    """Where a call's vectors came from, and how long it took."""

    n_computed: int = 0  # vectors computed by the backbone in this call
    n_from_memory: int = 0  # vectors found in the in-memory cache
    n_from_disk: int = 0  # vectors read from the disk cache
    seconds: float = 0.0
    cache_file: Path | None = None


@dataclass
class FeatureSet(CacheCounts):
    """Cached backbone features of a list of photos, with their labels, row for row."""

    features: torch.Tensor  # N x n_features, float32, CPU
    labels: torch.Tensor  # N, int64
    sha256: list[str]
    file_paths: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def loader(self, batch_size: int = 32, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """A DataLoader of ``(features, y, index)`` batches in the same order as the image loader with the
        same ``seed`` (same samplers and generator), each batch one indexing of the feature matrix."""
        dataset = FeatureDataset(self.features, self.labels)
        generator = torch.Generator().manual_seed(seed)
        rows = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        return DataLoader(dataset, sampler=BatchSampler(rows, batch_size, drop_last=False), batch_size=None,
                          generator=generator)


class FeatureDataset(Dataset):
    """``(features[i], labels[i], i)`` for each row; ``i`` lets a dashboard show the photo behind a vector."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} feature vectors but {len(labels)} labels")
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int | list[int]):
        """One row, or (from the batch sampler of :meth:`FeatureSet.loader`) a list of rows at once."""
        if isinstance(i, list):
            index = torch.as_tensor(i, dtype=torch.long)
            return self.features[index], self.labels[index], index
        return self.features[i], self.labels[i], i


def features_for_files(model: nn.Module, file_paths: Sequence[str], labels: Sequence[int] | torch.Tensor,
                       cache_dir: str | Path | None = None, settings: TransformSettings | None = None,
                       batch_size: int = DEFAULT_BATCH_SIZE, decode_threads: int = DEFAULT_DECODE_THREADS,
                       verbose: bool = False) -> FeatureSet:
    """Features for photo files: from memory, else from ``cache_dir`` (``None``: memory only), else
    computed once and stored. Rows follow ``file_paths``; the counts say where each came from."""
    started = time.perf_counter()
    settings = settings or model.transform_settings
    key = feature_key(model, settings)
    hashes = [photo_sha256(p) for p in file_paths]
    found = look_up(key.digest, key.filename, hashes, cache_dir)
    if found.missing:
        if verbose:
            print(f"Computing {key.backbone} ({key.weights.rsplit('.', 1)[-1]}) features of {len(found.missing)} "
                  "photo(s), once" + (f" (cached in {found.path.parent})" if found.path else "") + "...", flush=True)
        paths = dict(zip(hashes, map(str, file_paths)))
        computed = extract_features(model, [paths[h] for h in found.missing], settings, batch_size, decode_threads)
        found.store(zip(found.missing, computed))
        found.save({
            "backbone": key.backbone, "weights": key.weights, "fingerprint": key.fingerprint,
            "settings": repr(key.settings), "libraries": key.libraries})
    missing = set(found.missing)
    result = FeatureSet(
        features=torch.stack([found.memory[h] for h in hashes]) if hashes else torch.empty(0),
        labels=torch.as_tensor(labels, dtype=torch.long), sha256=hashes, file_paths=[str(p) for p in file_paths],
        n_computed=sum(h in missing for h in hashes), n_from_memory=sum(h in found.in_memory for h in hashes),
        n_from_disk=sum(h in found.from_disk for h in hashes), seconds=time.perf_counter() - started,
        cache_file=found.path)
    if verbose and missing:
        rate = len(missing) / max(result.seconds, 1e-9)
        print(f"  done in {result.seconds:.1f} s ({rate:.0f} photos/s).", flush=True)
    return result


def compute_features(model: nn.Module, data: CourseData, parts: str | Sequence[str] = ("train", "val", "test"),
                     cache_dir: str | Path | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                     decode_threads: int = DEFAULT_DECODE_THREADS, verbose: bool = False) -> dict[str, FeatureSet]:
    """Features of parts of a :class:`~tlcourse.data.CourseData` in one pass: ``{part: FeatureSet}``,
    rows in the order of ``data.part(part)``. Taught in lesson 3."""
    data.use_settings(model.transform_settings)  # features at another input size than the model's: refused
    parts = [parts] if isinstance(parts, str) else list(parts)
    tables = {name: data.part(name) for name in parts}
    paths = [p for t in tables.values() for p in t["file_path"]]
    labels = [int(y) for t in tables.values() for y in t["label"]]
    everything = features_for_files(model, paths, labels, cache_dir, data.settings, batch_size,
                                    decode_threads, verbose)
    out, start = {}, 0
    for name, table in tables.items():  # the counts describe the whole call, on every part
        rows = slice(start, start + len(table))
        out[name] = dataclasses.replace(everything, features=everything.features[rows], labels=everything.labels[rows],
                                        sha256=everything.sha256[rows], file_paths=everything.file_paths[rows])
        start = rows.stop
    return out
