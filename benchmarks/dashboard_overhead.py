"""How much slower is training with the live dashboard on? Prints both times and the ratio.

Runs inside a real Jupyter kernel (started with jupyter_client), so the widgets
mode does everything it does in JupyterLab: renders the curves and the sample
photo, and sends every widget update over the kernel's sockets (this script
plays the front end and receives them). The same weight-freezing run (the
lesson's ``train_frozen`` on a subset of the photos, MobileNetV2 with its
ImageNet weights), once recomputing the backbone on every batch and once on
cached features (where a run lasts about a second and the dashboard's fixed
costs, not its redraws, dominate) is timed with no dashboard, with the text dashboard and with
the widgets dashboard, interleaved (off, text, widgets, widgets, text, off, ...)
so that a change in machine load hits all three alike. Imports and the first
matplotlib figure are warmed up before timing.

    python benchmarks/dashboard_overhead.py [--per-class 60] [--epochs 2] [--cached-epochs 20] [--repeats 2]

Reads TLCOURSE_DATA (default: data/ or ../shared/data/dogs-vs-hotdogs) and
TORCH_HOME like the course. Wall time is what a learner waits; the kernel's CPU
time is less disturbed by other programs on a busy machine. No assertion: the
issue's target is a ratio of at most 1.05.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from jupyter_client.manager import start_new_kernel

ROOT = Path(__file__).resolve().parents[1]

SETUP = """
import copy, json, os, time, torch
from tlcourse.dashboard import TrainingDashboard
from tlcourse.data import load_course_data
from tlcourse.models import build_model
from tlcourse.recipes import train_frozen
torch.set_num_threads({threads})
base = build_model(2)
data = load_course_data({data_dir!r}, base.transform_settings, seed=0, per_class={per_class})
# Warm up what the first dashboard would otherwise pay for once per session.
import matplotlib.figure, ipywidgets, PIL.Image
TrainingDashboard(data.classes, mode="widgets")  # builds nothing until training begins
def run(mode, cache, epochs):
    model = copy.deepcopy(base)
    callbacks = [] if mode == "off" else [TrainingDashboard(data.classes, settings=model.transform_settings,
                                                             title="benchmark", mode=mode)]
    wall, cpu = time.perf_counter(), time.process_time()
    history = train_frozen(model, data, epochs=epochs, batch_size={batch_size}, cache=cache, cache_dir=False,
                           verbose=False, callbacks=callbacks)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    extra = {{"draws": callbacks[0].draws, "draw_s": callbacks[0].draw_seconds}} if mode == "widgets" else {{}}
    print("RESULT " + json.dumps(dict(mode=mode, cache=cache, wall=wall, cpu=cpu, **extra)))
print("READY", data.split.sizes())
"""


def _data_dir() -> str:
    configured = os.environ.get("TLCOURSE_DATA")
    if configured:
        return configured
    for candidate in (ROOT / "data", ROOT.parent / "shared" / "data" / "dogs-vs-hotdogs"):
        if (candidate / "dog").is_dir():
            return str(candidate)
    sys.exit("No photos found: set TLCOURSE_DATA to the folder with dog/ and hotdog/ (or run make data).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=60, help="photos per class (default 60)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the uncached run (default 2)")
    parser.add_argument("--cached-epochs", type=int, default=20, help="epochs of the cached run (default 20)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="rounds of (off, text, widgets) runs")
    parser.add_argument("--threads", type=int, default=torch_threads(), help="torch threads in the kernel")
    args = parser.parse_args()

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    km, kc = start_new_kernel(kernel_name="python3", env=env, startup_timeout=120)
    results: list[dict] = []

    def execute(code: str) -> None:
        def hook(msg):
            kind = msg["msg_type"]
            if kind == "stream":
                for line in msg["content"]["text"].splitlines():
                    if line.startswith("RESULT "):
                        results.append(json.loads(line[7:]))
                    elif line.startswith("READY"):
                        print(f"  data: {line[6:]}", flush=True)
            elif kind == "error":
                raise RuntimeError("\n".join(msg["content"]["traceback"]))
            # Every other message (widget updates, display data) is received and dropped,
            # as a front end would consume it.
        reply = kc.execute_interactive(code, output_hook=hook, timeout=3600)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"kernel error: {reply['content'].get('evalue')}")

    workloads = [("backbone on every batch (cache=False)", False, args.epochs),
                 ("cached features (the lessons' default)", True, args.cached_epochs)]
    try:
        print(f"Dashboard overhead: train_frozen on {args.per_class} photos/class, batch {args.batch_size}, "
              f"{args.repeats} rounds, {args.threads} torch threads", flush=True)
        execute(SETUP.format(data_dir=_data_dir(), per_class=args.per_class, batch_size=args.batch_size,
                             threads=args.threads))
        execute("run('off', True, 1)")  # untimed: computes the cached features, warms allocator and imports
        results.clear()
        orders = [("off", "text", "widgets"), ("widgets", "text", "off")]
        for label, cache, epochs in workloads:
            print(f"\n{label}, {epochs} epoch(s):", flush=True)
            for i in range(args.repeats):
                for mode in orders[i % 2]:
                    execute(f"run({mode!r}, {cache}, {epochs})")
                    r = results[-1]
                    print(f"  {mode:8s} {r['wall']:7.2f} s wall  {r['cpu']:7.2f} s cpu"
                          + (f"  ({r['draws']} draws, {r['draw_s']:.2f} s drawing)" if mode == "widgets" else ""),
                          flush=True)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

    for label, cache, epochs in workloads:
        def median(mode: str, key: str) -> float:
            return statistics.median(r[key] for r in results if r["mode"] == mode and r["cache"] == cache)

        print(f"\n{label}, {epochs} epoch(s), medians:")
        print("  mode        wall        cpu   wall ratio  cpu ratio  extra wall")
        for mode in ("off", "text", "widgets"):
            print(f"  {mode:8s} {median(mode, 'wall'):7.2f} s {median(mode, 'cpu'):7.2f} s "
                  f"{median(mode, 'wall') / median('off', 'wall'):10.3f} {median(mode, 'cpu') / median('off', 'cpu'):10.3f}"
                  f"  {median(mode, 'wall') - median('off', 'wall'):+8.2f} s")
        print(f"  => widgets dashboard on / off: {median('widgets', 'wall') / median('off', 'wall'):.3f} (wall), "
              f"{median('widgets', 'cpu') / median('off', 'cpu'):.3f} (kernel CPU); target <= 1.05")


def torch_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


if __name__ == "__main__":
    main()
