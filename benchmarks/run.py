#!/usr/bin/env python
"""Speed benchmark of the course's frozen recipe. Prints Markdown tables; run it with ``make bench``.

    python benchmarks/run.py            # full: all photos, 10 epochs each side (~15 min on a 2-core CPU)
    python benchmarks/run.py --quick    # a check that everything runs: 60 photos per class, 2 epochs (~3 min)

It measures, on the photos in ``TLCOURSE_DATA`` with the real pretrained weights:

1. time to accuracy: the course's frozen recipe (features computed once, nothing cached before the run)
   against a loop written like the official PyTorch transfer-learning tutorial (the frozen backbone
   recomputed every epoch), same split, model, head, optimizer and epochs, one after the other;
2. backbone images/s: the course's forward against a plain ``model(x)`` in default settings, and what
   each option is worth;
3. the original notebook's pipeline (PIL -> numpy/255 -> torch.Tensor, a figure redrawn after every batch)
   against the course's, images/s;
4. the peak memory of each, and the cost of each step of loading a photo.

Every measurement runs in its own Python process (peak memory per measurement, no shared state).
Timings depend on what else the machine is doing: the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from figures import load_average  # benchmarks/ is on sys.path when this script runs

HERE = Path(__file__).resolve().parent
RESULT_PREFIX = "BENCH_RESULT "


# --------------------------------------------------------------------------- running stages
def run_stage(name: str, cfg: dict) -> dict:
    """Run one stage in a fresh process and return its result."""
    started = time.perf_counter()
    print(f"  {name}{' (' + cfg['variant'] + ')' if 'variant' in cfg else ''} ...", end="", file=sys.stderr,
          flush=True)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--stage", name, "--config",
                           json.dumps(cfg)], capture_output=True, text=True)
    print(f" {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"Benchmark stage {name!r} failed (exit code {proc.returncode}); its output is above.")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def stage_main(name: str, cfg: dict) -> None:
    """Inside the stage's process: run it and print its result as one JSON line."""
    sys.path.insert(0, str(HERE))
    from stages import STAGES

    result = STAGES[name](cfg)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- formatting
def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def mem(r: dict) -> str:
    return f"{r['peak_rss_mb']:.0f} MB (+{r['peak_rss_mb'] - r['base_rss_mb']:.0f})"


def report(res: dict, cfg: dict, meta: dict) -> str:
    """The results as Markdown; sections whose stages did not run are left out."""
    photos = res["recipe"]["photos"] if "recipe" in res else ("all" if not cfg["quick"] else 2 * cfg["per_class"])
    out = [f"Benchmark ({'quick' if cfg['quick'] else 'full'}): {photos} photos, "
           f"{cfg['epochs']} epochs, batch {cfg['batch_size']}, seed {cfg['seed']}, {meta['backbone']} "
           f"with pretrained weights; {meta['machine']}; load average {meta['load_before']} before, "
           f"{meta['load_after']} after."]

    if "recipe" in res and "reference" in res:
        out += _time_to_accuracy(res, cfg)
    if "forward_plain" in res and "forward_course" in res:
        out += _forward(res)
    if "forward_options" in res:
        out += _forward_options(res)
    if "pipeline_original" in res and "pipeline_course" in res:
        out += _pipeline(res)
    if "decode" in res and "loading" in res:
        out += _loading(res)
    out += ["", "Memory: peak resident set size of the measuring process (`getrusage` maxrss: Python objects, "
            "weights, tensors, decoded photos, figures); `+work` is the part above the resident size after "
            "imports and model loading."]
    return "\n".join(out)


