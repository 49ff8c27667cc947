#!/usr/bin/env python
"""Where to cut: the frozen head, the cut recipe at several depths and full fine-tuning, chosen on validation.

    python benchmarks/cut.py            # full: all photos, seeds 0 1 2 (~35 min on a quiet 2-core CPU)
    python benchmarks/cut.py --quick    # a check that everything runs: 40 photos per class, seeds 0 1 (~5 min)
    python benchmarks/cut.py --report outputs/benchmarks/cut-<time>.json   # the tables and the rule again

Each candidate is trained on each seed (the seed changes the split, the head's start and which view each
epoch draws; a photo's views are made from the photo itself) in its own process, the way `tlcourse train`
does it (every photo decoded first, the recipe, the validation and test logits, calibration, the
checkpoint). On the first seed the candidate's cache is empty, so its wall time is the cold time; later
seeds reuse that cache (a photo's activations do not depend on the seed), so their times are not cold
times, while their figures are as good as any. Peak resident memory is read by the process itself. Each
checkpoint is then judged on its seed's validation photos as they are and under each of the robustness
report's changes (cross-entropy and accuracy). The decision rule (tlcourse.cut.choose_recipe, printed before the numbers) picks a
candidate from those validation figures alone; the field test is printed once per candidate after
the choice and never enters it. Figures go to <TLCOURSE_OUTPUT>/benchmarks/cut-<time>/cut.json, rewritten
after every seed; each cold run's own figures stay in its folder there, so `--resume` goes on after an interruption.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from figures import load_average  # benchmarks/ is on sys.path when this script runs

import numpy as np
import torch

RESULT = "CUT_RESULT "
RULE = ("Rule, stated before the numbers: each candidate's figure is its validation loss (cross-entropy), "
        "averaged over the validation photos as they are and under each of the robustness report's changes, "
        "one figure per seed. Candidates are listed cheapest first. The best is the lowest mean over seeds; "
        "the cheapest candidate whose mean is within one standard deviation over seeds of the best's "
        "(the larger of the two deviations) is chosen: a costlier recipe wins only when validation clearly "
        "says so. The field test is shown after the choice and never enters it.")


def candidates(quick: bool) -> list[tuple[str, dict]]:
    """``(name, recipe)`` cheapest first (by what learns); ``reference`` rows are timed and judged, not chosen."""
    from tlcourse.cut import CUT_POINTS
    from tlcourse.recipes import VIEWS

    out = [("frozen head, clean features (--views 0)", {"method": "freeze", "views": 0, "reference": True}),
           (f"frozen head, clean + {VIEWS} views (today's default)", {"method": "freeze"})]
    for cut in reversed(CUT_POINTS["mobilenet_v2"]):  # the shallowest top (cheapest) first
        out.append((f"cut at {cut}, clean + {VIEWS} views", {"method": "cut", "cut": cut}))
    out.append(("head, then 2 epochs of the whole network (--method discriminative)", {"method": "discriminative"}))
    return out


# --------------------------------------------------------------------------- one cold run (child process)
def child(recipe: dict, seed: int, per_class: int | None, out: Path, cache: Path) -> dict:
    """Train one recipe as `tlcourse train` would, save the checkpoint; the figures of the run."""
    from torch.utils.data import DataLoader, TensorDataset

    from tlcourse.calibration import calibrate, collect_logits
    from tlcourse.checkpoint import save_checkpoint
    from tlcourse.config import get_config
    from tlcourse.cut import cut_activations, split_at, train_cut
    from tlcourse.data import find_classes, load_course_data
    from tlcourse.features import compute_features
    from tlcourse.models import build_model
    from tlcourse.recipes import train_discriminative, train_frozen
    from tlcourse.training import seed_everything

    config = get_config()
    seed_everything(seed)
    classes = find_classes(config.data_dir)
    model = build_model(len(classes), weights="DEFAULT", offline=config.offline)
    data = load_course_data(config.data_dir, model.transform_settings, seed=seed, per_class=per_class,
                            check="decode", exclusions=config.excluded_csv)
    views = {"views": recipe["views"]} if "views" in recipe else {}
    if recipe["method"] == "freeze":
        history = train_frozen(model, data, seed=seed, cache_dir=cache, verbose=False, **views)
        sets = compute_features(model, data, ("val", "test"), cache_dir=cache)
        net, loaders = model.head, {part: sets[part].loader(32) for part in sets}
    elif recipe["method"] == "cut":
        history = train_cut(model, data, recipe["cut"], seed=seed, cache_dir=cache, verbose=False)
        net, loaders = split_at(model, recipe["cut"])[1], {}
        for part in ("val", "test"):
            found = cut_activations(model, recipe["cut"], list(data.part(part)["file_path"]),
                                    list(data.part(part)["label"]), cache_dir=cache)
            loaders[part] = DataLoader(TensorDataset(found.values[:, 0], found.labels), batch_size=32)
    else:
        train_frozen(model, data, epochs=5, seed=seed, cache_dir=cache, verbose=False)
        history = train_discriminative(model, data, epochs=2, seed=seed)
        net, loaders = model, {part: data.loader(part, 32) for part in ("val", "test")}
    val_logits, val_labels = collect_logits(net, loaders["val"])
    calibration = calibrate(val_logits, val_labels)
    test_logits, test_labels = collect_logits(net, loaders["test"])
    save_checkpoint(out, model, data.classes, history, extra={**recipe, "seed": seed,
                                                               "calibration": calibration.to_dict()})
    return {"val_paths": list(data.part("val")["file_path"]), "val_labels": [int(y) for y in data.part("val")["label"]],
            "classes": data.classes, "sizes": data.split.sizes(), "best_epoch": history.best_epoch,
            "test_accuracy": float((test_logits.argmax(1) == test_labels).float().mean()),
            "peak_mb": peak_memory_mb()}


def peak_memory_mb() -> float:
    """This process's peak resident memory: Linux's VmHWM (ru_maxrss would also count the parent's
    memory at the fork, which Linux keeps across exec), else ru_maxrss."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB on Linux


