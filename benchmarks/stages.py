"""The benchmark's measurements. Each stage runs in a fresh Python process (see ``run.py``), so its peak
memory is its own and thread settings do not leak from one stage into the next.

Memory: ``peak_rss_mb`` is the process's peak resident set size (``getrusage`` ``ru_maxrss``): all the
memory the process held at its worst moment -- Python objects, the model's weights, tensors, decoded photos,
matplotlib's canvas. ``base_rss_mb`` is the resident size after the imports and the model were loaded,
before the measured work, so ``peak - base`` is what the work itself needed on top.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from tlcourse.data import eval_transform, load_course_data, load_image
from tlcourse.features import clear_memory_cache, compute_features, features_for_files
from tlcourse.inference import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DECODE_THREADS,
    FastBackbone,
    batches_of_inputs,
    extract_features,
)
from tlcourse.models import build_model
from tlcourse.recipes import train_frozen
from tlcourse.training import fit, seed_everything

from reference import (  # noqa: E402 - benchmarks/ is on sys.path when run.py runs a stage
    OriginalDataset,
    OriginalImageToTensor,
    OriginalSquareCrop,
    original_epoch,
    tutorial_accuracy,
    tutorial_train_model,
)


# --------------------------------------------------------------------------- memory
def rss_mb() -> float:
    """Current resident set size in MB."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # Linux without psutil
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
    except ImportError:  # Windows
        import psutil

        return psutil.Process().memory_info().peak_wset / 2**20


def _memory(result: dict[str, Any], base: float) -> dict[str, Any]:
    result.update(base_rss_mb=round(base, 1), peak_rss_mb=round(peak_rss_mb(), 1))
    return result


def _data(cfg: dict):
    """The course's data and its seeded split, for the model's transform settings."""
    return load_course_data(cfg["data_dir"], seed=cfg["seed"], per_class=cfg.get("per_class"))


def _model(cfg: dict):
    torch.manual_seed(cfg["seed"])
    return build_model(2, cfg.get("backbone", "mobilenet_v2"))


# --------------------------------------------------------------------------- 1. time to accuracy
def stage_recipe(cfg: dict) -> dict:
    """The course's frozen recipe from the folder of JPEGs: features computed once (cold cache), head trained."""
    clear_memory_cache()
    cache_dir = Path(tempfile.mkdtemp(prefix="tlcourse-bench-cache-"))  # empty: nothing cached before
    base = rss_mb()
    started = time.perf_counter()
    data = _data(cfg)
    model = _model(cfg)
    data.settings = model.transform_settings
    loaded = time.perf_counter()
    sets = compute_features(model, data, ("train", "val", "test"), cache_dir=cache_dir)
    featured = time.perf_counter()
    history = train_frozen(model, data, epochs=cfg["epochs"], batch_size=cfg["batch_size"], seed=cfg["seed"],
                           cache_dir=cache_dir, verbose=False)
    trained = time.perf_counter()
    test_acc = _head_accuracy(model, sets["test"])
    finished = time.perf_counter()
    # Not timed: the same recipe for 1..epochs epochs (features from memory, a second or two), so that a
    # reference run cut short by a time budget can be compared at the same number of epochs.
    by_epochs = {}
    for k in range(1, cfg["epochs"] + 1):
        again = _model(cfg)
        train_frozen(again, data, epochs=k, batch_size=cfg["batch_size"], seed=cfg["seed"], cache_dir=cache_dir,
                     verbose=False)
        by_epochs[k] = _head_accuracy(again, sets["test"])
    n = sum(len(s) for s in sets.values())
    return _memory({
        "seconds": finished - started, "load_seconds": loaded - started, "feature_seconds": featured - loaded,
        "head_seconds": trained - featured, "photos": n, "photos_per_s": n / (featured - loaded),
        "test_acc": test_acc, "val_acc": history.best()["val_acc"], "epochs": cfg["epochs"],
        "n_test": len(sets["test"]), "torch_threads": torch.get_num_threads(), "test_acc_by_epochs": by_epochs,
    }, base)


