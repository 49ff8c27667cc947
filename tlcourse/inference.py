"""Fast inference on the CPU: a backbone prepared for predictions only, fed with the next photos
between its batches. The feature cache (:mod:`tlcourse.features`), the augmented views
(:mod:`tlcourse.augcache`), the robustness report and ``tlcourse evaluate`` use it."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import islice
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import torch
from torch import nn

from .data import TransformSettings, eval_transform, load_image
from .models import model_device

#: Images per backbone batch: a small batch keeps a layer's activations in the CPU's cache (benchmarks/run.py
#: compares batch sizes).
DEFAULT_BATCH_SIZE = 4

#: Threads that decode and transform the photos of the next batch, between backbone batches (0: the calling
#: thread). More threads decode faster but are slower in all: torch's OpenMP threads keep spinning on
#: their cores for a while after each batch (benchmarks/run.py compares them). Threads, not DataLoader
#: worker processes: those re-import the notebook on Windows and macOS.
DEFAULT_DECODE_THREADS = 0

T = TypeVar("T")


class FastBackbone:
    """A copy of a model's backbone prepared for fast inference (the model itself is not changed):
    ``torch.inference_mode``, ``channels_last`` (oneDNN's depthwise and 1x1 convolutions are faster in NHWC)
    and BatchNorm folded into the convolutions (``torch.fx`` ``fuse``). Outputs match ``model.features``
    to float rounding."""

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
        self.device = model_device(model)

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
        return self.head(self.fast(x).to(self.fast.device))


def for_predictions(model: nn.Module) -> nn.Module:
    """A transfer model (``backbone`` and ``head``) as a :class:`FastModel`; any other model as it is."""
    return FastModel(model) if hasattr(model, "backbone") and hasattr(model, "head") else model


def in_chunks(jobs: Iterable[Callable[[], T]], threads: int, chunk: int) -> Iterator[T]:
    """The results of ``jobs`` in order, computed ``chunk`` at a time in ``threads`` threads (0 or 1: in the
    calling thread). Nothing runs while the caller works on a chunk's results, so the backbone, run between
    chunks, has every core: an OpenMP thread that loses its core to a decoder stalls the others."""
    todo = iter(jobs)
    if threads <= 1:
        yield from (job() for job in todo)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tlcourse-decode") as pool:
        while part := list(islice(todo, chunk)):
            yield from list(pool.map(lambda job: job(), part))  # the whole chunk done before the caller goes on


def batches_of_inputs(paths: Sequence[str], settings: TransformSettings, batch_size: int = DEFAULT_BATCH_SIZE,
                      decode_threads: int = DEFAULT_DECODE_THREADS) -> Iterator[torch.Tensor]:
    """Yield normalised input batches for ``paths``, in order, each decoded in ``decode_threads`` threads
    (see :func:`in_chunks`) when it is asked for.

    Each batch equals ``torch.stack([eval_transform(settings)(load_image(p)) for p in batch])``."""
    transform = eval_transform(settings)
    inputs = in_chunks((lambda p=p: transform(load_image(p)) for p in paths), decode_threads, batch_size)
    while batch := list(islice(inputs, batch_size)):
        yield torch.stack(batch)


@contextmanager
def using_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads (``None``: as they are), then put the previous setting back."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n or before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def extract_features(model: nn.Module, paths: Sequence[str], settings: TransformSettings | None = None,
                     batch_size: int = DEFAULT_BATCH_SIZE, decode_threads: int = DEFAULT_DECODE_THREADS,
                     fast: FastBackbone | None = None, torch_threads: int | None = None) -> torch.Tensor:
    """Backbone features ``len(paths) x n_features`` for photo files, with the fast forward; no caching."""
    settings = settings or model.transform_settings
    fast = fast or FastBackbone(model)
    with using_threads(torch_threads):
        out = [fast(batch) for batch in batches_of_inputs(paths, settings, batch_size, decode_threads)]
    if not out:
        return torch.empty(0, model.n_features)
    return torch.cat(out)