def cold_run(recipe: dict, seed: int, per_class: int | None, work: Path, cache: Path) -> dict:
    """:func:`child` in a fresh process with its own output folder and the candidate's cache folder (empty
    for the first seed: a cold run; later seeds reuse what the earlier ones computed): figures, wall time."""
    work.mkdir(parents=True)
    env = {**os.environ, "TLCOURSE_OUTPUT": str(work / "outputs")}
    command = [sys.executable, __file__, "--child", json.dumps(recipe), "--seed", str(seed),
               "--out", str(work / "model.pt"), "--cache", str(cache)]
    if per_class:
        command += ["--per-class", str(per_class)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith(RESULT))
    return {**json.loads(line[len(RESULT):]), "seconds": seconds, "checkpoint": str(work / "model.pt")}


# --------------------------------------------------------------------------- judging on validation
@torch.inference_mode()
def judge(checkpoints: dict[str, str], paths: list[str], labels: list[int], changes) -> dict[str, dict]:
    """Per checkpoint: loss and accuracy on the photos under each change (the first: none).

    Models that share the pretrained layers below the lowest cut are judged on those layers' activations,
    computed once per change; the others (full fine-tuning) with their own whole forward.
    """
    from tlcourse.checkpoint import load_checkpoint
    from tlcourse.config import get_config
    from tlcourse.cut import CUT_POINTS, fast_bottom, split_at
    from tlcourse.data import eval_transform, load_image
    from tlcourse.features import backbone_fingerprint
    from tlcourse.inference import FastModel
    from tlcourse.models import build_model

    reference = build_model(2, weights="DEFAULT", offline=get_config().offline).eval()
    low = CUT_POINTS[reference.backbone_name][0]
    shared = backbone_fingerprint(split_at(reference, low)[0])
    bottom, transform = fast_bottom(reference, low), eval_transform(reference.transform_settings)
    nets = {}
    for name, path in checkpoints.items():
        model, _ = load_checkpoint(path)
        same = backbone_fingerprint(split_at(model, low)[0]) == shared
        nets[name] = (split_at(model, low)[1].eval(), True) if same else (FastModel(model), False)
    y = torch.as_tensor(labels)
    images = [load_image(p) for p in paths]
    out = {name: {"loss": [], "accuracy": []} for name in checkpoints}
    for change in changes:
        logits = {name: [] for name in checkpoints}
        for i in range(0, len(images), 32):
            x = torch.stack([transform(change.apply(image)) for image in images[i:i + 32]])
            at_cut = bottom(x)
            for name, (net, on_cut) in nets.items():
                logits[name].append(net(at_cut if on_cut else x))
        for name in checkpoints:
            z = torch.cat(logits[name])
            out[name]["loss"].append(float(torch.nn.functional.cross_entropy(z, y)))
            out[name]["accuracy"].append(float((z.argmax(1) == y).float().mean()))
    return out


