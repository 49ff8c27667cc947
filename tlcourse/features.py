"""Feature caching for the frozen method, and a fast backbone forward on the CPU.

A frozen backbone gives a photo the same feature vector every epoch, so it is computed once,
kept in memory and on disk, and the head gets a loader of cached vectors. Vectors come from the
deterministic evaluation transform (a random crop or flip would change them every epoch, which a
cache cannot hold). A vector is found by its store key (backbone, weights, a fingerprint of the
backbone's tensors, transform settings, Pillow/torchvision versions) and the sha256 of the photo's
bytes (an edited photo is recomputed, a renamed one is not). Each store key has one file,
``<cache_dir>/<backbone>-<weights>-<key>.pt``, written atomically and merged with what another
process added meanwhile.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import time
from collections import deque
from contextlib import contextmanager
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import PIL
import torch
import torchvision
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler
from torchvision.transforms import v2

from .data import CourseData, TransformSettings, eval_transform, load_image
from .files import atomic_write, sha256_file

#: Bump when the stored layout or the way features are computed changes: old stores are then ignored.
FORMAT_VERSION = 2

#: Images per backbone batch: the fastest of 16, 32 and 64 in benchmarks/run.py.
DEFAULT_BATCH_SIZE = 32

#: Threads that decode and transform photos while the backbone runs (Pillow and torch release
#: the GIL). Threads, not DataLoader worker processes: those re-import the notebook on Windows and macOS.
DEFAULT_DECODE_THREADS = 1

T = TypeVar("T")

#: The cache keys photos by content (sha256 of the bytes), never by name or modification time.
file_sha256 = sha256_file


# --------------------------------------------------------------------------- keys
def backbone_fingerprint(backbone: nn.Module) -> str:
    """sha256 over the names, shapes, dtypes and values of a module's tensors: a backbone changed in
    any weight (say by ``train_discriminative``) gets a new one.
    """
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
    return FeatureKey(
        backbone=model.backbone_name,
        weights=model.weights_name or "random",
        fingerprint=backbone_fingerprint(model.backbone),
        settings=settings or model.transform_settings,
    )


# --------------------------------------------------------------------------- the fast forward
class FastBackbone:
    """A copy of a model's backbone prepared for fast inference; the model itself is not changed.

    ``torch.inference_mode`` (no autograd bookkeeping), ``channels_last`` (oneDNN's depthwise and 1x1
    convolutions are faster in NHWC) and BatchNorm folded into the convolutions (``torch.fx`` ``fuse``;
    the same affine map). Outputs match ``model.features`` to float rounding (the tests check it).
    """

    def __init__(self, model: nn.Module, channels_last: bool = True, fuse: bool = True):
        backbone = copy.deepcopy(model.backbone).eval().requires_grad_(False)
        self.fused = False
        if fuse:
            try:
                from torch.fx.experimental.optimization import fuse as fx_fuse

                backbone = fx_fuse(backbone)
                self.fused = True
            except Exception:  # noqa: BLE001 - any tracing failure: keep the plain copy, it is only slower
                pass
        self.channels_last = channels_last
        if channels_last:
            backbone = backbone.to(memory_format=torch.channels_last)
        self.backbone = backbone
        self.device = next(model.parameters()).device

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``N x n_features`` (float32, on the CPU) for a normalised batch ``N x 3 x H x W``."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x).flatten(1).float().cpu()


class FastModel(nn.Module):
    """A transfer model for predictions only: its head on :class:`FastBackbone` features (the model's
    logits in eval mode, to float rounding; the backbone's gradients are not available)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.fast = FastBackbone(model)
        self.head = model.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fast(x).to(next(self.head.parameters()).device))


def for_predictions(model: nn.Module) -> nn.Module:
    """A transfer model (``backbone`` and ``head``) as a :class:`FastModel`; any other model as it is."""
    return FastModel(model) if hasattr(model, "backbone") and hasattr(model, "head") else model