def _time_to_accuracy(res: dict, cfg: dict) -> list[str]:
    course, ref = res["recipe"], res["reference"]
    ratio = ref["seconds"] / course["seconds"]  # the times as measured (the reference's may cover fewer epochs)
    out, projected_ratio = [], ratio
    if ref["epochs"] < cfg["epochs"]:
        # The reference was cut short by --reference-budget: compare at the epochs it ran, and project.
        k = ref["epochs"]
        per_epoch = sum(ref["epoch_seconds"]) / k
        projected = ref["seconds"] + per_epoch * (cfg["epochs"] - k)
        course_k = course["test_acc_by_epochs"][str(k)]
        out += ["", f"**The reference ran {k} of {cfg['epochs']} epochs** (its time budget, --reference-budget or --finish-by). "
                f"At {k} epochs: course {pct(course_k)}, reference {pct(ref['test_acc'])} test accuracy "
                f"(difference {100 * abs(course_k - ref['test_acc']):.1f} pp). Projected {cfg['epochs']}-epoch "
                f"reference time from its measured epochs: {projected:.0f} s, "
                f"{projected / course['seconds']:.1f}x the course's {cfg['epochs']}-epoch time."]
        projected_ratio = projected / course["seconds"]
    out += ["", "### 1. Time to accuracy (from the folder of JPEGs to a trained head)", "", table(
        ["", "wall time", "test accuracy", "best val accuracy", "peak memory (RSS, +work)"],
        [[f"course: frozen recipe, features computed once (cold cache), {course['epochs']} epochs",
          f"{course['seconds']:.1f} s (features {course['feature_seconds']:.1f} s at "
          f"{course['photos_per_s']:.0f} photos/s; views and head {course['head_seconds']:.1f} s)",
          pct(course["test_acc"]), pct(course["val_acc"]), mem(course)],
         [f"reference: tutorial loop, backbone recomputed every epoch, {ref['epochs']} epochs",
          f"{ref['seconds']:.1f} s ({sum(ref['epoch_seconds']) / len(ref['epoch_seconds']):.1f} s/epoch)",
          pct(ref["test_acc"]), pct(ref["val_acc"]), mem(ref)],
         ["ratio (reference / course, as measured)", f"**{ratio:.1f}x faster**",
          f"difference {100 * abs(course['test_acc'] - ref['test_acc']):.1f} pp", "", ""]])]
    if not cfg["quick"]:
        ok = course["test_acc"] >= 0.98 and course["seconds"] <= 60
        out += ["", f"Course recipe: {pct(course['test_acc'])} test accuracy ({course['n_test']} test photos) in "
                f"{course['seconds']:.1f} s -> target (>= 98% in <= 60 s) {'met' if ok else 'NOT met'}; "
                f"speed-up {projected_ratio:.1f}x at {cfg['epochs']} epochs{' (projected)' if projected_ratio != ratio else ''} "
                f"(target >= 10x: {'met' if projected_ratio >= 10 else 'NOT met'})."]
    return out


def _forward(res: dict) -> list[str]:
    plain, fast = res["forward_plain"], res["forward_course"]
    return ["", f"### 2. Backbone forward, images/s ({fast['images']} real photos, batch {fast['batch_size']})", "", table(
                ["forward", "images/s", "peak memory (RSS, +work)"],
                [[f"plain `model(x)`, default settings ({plain['torch_threads']} threads)",
                  f"{plain['images_per_s']:.1f}", mem(plain)],
                 [f"course: `FastBackbone` (inference_mode, channels_last, BatchNorm folded), "
                  f"{fast['torch_threads']} thread(s)",
                  f"{fast['images_per_s']:.1f} ({fast['images_per_s'] / plain['images_per_s']:.1f}x)", mem(fast)]])]


def _forward_options(res: dict) -> list[str]:
    opts = res["forward_options"]["images_per_s"]
    first = next(iter(opts.values()))
    return ["", "What each option is worth (interleaved in one process, best of repeats):", "", table(
        ["variant", "images/s", "vs default"], [[k, f"{v:.1f}", f"{v / first:.2f}x"] for k, v in opts.items()])]


def _pipeline(res: dict) -> list[str]:
    orig, ours = res["pipeline_original"], res["pipeline_course"]
    return ["", f"### 3. Pipeline: one training pass over {orig['photos']} photos, images/s", "", table(
        ["pipeline", "images/s", "peak memory (RSS, +work)"],
        [["original notebook: PIL -> numpy/255 -> torch.Tensor, batch 16, figure redrawn every batch",
          f"{orig['images_per_s']:.1f}", mem(orig)],
         ["course: fast forward into the feature cache (photos decoded between batches), then a head epoch",
          f"{ours['images_per_s']:.1f} ({ours['images_per_s'] / orig['images_per_s']:.1f}x)", mem(ours)]])]