# --------------------------------------------------------------------------- the report
def decide(rows: list[dict]) -> tuple[str, str]:
    from tlcourse.cut import choose_recipe

    return choose_recipe({r["name"]: [float(np.mean(s["loss"])) for s in r["seeds"]]
                          for r in rows if not r["reference"]})


def report(saved: dict) -> str:
    rows, meta = saved["rows"], saved["meta"]
    seeds = [s["seed"] for s in rows[0]["seeds"]]  # the seeds run so far (the figures are rewritten after each)
    out = [f"Where to cut ({meta['mode']}): {meta['photos']} photos, seeds {', '.join(map(str, seeds))}; "
           f"{meta['machine']}; load average {meta['load_before']} before, {meta['load_after']} after.", "",
           RULE, "",
           "| candidate | time, s: cold (first seed); with the first seed's cache (later seeds) | peak memory | validation loss | validation accuracy | "
           "loss under changes (mean +- sd; per seed) | accuracy under changes |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        under = [float(np.mean(s["loss"])) for s in r["seeds"]]
        times = [s["seconds"] for s in r["seeds"]]
        sd = float(np.std(under, ddof=1)) if len(under) > 1 else 0.0
        out.append(
            f"| {r['name']}{' (reference, not a candidate)' if r['reference'] else ''} | "
            f"{times[0]:.0f}; {', '.join(f'{t:.0f}' for t in times[1:]) or '-'} | "
            f"{max(s['peak_mb'] for s in r['seeds']):.0f} MB | {np.mean([s['loss'][0] for s in r['seeds']]):.4f} | "
            f"{100 * np.mean([s['accuracy'][0] for s in r['seeds']]):.1f}% | {np.mean(under):.4f} +- {sd:.4f}; "
            f"{' / '.join(f'{u:.4f}' for u in under)} | "
            f"{100 * np.mean([np.mean(s['accuracy']) for s in r['seeds']]):.2f}% |")
    name, reason = decide(rows)
    out += ["", f"**Decision: {name}.** {reason}.", "",
            "Field test, shown after the choice (balanced accuracy per seed; it did not enter the choice):", ""]
    for r in rows:
        field = [s["field_balanced"] for s in r["seeds"]]
        out.append(f"- {r['name']}: {' / '.join(f'{100 * f:.1f}%' for f in field)} (mean {100 * np.mean(field):.1f}%)")
    return "\n".join(out)


def field_balanced(checkpoints: dict[str, str], table, classes) -> dict[str, float]:
    """Balanced accuracy of each checkpoint on the field test (its own whole forward)."""
    from tlcourse.checkpoint import load_checkpoint
    from tlcourse.data import CSVDataset, eval_transform, make_loader
    from tlcourse.evaluation import predict
    from tlcourse.features import for_predictions
    from tlcourse.fieldtest import balanced_accuracy

    out = {}
    for name, path in checkpoints.items():
        model, _ = load_checkpoint(path)
        loader = make_loader(CSVDataset(table, eval_transform(model.transform_settings)))
        frame = predict(for_predictions(model), loader)
        out[name] = balanced_accuracy(frame["label"].to_numpy(), frame["pred"].to_numpy(), len(classes))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="40 photos per class, seeds 0 and 1 (~5 min)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1 2; quick: 0 1)")
    parser.add_argument("--report", metavar="JSON", help="print the tables and the decision of a saved run again")
    parser.add_argument("--resume", metavar="FOLDER", help="go on with an interrupted run in FOLDER (its runs are kept)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--per-class", type=int, help="photos per class (default all; quick: 40)")
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        result = child(json.loads(options.child), options.seed, options.per_class, Path(options.out), Path(options.cache))
        print(RESULT + json.dumps(result))
        return
    if options.report:
        print(report(json.loads(Path(options.report).read_text())))
        return
    from tlcourse.config import get_config
    from tlcourse.data import label_folder
    from tlcourse.robustness import DEFAULT_CHANGES

    cfg, quick = get_config(), options.quick
    seeds = options.seeds or ([0, 1] if quick else [0, 1, 2])
    per_class = options.per_class or (40 if quick else None)
    print(RULE, file=sys.stderr, flush=True)
    rows = [{"name": name, "recipe": recipe, "reference": recipe.pop("reference", False), "seeds": []}
            for name, recipe in candidates(quick)]
    # Each cold run keeps its figures in its own folder, and the report is rewritten after every seed: an
    # interrupted run loses at most the run under way, and `--resume` goes on from the folder.
    work = Path(options.resume) if options.resume else \
        cfg.output_dir / "benchmarks" / f"cut-{dt.datetime.now():%Y%m%d-%H%M%S}"
    work.mkdir(parents=True, exist_ok=True)
    saved_path = work / "cut.json"
    meta = {"mode": ("quick" if quick else "full") + (f", {per_class} photos per class" if per_class else ""),
            "seeds": seeds, "photos": 0, "changes": [c.name for c in DEFAULT_CHANGES], "rule": RULE,
            "load_before": load_average(),
            "machine": f"{os.cpu_count()} CPUs ({platform.machine()}), torch {torch.__version__} with "
                       f"{torch.get_num_threads()} threads, Python {platform.python_version()}"}
    field = None
    for seed in seeds:
        runs = {}
        for number, row in enumerate(rows):
            folder = work / f"{seed}-{number}"
            done = folder / "run.json"
            if done.is_file():
                runs[row["name"]] = json.loads(done.read_text())
                print(f"  seed {seed}: {row['name']}: kept from an earlier run", file=sys.stderr, flush=True)
                continue
            shutil.rmtree(folder, ignore_errors=True)  # a run that was interrupted starts again, cold
            print(f"  seed {seed}: {row['name']} ...", file=sys.stderr, flush=True)
            runs[row["name"]] = cold_run(row["recipe"], seed, per_class, folder, work / f"cache-{number}")
            done.write_text(json.dumps(runs[row["name"]]))
            print(f"    {runs[row['name']]['seconds']:.0f} s, peak {runs[row['name']]['peak_mb']:.0f} MB",
                  file=sys.stderr, flush=True)
        first = next(iter(runs.values()))
        meta["photos"] = sum(first["sizes"].values())
        checkpoints = {name: run["checkpoint"] for name, run in runs.items()}
        judged = judge(checkpoints, first["val_paths"], first["val_labels"], DEFAULT_CHANGES)
        # The field test: computed now (beside the checkpoints), printed after the choice only.
        field = label_folder(cfg.field_test_dir, first["classes"]) if field is None else field
        balanced = field_balanced(checkpoints, field, first["classes"])
        for row in rows:
            run = runs[row["name"]]
            row["seeds"].append({"seed": seed, "seconds": run["seconds"], "peak_mb": run["peak_mb"],
                                 "best_epoch": run["best_epoch"], "test_accuracy": run["test_accuracy"],
                                 **judged[row["name"]], "field_balanced": balanced[row["name"]]})
        meta["load_after"] = load_average()
        saved = {"meta": meta, "rows": rows, "decision": dict(zip(("name", "reason"), decide(rows)))}
        saved_path.write_text(json.dumps(saved, indent=1))
        print(f"  seed {seed} judged; figures so far: {saved_path}", file=sys.stderr, flush=True)
    print(report(saved))
    print(f"\nFigures: {saved_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
