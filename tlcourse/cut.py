"""Where to cut: train the top of the backbone on activations cached at a cut.

Freezing and unfreezing are one idea with a depth. Cut the backbone before a named block: every
layer below the cut is frozen, so its output for a photo never changes and is computed once and
cached (like the feature cache, for the clean photo and its augmented views); the blocks from the
cut on and the head learn, on those cached activations, with discriminative rates. Method 1 (the
frozen head) and method 2 (the whole network) are the two ends of that dial.

A cut is named by the module path of the first block that learns: ``"features.17"`` on MobileNetV2
trains ``features[17]``, ``features[18]`` and the head, on the ``160 x 7 x 7`` output of
``features[16]``. BatchNorm keeps its pretrained statistics (eval mode) throughout. The trained model
is an ordinary :class:`~tlcourse.models.TransferClassifier`: the same layers, checkpoint, predictions.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .augcache import VIEWS, AugmentSettings, RandomViewDataset, augmented_view
from .data import CourseData, eval_transform, load_image
from .errors import DataError
from .features import (MEMORY, Digested, FeatureKey, backbone_fingerprint, read_store, sha256_file,
                       write_store)
from .inference import DEFAULT_BATCH_SIZE, DEFAULT_DECODE_THREADS, FastBackbone, in_chunks
from .models import WEIGHT_DECAY, TransferClassifier, model_device
from .training import Callback, History, TrainState, fit, seed_everything

#: Bump when the stored layout or the way activations are computed changes: old stores are then ignored.
FORMAT_VERSION = 1

#: Sensible cut points per supported backbone, deepest (most learns) first; each names the first
#: block that learns. The first of a backbone's list is not its default: :data:`DEFAULT_CUTS` is.
CUT_POINTS: dict[str, tuple[str, ...]] = {
    "mobilenet_v2": ("features.14", "features.17", "features.18"),  # caches 96x14x14, 160x7x7, 320x7x7
    "resnet18": ("layer3", "layer4", "layer4.1"),  # caches 128x28x28, 256x14x14, 512x7x7
    "vgg11": ("features.16", "features.18"),  # the last conv block, the last conv: both cache 512x14x14
}

#: Epochs on the cached activations: a pass costs the top blocks only, and the best epoch is kept.
CUT_EPOCHS = 8

#: The cut :func:`train_cut` uses when none is named.
DEFAULT_CUTS: dict[str, str] = {"mobilenet_v2": "features.17", "resnet18": "layer4", "vgg11": "features.18"}


# --------------------------------------------------------------------------- the cut
def _expand(backbone: nn.Module, name: str) -> list[tuple[str, nn.Module]]:
    return [(f"{name}.{i}", block) for i, block in getattr(backbone, name).named_children()]


def stages(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """The backbone's forward as a list of ``(module path, module)`` applied in turn (their composition
    is the backbone's output for a batch, ``N x n_features``). Only the supported families are known."""
    if isinstance(backbone, torchvision.models.MobileNetV2):  # its forward pools with a function
        return [*_expand(backbone, "features"), ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten())]
    if isinstance(backbone, torchvision.models.VGG):
        return [*_expand(backbone, "features"), ("avgpool", backbone.avgpool), ("flatten", nn.Flatten())]
    if isinstance(backbone, torchvision.models.ResNet):
        first = [(name, getattr(backbone, name)) for name in ("conv1", "bn1", "relu", "maxpool")]
        layers = [s for name in ("layer1", "layer2", "layer3", "layer4") for s in _expand(backbone, name)]
        return [*first, *layers, ("avgpool", backbone.avgpool), ("flatten", nn.Flatten())]
    raise DataError(f"Cutting is defined for the course's backbones ({', '.join(CUT_POINTS)}), "
                    f"not for {type(backbone).__name__}. Use one of those, or train_frozen / train_discriminative.")


class Top(nn.Module):
    """The part of a model above a cut: the backbone's blocks from the cut on and the head, sharing
    their weights with the model. Its blocks stay in eval mode (BatchNorm keeps its statistics)."""

    def __init__(self, blocks: nn.Sequential, head: nn.Module):
        super().__init__()
        self.blocks, self.head = blocks, head

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        # Activations may be cached in half precision; the layers compute in their own dtype.
        return self.head(self.blocks(activations.to(next(self.head.parameters()).dtype)).flatten(1))

    def train(self, mode: bool = True) -> "Top":
        super().train(mode)
        self.blocks.eval()  # BatchNorm statistics frozen: small batches of a small set are noisy
        return self