def _decode(path: str, transform: v2.Compose) -> torch.Tensor:
    # Same loader and transform as CSVDataset with the evaluation transform, so inputs are identical.
    return transform(load_image(path))


def ahead_of_time(jobs: Iterable[Callable[[], T]], threads: int, ahead: int) -> Iterator[T]:
    """The results of ``jobs`` in order, each started up to ``ahead`` jobs early in ``threads`` threads
    (while the caller works on earlier results); ``threads=0``: each job runs when its result is asked for.
    """
    if threads <= 0:
        for job in jobs:
            yield job()
        return
    todo = iter(jobs)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tlcourse-decode") as pool:
        pending: deque[Future] = deque(pool.submit(job) for job in islice(todo, max(1, ahead)))
        try:
            while pending:
                result = pending.popleft().result()
                job = next(todo, None)
                if job is not None:
                    pending.append(pool.submit(job))
                yield result
        finally:
            for future in pending:  # generator closed early: do not run the rest
                future.cancel()


def batches_of_inputs(
    paths: Sequence[str],
    settings: TransformSettings,
    batch_size: int = DEFAULT_BATCH_SIZE,
    decode_threads: int = DEFAULT_DECODE_THREADS,
) -> Iterator[torch.Tensor]:
    """Yield normalised input batches for ``paths``, in order, decoded ahead in ``decode_threads`` threads.

    Each batch equals ``torch.stack([eval_transform(settings)(load_image(p)) for p in batch])``; at most
    two batches are decoded ahead. ``decode_threads=0``: everything in the calling thread.
    """
    transform = eval_transform(settings)
    inputs = ahead_of_time((functools.partial(_decode, p, transform) for p in paths), decode_threads,
                           ahead=2 * batch_size)
    while batch := list(islice(inputs, batch_size)):
        yield torch.stack(batch)


@contextmanager
def using_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads, then put the previous setting back."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def extraction_threads(decode_threads: int = DEFAULT_DECODE_THREADS) -> int:
    """Torch threads for the backbone while ``decode_threads`` threads decode: one core per decoder
    stays free (OpenMP threads wait for each other, so one that loses its core stalls them all).
    """
    return max(1, torch.get_num_threads() - max(0, decode_threads))


def extract_features(
    model: nn.Module,
    paths: Sequence[str],
    settings: TransformSettings | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    decode_threads: int = DEFAULT_DECODE_THREADS,
    fast: FastBackbone | None = None,
    torch_threads: int | None = None,
) -> torch.Tensor:
    """Backbone features ``len(paths) x n_features`` for photo files, with the fast forward; no caching."""
    settings = settings or model.transform_settings
    fast = fast or FastBackbone(model)
    with using_threads(torch_threads or extraction_threads(decode_threads)):
        out = [fast(batch) for batch in batches_of_inputs(paths, settings, batch_size, decode_threads)]
    if not out:
        return torch.empty(0, model.n_features)
    return torch.cat(out)


# --------------------------------------------------------------------------- the cache
# In-memory stores, one per store key: {id: feature vector}, the id being the photo's content sha256
# (augcache adds ":<view>"). Shared by every call in a process (a notebook kernel), so a second lesson
# or a second run reuses them without touching disk.
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

    ``meta`` says in words what the vectors are (backbone, weights, settings), for a person reading the file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    merged = {**read_store(path, digest), **store}
    ids = sorted(merged)
    blob = {"version": FORMAT_VERSION, "key": digest, "meta": meta, "ids": ids,
            "features": torch.stack([merged[i] for i in ids]) if ids else torch.empty(0)}
    with atomic_write(path) as handle:
        torch.save(blob, handle)


