#!/usr/bin/env python
"""Which recipe to recommend: accuracy on validation, the test split and the field test, and cold wall time.

    python benchmarks/recipes.py            # full (~15 min on a quiet 2-core CPU); `make bench-recipes`
    python benchmarks/recipes.py --quick    # a check that everything runs: 60 photos per class (~4 min)

Part 1 trains each recipe with `tlcourse train` in its own process with an empty feature cache (a new
TLCOURSE_OUTPUT), times the whole command (imports, decoding check, features, training, the validation
and test logits, the checkpoint), then evaluates the checkpoint on the validation and test photos of the
split it used and on the field test (TLCOURSE_FIELD_TEST, see README:
photos from other sources, evaluation only). Test-time augmentation (TTA) rows evaluate the default
recipe's checkpoint with the softmax averaged over the photo and its mirror image, or over ten crops.

Part 2 is how the number of cached augmented views K was chosen, on the validation photos and the cost:
the recipe trained on the clean features plus K views (3 seeds), judged on the validation photos under
the robustness report's changes (smaller, JPEG, blur, light, crop, flip), whose accuracy and loss show
what the clean validation photos (all right for every K) cannot. The field test is printed beside it.

Timings depend on what else the machine is doing: the load average is printed with the results. The
raw numbers go to <TLCOURSE_OUTPUT>/benchmarks/recipes-<time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from figures import load_average  # benchmarks/ is on sys.path when this script runs

import numpy as np
import torch
from torchvision.transforms import v2

from tlcourse.augcache import augmented_features
from tlcourse.checkpoint import load_checkpoint
from tlcourse.config import get_config
from tlcourse.data import eval_transform, load_course_data, load_image
from tlcourse.evaluation import prediction_scores, wilson_interval
from tlcourse.features import features_for_files
from tlcourse.fieldtest import load_field_test
from tlcourse.inference import FastBackbone
from tlcourse.models import build_model
from tlcourse.recipes import EPOCHS, VIEWS, train_frozen
from tlcourse.robustness import DEFAULT_CHANGES
from train_cold import cold_train  # benchmarks/ is on sys.path when this script runs

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- part 1: recipes
def crops(settings, mode: str):
    """The views a photo is judged on: the evaluation transform's one, plus its mirror, or ten crops."""
    normalise = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(mean=list(settings.mean), std=list(settings.std))])
    if mode == "none":
        return lambda image: eval_transform(settings)(image).unsqueeze(0)
    if mode == "flip":
        return lambda image: torch.stack([(x := eval_transform(settings)(image)), x.flip(-1)])
    ten = v2.Compose([v2.Resize(settings.resize, antialias=True), v2.TenCrop(settings.crop)])
    return lambda image: torch.stack([normalise(c) for c in ten(image)])


@torch.inference_mode()
def judge(model, table, mode: str = "none") -> dict:
    """Predictions of a checkpoint's model on a labels table, the softmax averaged over ``mode``'s views."""
    fast, views = FastBackbone(model), crops(model.transform_settings, mode)
    started = time.perf_counter()
    probs = []
    for path in table["file_path"]:
        probs.append(torch.softmax(model.head(fast(views(load_image(path)))), 1).mean(0))
    pred = torch.stack(probs).argmax(1).numpy()
    return {"pred": pred.tolist(), "label": table["label"].tolist(), "seconds": time.perf_counter() - started}


def summary(result: dict, classes: list[str]) -> dict:
    s = prediction_scores(result["label"], result["pred"], classes)
    return {"n": s.n, "correct": s.correct, "balanced": s.balanced_accuracy,
            **{name: (int(row.correct), int(row.n)) for name, row in s.recall.iterrows()}}


def cell(s: dict, classes: list[str]) -> str:
    parts = []
    for name in classes:
        right, n = s[name]
        low, high = wilson_interval(right, n)
        parts.append(f"{name} {right}/{n} [{100 * low:.0f}-{100 * high:.0f}]")
    return f"{100 * s['balanced']:.1f}%: " + ", ".join(parts)