def split_at(model: TransferClassifier, cut: str) -> tuple[nn.Sequential, Top]:
    """``(bottom, top)``: the layers below ``cut`` and a :class:`Top` above it, ``top(bottom(x)) == model(x)``.

    ``cut`` names the first block that learns (a module path such as ``"features.17"`` or ``"layer4"``,
    which stands for its first block).
    """
    parts = stages(model.backbone)
    names = [name for name, _ in parts]
    at = next((i for i, name in enumerate(names) if name == cut or name.startswith(cut + ".")), None)
    if at is None or at == 0:
        raise DataError(f"No cut {cut!r} in {model.backbone_name}. Sensible cuts: "
                        f"{', '.join(CUT_POINTS.get(model.backbone_name, ()))}; any of {', '.join(names[1:-2])} works.")
    modules = [module for _, module in parts]
    return nn.Sequential(*modules[:at]), Top(nn.Sequential(*modules[at:]), model.head)


def default_cut(model: TransferClassifier) -> str:
    """The backbone's default cut (:data:`DEFAULT_CUTS`)."""
    if model.backbone_name not in DEFAULT_CUTS:
        raise DataError(f"No default cut for {model.backbone_name}: pass cut=..., one of the modules of "
                        f"{[name for name, _ in stages(model.backbone)][1:-2]}.")
    return DEFAULT_CUTS[model.backbone_name]


@torch.no_grad()
def activation_shape(model: TransferClassifier, cut: str) -> tuple[int, ...]:
    """Shape of one photo's activations at ``cut``, e.g. ``(160, 7, 7)`` (computed, not hard-coded)."""
    # A copy in eval mode: a dummy forward must not touch BatchNorm statistics, and eval_mode on the new
    # Sequential would restore its (train) mode onto the model's own layers afterwards.
    bottom = copy.deepcopy(split_at(model, cut)[0]).eval()
    crop = model.transform_settings.crop
    return tuple(bottom(torch.zeros(1, 3, crop, crop, device=model_device(model))).shape[1:])


# --------------------------------------------------------------------------- the cache
@dataclass(frozen=True)
class CutKey(Digested):
    """A store's identity: the feature cache's key of the layers below the cut (their fingerprint),
    the cut, the views' augmentation settings (``None``: the clean photos) and the stored dtype."""

    features: FeatureKey
    cut: str
    augment: AugmentSettings | None
    dtype: str
    version: int = FORMAT_VERSION

    @property
    def filename(self) -> str:
        kind = "clean" if self.augment is None else "views"
        return f"{self.features.filename.removesuffix('.pt')}-cut-{self.cut}-{kind}-{self.digest[:16]}.pt"


@dataclass
class Activations:
    """Cached activations at a cut: ``values[i, v]`` is view ``v`` of photo ``i`` (view 0 the clean photo
    when asked for, then the augmented views 0, 1, ...)."""

    values: torch.Tensor  # N x V x C x H x W
    labels: torch.Tensor  # N
    sha256: list[str]
    n_computed: int = 0
    n_from_memory: int = 0
    n_from_disk: int = 0
    seconds: float = 0.0
    cache_files: tuple[Path, ...] = ()

    def __len__(self) -> int:
        return len(self.labels)

    def loader(self, batch_size: int = 32, shuffle: bool = True, seed: int = 0) -> DataLoader:
        """``(activations, y, index)`` batches, one view per photo drawn anew each epoch (from ``seed``)."""
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(RandomViewDataset(self.values, self.labels, seed), batch_size=batch_size,
                          shuffle=shuffle, generator=generator)


class _Holder(nn.Module):
    """A module with a ``backbone`` attribute, so the feature cache's fast forward takes the bottom."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone


def fast_bottom(model: TransferClassifier, cut: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from a normalised batch to its float32 activations at ``cut`` (``N x C x H x W``, on the
    CPU), with the feature cache's fast forward (a fused, channels-last copy; the model is not changed)."""
    shape = activation_shape(model, cut)
    fast = FastBackbone(_Holder(split_at(model, cut)[0]))
    return lambda x: fast(x).view(len(x), *shape)