@dataclass
class FeatureSet:
    """Cached backbone features of a list of photos, with their labels, row for row."""

    features: torch.Tensor  # N x n_features, float32, CPU
    labels: torch.Tensor  # N, int64
    sha256: list[str]
    file_paths: list[str]
    n_computed: int = 0  # vectors computed by the backbone in this call
    n_from_memory: int = 0  # vectors found in the in-memory cache
    n_from_disk: int = 0  # vectors read from the disk cache
    seconds: float = 0.0
    cache_file: Path | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def dataset(self) -> "FeatureDataset":
        """A ``Dataset`` of ``(features, label, index)`` triples."""
        return FeatureDataset(self.features, self.labels)

    def loader(self, batch_size: int = 32, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """A DataLoader of ``(features, y, index)`` batches in the same order as the image loader with the
        same ``seed`` (same samplers and generator), each batch one indexing of the feature matrix.
        """
        dataset = self.dataset()
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


def features_for_files(
    model: nn.Module,
    file_paths: Sequence[str],
    labels: Sequence[int] | torch.Tensor,
    cache_dir: str | Path | None = None,
    settings: TransformSettings | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    decode_threads: int = DEFAULT_DECODE_THREADS,
    verbose: bool = False,
) -> FeatureSet:
    """Features for photo files: from memory, else from ``cache_dir`` (``None``: memory only), else
    computed once and stored. Rows follow ``file_paths``; the counts say where each came from.
    """
    started = time.perf_counter()
    settings = settings or model.transform_settings
    key = feature_key(model, settings)
    folder = Path(cache_dir) if cache_dir not in (None, False) else None
    path = folder / key.filename if folder is not None else None
    memory = MEMORY.setdefault(key.digest, {})

    hashes = [sha256_file(p) for p in file_paths]
    in_memory = {h for h in hashes if h in memory}
    from_disk: set[str] = set()
    if path is not None and len(in_memory) < len(set(hashes)):
        on_disk = read_store(path, key.digest)
        for h in set(hashes) - in_memory:
            if h in on_disk:
                memory[h] = on_disk[h]
                from_disk.add(h)
    missing: dict[str, str] = {}
    for h, p in zip(hashes, file_paths):
        if h not in memory:
            missing.setdefault(h, str(p))  # identical files are computed once
    if missing:
        if verbose:
            print(f"Computing {key.backbone} ({key.weights.rsplit('.', 1)[-1]}) features of {len(missing)} photo(s), once"
                  + (f" (cached in {folder})" if folder is not None else "") + "...", flush=True)
        computed = extract_features(model, list(missing.values()), settings, batch_size, decode_threads)
        for h, vector in zip(missing, computed):
            memory[h] = vector.clone()  # own storage: a row view would keep the whole batch alive
        if path is not None:
            write_store(path, key.digest, memory, {
                "backbone": key.backbone, "weights": key.weights, "fingerprint": key.fingerprint,
                "settings": repr(key.settings), "libraries": key.libraries})
    features = torch.stack([memory[h] for h in hashes]) if hashes else torch.empty(0)
    result = FeatureSet(
        features=features,
        labels=torch.as_tensor(labels, dtype=torch.long),
        sha256=hashes,
        file_paths=[str(p) for p in file_paths],
        n_computed=sum(h in missing for h in hashes),
        n_from_memory=sum(h in in_memory for h in hashes),
        n_from_disk=sum(h in from_disk for h in hashes),
        seconds=time.perf_counter() - started,
        cache_file=path,
    )
    if verbose and missing:
        rate = len(missing) / max(result.seconds, 1e-9)
        print(f"  done in {result.seconds:.1f} s ({rate:.0f} photos/s).", flush=True)
    return result


def compute_features(
    model: nn.Module,
    data: CourseData,
    parts: str | Sequence[str] = ("train", "val", "test"),
    cache_dir: str | Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    decode_threads: int = DEFAULT_DECODE_THREADS,
    verbose: bool = False,
) -> dict[str, FeatureSet]:
    """Features of parts of a :class:`~tlcourse.data.CourseData` in one pass: ``{part: FeatureSet}``,
    rows in the order of ``data.part(part)``.
    """
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