def part1(cfg, tables: dict, classes: list[str], work: Path, quick: bool) -> list[dict]:
    per_class = 60 if quick else None
    recipes = [
        ("frozen head, clean features, 5 epochs (the previous default)", ["--views", "0", "--epochs", "5"], None),
        (f"frozen head, clean features, {EPOCHS} epochs", ["--views", "0"], None),
        (f"frozen head, clean + {VIEWS} cached augmented views, {EPOCHS} epochs (the default)", [], ["flip", "tencrop"]),
    ]
    if not quick:
        recipes.append(("head (5 epochs, with views), then 2 epochs of discriminative fine-tuning with augmentation",
                        ["--method", "discriminative", "--epochs", "2"], None))
    rows = []
    for number, (name, args, tta) in enumerate(recipes):
        print(f"  training: {name} ...", file=sys.stderr, flush=True)
        trained = cold_train(str(cfg.data_dir), args, per_class, work / f"recipe{number}")
        model, _ = load_checkpoint(trained["checkpoint"])
        for mode in ["none", *(tta or [])]:
            row = {"recipe": name if mode == "none" else f"  the same, with TTA: {'mirror' if mode == 'flip' else 'ten crops'}",
                   "train_seconds": trained["seconds"] if mode == "none" else None}
            for part, table in tables.items():
                judged = judge(model, table, mode)
                row[part] = summary(judged, classes)
                row[f"{part}_seconds"] = judged["seconds"]
            rows.append(row)
            print(f"    {row['recipe']}: " + "; ".join(f"{p} {cell(row[p], classes)}" for p in tables), file=sys.stderr)
    return rows