def cut_activations(model: TransferClassifier, cut: str, file_paths: Sequence[str | Path],
                    labels: Sequence[int] | torch.Tensor, views: int = 0, augment: AugmentSettings = AugmentSettings(),
                    *, clean: bool = True, cache_dir: str | Path | None = None, dtype: torch.dtype = torch.float16,
                    batch_size: int = DEFAULT_BATCH_SIZE, decode_threads: int = DEFAULT_DECODE_THREADS,
                    verbose: bool = False) -> Activations:
    """Activations at ``cut`` of each photo (its clean view if ``clean``, and augmented views ``0 .. views-1``,
    the same images as :mod:`tlcourse.augcache`'s): from memory, else ``cache_dir`` (``None``: memory only),
    else computed once with the fast forward of the layers below the cut and stored as ``dtype``.
    """
    started = time.perf_counter()
    bottom, _ = split_at(model, cut)
    settings = model.transform_settings
    base = FeatureKey(model.backbone_name, model.weights_name or "random", backbone_fingerprint(bottom), settings)
    keys = ([CutKey(base, cut, None, str(dtype))] if clean else []) + (
        [CutKey(base, cut, augment, str(dtype))] if views else [])
    if not keys:
        raise ValueError("Nothing to compute: ask for the clean photos (clean=True) or views > 0.")
    hashes = [sha256_file(p) for p in file_paths]
    paths = dict(zip(hashes, map(str, file_paths)))

    def ids(key: CutKey, h: str) -> list[str]:
        return [h] if key.augment is None else [f"{h}:{v}" for v in range(views)]

    folder = Path(cache_dir) if cache_dir not in (None, False) else None
    n_memory = n_disk = 0
    todo: dict[str, list[tuple[CutKey, str]]] = {}  # photo sha256 -> its missing (store, id), each photo once
    for key in keys:
        memory = MEMORY.setdefault(key.digest, {})
        wanted = {i for h in hashes for i in ids(key, h)}
        n_memory += sum(i in memory for i in wanted)
        if folder is not None and not wanted <= set(memory):
            on_disk = read_store(folder / key.filename, key.digest)
            for i in wanted - set(memory):
                if i in on_disk:
                    memory[i], n_disk = on_disk[i], n_disk + 1
        for i in sorted(wanted - set(memory)):
            todo.setdefault(i.split(":")[0], []).append((key, i))
    n_computed = sum(map(len, todo.values()))
    if todo:
        if verbose:
            print(f"Computing activations at {cut} of {n_computed} view(s) of {len(todo)} photo(s), once"
                  + (f" (cached in {folder})" if folder is not None else "") + "...", flush=True)
        _compute(model, todo, paths, augment, dtype, batch_size, decode_threads)
        if folder is not None:
            for key in keys:
                if any(k == key for items in todo.values() for k, _ in items):
                    write_store(folder / key.filename, key.digest, MEMORY[key.digest],
                                {"backbone": model.backbone_name, "cut": cut, "augment": repr(key.augment)})
    values = torch.stack([torch.stack([MEMORY[k.digest][i] for k in keys for i in ids(k, h)]) for h in hashes])
    return Activations(values=values, labels=torch.as_tensor(labels, dtype=torch.long), sha256=hashes,
                       n_computed=n_computed, n_from_memory=n_memory, n_from_disk=n_disk,
                       seconds=time.perf_counter() - started,
                       cache_files=tuple(folder / k.filename for k in keys) if folder is not None else ())


def _compute(model: TransferClassifier, todo: dict[str, list[tuple[CutKey, str]]],
             paths: dict[str, str], augment: AugmentSettings, dtype: torch.dtype, batch_size: int,
             decode_threads: int) -> None:
    """Run the missing views through the fast forward of the layers below the cut into the in-memory stores."""
    settings, clean = model.transform_settings, eval_transform(model.transform_settings)
    fast = fast_bottom(model, next(iter(todo.values()))[0][0].cut)

    def inputs(h: str) -> list[tuple[CutKey, str, torch.Tensor]]:
        image = load_image(paths[h])  # decoded once for all its views
        return [(key, i, clean(image) if key.augment is None else
                 augmented_view(image, h, int(i.rsplit(":", 1)[1]), augment, settings)) for key, i in todo[h]]

    made = (item for items in in_chunks((functools.partial(inputs, h) for h in todo), decode_threads, batch_size)
            for item in items)
    while batch := list(islice(made, batch_size)):
        values = fast(torch.stack([x for _, _, x in batch])).to(dtype)
        for (key, i, _), value in zip(batch, values):
            MEMORY[key.digest][i] = value.clone()  # own storage: a row view would keep the batch alive


# --------------------------------------------------------------------------- training
class BestByLoss(Callback):
    """Keep the weights of the epoch with the lowest validation loss and put them back at the end
    (the lowest loss, not the highest accuracy: on a clean validation set accuracies tie at the top)."""

    def __init__(self, module: nn.Module):
        self.module, self.loss, self.epoch, self.weights = module, math.inf, None, None

    def on_epoch_end(self, state: TrainState) -> None:
        record = state.history.epochs[-1]
        if record.get("val_loss", math.inf) < self.loss:
            self.loss, self.epoch = record["val_loss"], record["epoch"]
            self.weights = copy.deepcopy(self.module.state_dict())
        state.history.best_epoch = self.epoch

    def on_train_end(self, state: TrainState) -> None:
        if self.weights is not None:
            self.module.load_state_dict(self.weights)
            state.history.best_epoch = self.epoch