def _loading(res: dict) -> list[str]:
    decode, loading = res["decode"]["ms_per_photo"], res["loading"]["images_per_s"]
    return ["", f"### 4. Loading a photo (median ms per photo over {res['decode']['photos']} photos)", "", table(
        ["step", "ms/photo"], [[k, f"{v:.2f}"] for k, v in decode.items()]),
        "", f"Feature extraction from files (decode + forward), images/s; the course uses "
        f"{res['loading']['course_setting']}:", "", table(
            ["threads", "images/s"], [[k, f"{v:.1f}"] for k, v in loading.items()])]


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="60 photos per class, 2 epochs: checks it all runs")
    parser.add_argument("--data", help="photo folder (default: TLCOURSE_DATA)")
    parser.add_argument("--epochs", type=int, help="epochs for both recipes (default 10, quick 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the raw results here (default: <TLCOURSE_OUTPUT>/benchmarks/)")
    parser.add_argument("--reference-budget", type=float,
                        help="seconds the reference loop may take; it stops after the last epoch that fits "
                             "and is compared with the course at the same epochs (default: no limit)")
    parser.add_argument("--finish-by", help="local time HH:MM by which the run must end: the reference loop, run "
                                             "last, gets the time left as its budget (see --reference-budget)")
    parser.add_argument("--stages", help="comma-separated subset, e.g. recipe,reference (default: all)")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        stage_main(args.stage, json.loads(args.config))
        return 0

    sys.path.insert(0, str(HERE.parent))
    from tlcourse.config import get_config

    config = get_config()
    data_dir = Path(args.data) if args.data else config.data_dir
    if not data_dir.is_dir():
        raise SystemExit(f"No photos at {data_dir}: run `make data`, or set TLCOURSE_DATA / pass --data.")
    cfg = {
        "quick": args.quick, "data_dir": str(data_dir), "seed": args.seed, "batch_size": 32,
        "epochs": args.epochs or (2 if args.quick else 10), "per_class": 60 if args.quick else None,
        "backbone": "mobilenet_v2", "forward_images": 32 if args.quick else 96, "repeats": 2 if args.quick else 3,
        "decode_images": 30 if args.quick else 100, "pipeline_images": 64 if args.quick else 256,
        "loading_images": 32 if args.quick else 96, "reference_budget": args.reference_budget,
    }
    import torch

    meta = {
        "backbone": cfg["backbone"], "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), torch {torch.__version__}"
                   f" with {torch.get_num_threads()} threads, Python {platform.python_version()}",
        "load_before": load_average(),
    }
    print(f"Running the benchmark ({'quick' if args.quick else 'full'}); each line is one measurement:",
          file=sys.stderr)
    out = Path(args.json) if args.json else config.output_dir / "benchmarks" / (
        f"bench-{'quick' if args.quick else 'full'}-{dt.datetime.now():%Y%m%d-%H%M%S}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    # The side-by-side comparison first: it matters most and takes longest.
    # The course's recipe first; the reference loop, by far the longest, last (so --finish-by can cut it short).
    plan = {
        "recipe": ("recipe", {}),
        "forward_plain": ("forward", {"variant": "plain"}), "forward_course": ("forward", {"variant": "course"}),
        "pipeline_original": ("pipeline", {"variant": "original"}),
        "pipeline_course": ("pipeline", {"variant": "course"}),
        "decode": ("decode", {}), "loading": ("loading", {}), "forward_options": ("forward_options", {}),
        "reference": ("reference", {}),
    }
    wanted = args.stages.split(",") if args.stages else list(plan)
    unknown = sorted(set(wanted) - set(plan))
    if unknown:
        raise SystemExit(f"Unknown stage(s) {unknown}; choose from {', '.join(plan)}.")
    res: dict = {}
    for key in wanted:
        stage, extra = plan[key]
        if key == "reference" and args.finish_by:
            hour, minute = map(int, args.finish_by.split(":"))
            end = dt.datetime.now().replace(hour=hour, minute=minute, second=0, microsecond=0)
            left = (end - dt.datetime.now()).total_seconds() - 120  # start-up and the test pass
            budget = left if cfg["reference_budget"] is None else min(left, cfg["reference_budget"])
            extra = {**extra, "reference_budget": max(budget, 1.0)}
        res[key] = run_stage(stage, {**cfg, **extra})
        # Saved after every stage: an interrupted run keeps what it measured.
        out.write_text(json.dumps({"config": cfg, "meta": meta, "results": res}, indent=2))
    meta["load_after"] = load_average()
    text = report(res, cfg, meta)
    print(text)
    out.write_text(json.dumps({"config": cfg, "meta": meta, "results": res, "report": text}, indent=2))
    print(f"\nRaw results: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