# --------------------------------------------------------------------------- part 2: how many views
def part2(cfg, data, field_table, cache: Path, quick: bool) -> tuple[list[dict], float]:
    model = build_model(len(data.classes), weights="DEFAULT", offline=cfg.offline).eval()

    def clean(table):
        found = features_for_files(model, list(table["file_path"]), list(table["label"]), cache_dir=cache)
        return found.features, found.labels

    _, train_y = clean(data.part("train"))
    val_x, val_y = clean(data.part("val"))
    field_x, field_y = clean(field_table)
    k_max = 2 if quick else 8
    started = time.perf_counter()
    augmented_features(model, list(data.part("train")["file_path"]), train_y, views=k_max, cache_dir=cache)
    per_view = (time.perf_counter() - started) / k_max  # seconds for one view of every training photo
    # The validation photos under each change of the robustness report, through the same backbone.
    fast, transform = FastBackbone(model), eval_transform(model.transform_settings)
    images = [load_image(p) for p in data.part("val")["file_path"]]
    changed = {}
    for change in DEFAULT_CHANGES[1:]:
        changed[change.name] = torch.cat([fast(torch.stack([transform(change.apply(im)) for im in images[i:i + 32]]))
                                          for i in range(0, len(images), 32)])
    rows = []
    for k in ([0, 2] if quick else [0, 1, 2, 4, 8]):
        runs = {"acc": [], "loss": [], "field": [], "val": []}
        for seed in range(1 if quick else 3):
            # The recipe itself (its head, optimizer and best epoch on validation); its views are in the cache.
            torch.manual_seed(seed)
            trained = build_model(len(data.classes), weights="DEFAULT", offline=cfg.offline)
            train_frozen(trained, data, seed=seed, views=k, cache_dir=cache, verbose=False)
            head = trained.head.eval()
            with torch.no_grad():
                runs["val"].append(float((head(val_x).argmax(1) == val_y).float().mean()))
                for x in changed.values():
                    logits = head(x)
                    runs["acc"].append(float((logits.argmax(1) == val_y).float().mean()))
                    runs["loss"].append(float(torch.nn.functional.cross_entropy(logits, val_y)))
                runs["field"].append(prediction_scores(field_y.numpy(), head(field_x).argmax(1).numpy(),
                                                       data.classes).balanced_accuracy)
        rows.append({"views": k, "cost_seconds": k * per_view, **{key: float(np.mean(v)) for key, v in runs.items()}})
        print(f"  K={k}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows, per_view


# --------------------------------------------------------------------------- report
def report(rows: list[dict], k_rows: list[dict], per_view: float, classes: list[str], meta: dict) -> str:
    out = [f"Recipes ({meta['mode']}): {meta['photos']} photos (split train {meta['sizes']['train']}, val "
           f"{meta['sizes']['val']}, test {meta['sizes']['test']}, seed 0), field test {meta['field']} photos; "
           f"{meta['machine']}; load average {meta['load_before']} before, {meta['load_after']} after.", "",
           "#### Recipes: balanced accuracy, then recall per class with its 95 % interval", "",
           "| recipe | cold `tlcourse train` | backbone passes per photo judged | validation | test split | field test |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        wall = f"{r['train_seconds']:.1f} s" if r["train_seconds"] is not None else "(same model)"
        passes = 2 if "mirror" in r["recipe"] else 10 if "ten crops" in r["recipe"] else 1
        out.append(f"| {r['recipe']} | {wall} | {passes} | {cell(r['val'], classes)} | {cell(r['test'], classes)} | "
                   f"{cell(r['field'], classes)} |")
    out += ["", f"#### How many cached views: one view of every training photo costs {per_view:.1f} s", "",
            "| views K | their cost | clean validation | validation under changes: accuracy | loss | field test (balanced) |",
            "|---|---|---|---|---|---|"]
    for r in k_rows:
        out.append(f"| {r['views']} | {r['cost_seconds']:.0f} s | {100 * r['val']:.1f}% | {100 * r['acc']:.2f}% | "
                   f"{r['loss']:.4f} | {100 * r['field']:.1f}% |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="60 photos per class, fewer rows (~4 min)")
    parser.add_argument("--report", metavar="JSON", help="print the tables of a saved run again, without running")
    options = parser.parse_args()
    if options.report:
        saved = json.loads(Path(options.report).read_text())
        classes = [k for k in saved["recipes"][0]["val"] if k not in ("n", "correct", "balanced")]
        print(report(saved["recipes"], saved["views"], saved["per_view_seconds"], classes, saved["meta"]))
        return
    quick = options.quick
    cfg = get_config()
    field_dir = cfg.field_test_dir
    load_before = load_average()
    settings = build_model(2, weights="DEFAULT", offline=cfg.offline).transform_settings
    data = load_course_data(cfg.data_dir, settings, seed=0, per_class=60 if quick else None)
    field = load_field_test(data.classes, field_dir)
    if field is None:
        sys.exit("This benchmark needs the field test (TLCOURSE_FIELD_TEST).")
    tables = {"val": data.part("val"), "test": data.part("test"), "field": field}
    with tempfile.TemporaryDirectory(prefix="tlcourse-recipes-") as work:
        rows = part1(cfg, tables, data.classes, Path(work), quick)
        k_rows, per_view = part2(cfg, data, field, Path(work) / "views", quick)
    meta = {"mode": "quick" if quick else "full", "photos": len(data.table), "sizes": data.split.sizes(),
            "field": len(field), "load_before": load_before,
            "load_after": load_average(),
            "machine": f"{os.cpu_count()} CPUs ({platform.machine()}), torch {torch.__version__} with "
                       f"{torch.get_num_threads()} threads, Python {platform.python_version()}"}
    text = report(rows, k_rows, per_view, data.classes, meta)
    print(text)
    out = cfg.output_dir / "benchmarks" / f"recipes-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "recipes": rows, "views": k_rows, "per_view_seconds": per_view}, indent=1))
    print(f"\nRaw numbers: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