def train_cut(
    model: TransferClassifier,
    data: CourseData,
    cut: str | None = None,
    epochs: int = CUT_EPOCHS,
    head_lr: float = 1e-3,
    block_lr: float = 1e-4,
    batch_size: int = 32,
    callbacks: Iterable[Callback] = (),
    seed: int = 0,
    *,
    views: int = VIEWS,
    augment_settings: AugmentSettings = AugmentSettings(),
    cache_dir: str | Path | None = None,
    dtype: torch.dtype = torch.float16,
    weight_decay: float = WEIGHT_DECAY,
    verbose: bool = True,
) -> History:
    """Where to cut: train the blocks from ``cut`` on (default :func:`default_cut`) and the head on
    activations cached at the cut.

    The layers below the cut are frozen (``model.freeze()``), so each training photo's activations there
    (clean, plus ``views`` augmented views) and each validation photo's are computed once
    (:func:`cut_activations`, kept in memory and in ``cache_dir``). Each epoch the top sees one of a photo's
    ``views + 1``. AdamW with two groups: the head at ``head_lr``, the blocks at the smaller ``block_lr``;
    BatchNorm keeps its pretrained statistics; the epoch with the lowest validation loss is kept. Afterwards
    the backbone is frozen again (as after :func:`~tlcourse.recipes.train_frozen`); the model is ordinary. Taught in lesson 7.
    """
    seed_everything(seed)
    cut = cut or default_cut(model)
    _, top = split_at(model, cut)
    model.freeze()  # everything below the cut: no gradients, BatchNorm statistics kept
    top.blocks.requires_grad_(True)
    optimizer = torch.optim.AdamW([
        {"params": [p for p in top.head.parameters()], "lr": head_lr, "name": "head"},
        {"params": [p for p in top.blocks.parameters()], "lr": block_lr, "name": "blocks"},
    ], weight_decay=weight_decay)
    # Computing activations draws no random numbers: the head's dropout and the shuffling see the same streams.
    parts = {name: data.part(name) for name in ("train", "val")}
    train = cut_activations(model, cut, list(parts["train"]["file_path"]), list(parts["train"]["label"]), views,
                            augment_settings, cache_dir=cache_dir, dtype=dtype, verbose=verbose)
    val = cut_activations(model, cut, list(parts["val"]["file_path"]), list(parts["val"]["label"]),
                          cache_dir=cache_dir, dtype=dtype, verbose=verbose)
    val_loader = DataLoader(TensorDataset(val.values[:, 0], val.labels), batch_size=batch_size)
    try:
        history = fit(top, train.loader(batch_size, seed=seed), optimizer, epochs, val_loader=val_loader,
                      callbacks=[BestByLoss(top), *callbacks], keep_best=False)
    finally:
        model.freeze().train()  # as after train_frozen: train mode, the backbone frozen and in eval
    return history


# --------------------------------------------------------------------------- the decision rule
def choose_recipe(losses: Mapping[str, Sequence[float]]) -> tuple[str, str]:
    """The decision rule: ``(name, reason)`` for candidates listed cheapest first, each with its
    validation loss per seed (same seeds, same order for every candidate).

    The best is the candidate with the lowest mean over seeds. The cheapest candidate whose mean is
    within one standard deviation over seeds of the best's mean wins, that deviation being the larger
    of the two candidates' (so noisy figures, as from a small folder's few validation photos, favour
    the cheaper recipe): a costlier recipe is chosen only when validation clearly says so.
    """
    if not losses:
        raise ValueError("No candidates to choose from.")
    figures = {name: torch.tensor(list(values), dtype=torch.float64) for name, values in losses.items()}

    def spread(values: torch.Tensor) -> float:
        return float(values.std()) if len(values) > 1 else 0.0

    best = min(figures, key=lambda name: float(figures[name].mean()))
    low = float(figures[best].mean())
    for name, values in figures.items():  # cheapest first
        margin = max(spread(values), spread(figures[best]))
        if float(values.mean()) - low <= margin:
            reason = (f"{name}: mean {float(values.mean()):.4f} against the best ({best}) {low:.4f}, "
                      f"within one standard deviation over seeds ({margin:.4f})")
            return name, reason if name != best else f"{name}: the lowest mean ({low:.4f}), and no cheaper one within its spread"
    raise AssertionError("unreachable: the best is within its own spread")