def _head_accuracy(model, features) -> float:
    model.eval()
    with torch.no_grad():
        return float((model.head(features.features).argmax(1) == features.labels).float().mean())


def stage_reference(cfg: dict) -> dict:
    """The tutorial's loop on the same split, model, head, optimizer and epochs: backbone recomputed each epoch."""
    base = rss_mb()
    started = time.perf_counter()
    data = _data(cfg)
    model = _model(cfg)
    data.settings = model.transform_settings
    seed_everything(cfg["seed"])
    model.freeze()
    # The course's uncached loaders: evaluation transform (what a frozen backbone is fed), seeded shuffle,
    # num_workers=0 as in the notebooks (the tutorial's num_workers=4 misbehaves in notebooks on
    # Windows/macOS; on this 2-core machine it could overlap decoding, ~15% of the time, with the forward).
    loaders = {"train": data.loader("train", cfg["batch_size"], seed=cfg["seed"]),
               "val": data.loader("val", cfg["batch_size"])}
    sizes = {k: len(v.dataset) for k, v in loaders.items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model, records = tutorial_train_model(model, loaders, sizes, torch.nn.CrossEntropyLoss(), optimizer,
                                          num_epochs=cfg["epochs"], time_budget=cfg.get("reference_budget"))
    test_acc = tutorial_accuracy(model, data.loader("test", cfg["batch_size"]))
    finished = time.perf_counter()
    return _memory({
        "seconds": finished - started, "test_acc": test_acc, "val_acc": max(r["val_acc"] for r in records),
        "epoch_seconds": [round(r["seconds"], 1) for r in records], "epochs": len(records),
        "n_test": len(data.split.test),
    }, base)


# --------------------------------------------------------------------------- 2. backbone forward
def _photo_batch(cfg: dict, n: int) -> torch.Tensor:
    """``n`` real photos through the evaluation transform (forward speed on real inputs, not noise)."""
    data = _data({**cfg, "per_class": None})
    paths = list(data.table["file_path"][:: max(1, len(data.table) // n)][:n])
    return torch.cat(list(batches_of_inputs(paths, _weights_settings(cfg), 64)))


def _weights_settings(cfg: dict):
    from tlcourse.data import TransformSettings
    from tlcourse.models import weights_enum

    return TransformSettings.from_weights(weights_enum(cfg.get("backbone", "mobilenet_v2"), "DEFAULT"))


def _images_per_s(run: Callable[[torch.Tensor], Any], x: torch.Tensor, batch_size: int, repeats: int) -> float:
    """Best of ``repeats`` passes over ``x`` in batches (the best pass is the one least disturbed by others)."""
    run(x[:batch_size])  # warm-up: first-call allocations, oneDNN kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(x), batch_size):
            run(x[i : i + batch_size])
        times.append(time.perf_counter() - start)
    return len(x) / min(times)


def stage_forward(cfg: dict) -> dict:
    """Backbone images/s: ``variant`` = "plain" (model(x), default settings) or "course" (FastBackbone)."""
    x = _photo_batch(cfg, cfg["forward_images"])
    model = _model(cfg).freeze()
    base = rss_mb()
    if cfg["variant"] == "plain":
        # What a learner's loop does: model(x) with autograd on (the default), contiguous tensors,
        # the model as built (frozen backbone, head in train mode as inside a training loop).
        model.train()
        rate = _images_per_s(lambda b: model(b), x, DEFAULT_BATCH_SIZE, cfg["repeats"])
    else:
        # The course's forward with the course's settings (what extract_features uses: every torch thread).
        fast = FastBackbone(model)
        rate = _images_per_s(fast, x, DEFAULT_BATCH_SIZE, cfg["repeats"])
    return _memory({"images_per_s": rate, "images": len(x), "batch_size": DEFAULT_BATCH_SIZE,
                    "torch_threads": torch.get_num_threads()}, base)


def stage_forward_options(cfg: dict) -> dict:
    """What each forward option is worth, measured interleaved in one process (images/s, best of repeats)."""
    x = _photo_batch(cfg, cfg["forward_images"])
    model = _model(cfg).freeze().eval()
    threads = torch.get_num_threads()
    t = threads
    variants: dict[str, Callable[[], tuple[Callable, int, int]]] = {
        f"model(x), autograd on (default), {t} threads": lambda: (lambda b: model(b), 32, t),
        f"torch.inference_mode, {t} threads": lambda: (_inference(model.features), 32, t),
        f"inference_mode + channels_last, {t} threads": lambda: (FastBackbone(model, fuse=False), 32, t),
        f"inference_mode + BatchNorm folded, {t} threads": lambda: (FastBackbone(model, channels_last=False), 32, t),
        **{f"all three, {t} threads, batch {b}": (lambda b=b: (FastBackbone(model), b, t)) for b in (4, 8, 16, 32, 64)},
        **{f"all three, 1 thread, batch {b}": (lambda b=b: (FastBackbone(model), b, 1)) for b in (8, 32)},
        "default model(x), 1 thread": lambda: (lambda b: model(b), 32, 1),
    }
    built = {name: make() for name, make in variants.items()}
    rates: dict[str, list[float]] = {name: [] for name in built}
    for _ in range(2):  # interleaved, so a busy moment hits every variant alike
        for name, (run, batch_size, n_threads) in built.items():
            torch.set_num_threads(n_threads)
            rates[name].append(_images_per_s(run, x, batch_size, 1))
    torch.set_num_threads(threads)
    return {"images_per_s": {name: max(r) for name, r in rates.items()},
            "median_images_per_s": {name: statistics.median(r) for name, r in rates.items()},
            "images": len(x), "torch_threads": threads}


def _inference(fn):
    def run(b):
        with torch.inference_mode():
            return fn(b)
    return run


# --------------------------------------------------------------------------- 3. data loading
def stage_decode(cfg: dict) -> dict:
    """Milliseconds per photo for each step of loading, on real photos (median of photos), 1 torch thread.

    One torch thread, as while the course extracts features: with two, OpenMP's second thread keeps
    spinning after each tensor op and slows the Pillow steps measured next.
    """
    from PIL import Image

    torch.set_num_threads(1)
    data = _data({**cfg, "per_class": None})
    paths = list(data.table["file_path"][:: max(1, len(data.table) // cfg["decode_images"])])
    settings = _weights_settings(cfg)
    steps_of = eval_transform(settings).transforms  # Resize, CenterCrop, ToImage, ToDtype, Normalize
    resize_crop, to_image = steps_of[:2], steps_of[2]
    per_batch = __import__("torchvision").transforms.v2.Compose(steps_of[3:])
    steps: dict[str, list[float]] = {k: [] for k in (
        "read file", "decode JPEG (Pillow, full size)", "decode JPEG, draft 1/2 size (not used)",
        "load_image (decode + EXIF + RGB)", "resize + centre crop (Pillow)", "to uint8 tensor",
        "to float + normalise, per photo", "to float + normalise, batched (per photo)")}
    batch = []
    for path in paths:
        t0 = time.perf_counter()
        Path(path).read_bytes()
        t1 = time.perf_counter()
        with Image.open(path) as img:
            img.load()
        t2 = time.perf_counter()
        with Image.open(path) as img:
            img.draft("RGB", (img.size[0] // 2, img.size[1] // 2))
            img.load()
        t3 = time.perf_counter()
        img = load_image(path)
        t4 = time.perf_counter()
        for step in resize_crop:
            img = step(img)
        t5 = time.perf_counter()
        u8 = torch.as_tensor(to_image(img))
        t6 = time.perf_counter()
        per_batch(u8)
        t7 = time.perf_counter()
        batch.append(u8)
        for name, dt in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6)):
            steps[name].append(dt * 1000)
    stacked = torch.stack(batch[:32])
    per_batch(stacked)
    best = []
    for _ in range(3):
        t0 = time.perf_counter()
        per_batch(stacked)
        best.append((time.perf_counter() - t0) * 1000 / len(stacked))
    steps["to float + normalise, batched (per photo)"] = [min(best)]
    return {"ms_per_photo": {k: statistics.median(v) for k, v in steps.items()}, "photos": len(paths)}


def stage_loading(cfg: dict) -> dict:
    """Feature extraction from files, images/s, for torch threads x decoding threads (interleaved, best of 2);
    the decoding threads work between backbone batches (0: decoding in the calling thread)."""
    data = _data({**cfg, "per_class": None})
    paths = list(data.table["file_path"][:: max(1, len(data.table) // cfg["loading_images"])])
    model = _model(cfg).freeze()
    fast = FastBackbone(model)
    settings = model.transform_settings
    threads = torch.get_num_threads()
    extract_features(model, paths[:8], settings, fast=fast)  # warm-up
    grid = [(t, d) for t in sorted({1, threads}) for d in (0, 2)]
    rates: dict[str, float] = {}
    for _ in range(2):
        for torch_threads, decoders in grid:
            start = time.perf_counter()
            extract_features(model, paths, settings, decode_threads=decoders, fast=fast, torch_threads=torch_threads)
            name = f"{torch_threads} torch thread(s), " + (f"{decoders} decoding threads" if decoders > 1 else
                                                            "decoding in the calling thread")
            rates[name] = max(rates.get(name, 0.0), len(paths) / (time.perf_counter() - start))
    return {"images_per_s": rates, "photos": len(paths),
            "course_setting": f"{threads} torch thread(s), "
                              + (f"{DEFAULT_DECODE_THREADS} decoding threads" if DEFAULT_DECODE_THREADS > 1
                                 else "decoding in the calling thread") + f", batch {DEFAULT_BATCH_SIZE}"}


# --------------------------------------------------------------------------- 4. the original pipeline
def stage_pipeline(cfg: dict) -> dict:
    """One training pass over the same photos: the original notebook's pipeline or the course's."""
    data = _data({**cfg, "per_class": None})
    table = data.table.iloc[:: max(1, len(data.table) // cfg["pipeline_images"])].reset_index(drop=True)
    model = _model(cfg).freeze()
    seed_everything(cfg["seed"])
    base = rss_mb()
    start = time.perf_counter()
    if cfg["variant"] == "original":
        # The original: batch 16, SquareCrop(224) + ImageToTensor, and a full redraw after each batch.
        dataset = OriginalDataset(table, __import__("torchvision").transforms.Compose(
            [OriginalSquareCrop(224), OriginalImageToTensor()]))
        loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True)
        optimizer = torch.optim.Adam(model.head.parameters(), lr=3e-4)
        seen = original_epoch(model, loader, optimizer, dict(enumerate(data.classes)))
    else:
        # The course: features computed once (decoding thread + fast forward, nothing cached before),
        # then an epoch of the head on them; progress is shown by a throttled dashboard, not per batch.
        clear_memory_cache()
        features = features_for_files(model, list(table["file_path"]), list(table["label"]), cache_dir=False)
        optimizer = torch.optim.AdamW(model.head.parameters(), lr=1e-3)
        fit(model.head, features.loader(32, shuffle=True), optimizer, 1)
        seen = len(features)
    seconds = time.perf_counter() - start
    return _memory({"images_per_s": seen / seconds, "photos": seen, "seconds": seconds}, base)


STAGES = {
    "recipe": stage_recipe,
    "reference": stage_reference,
    "forward": stage_forward,
    "forward_options": stage_forward_options,
    "decode": stage_decode,
    "loading": stage_loading,
    "pipeline": stage_pipeline,
}
