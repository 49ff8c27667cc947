"""How much slower is training with the live dashboard on? Prints both times and the ratio.

Runs inside a real Jupyter kernel (started with jupyter_client), so the widgets
mode does everything it does in JupyterLab: renders the curves and the sample
photo, and sends every widget update over the kernel's sockets (this script
plays the front end and receives them). The same weight-freezing run (the
lesson's ``train_frozen`` on a subset of the photos, MobileNetV2 with its
ImageNet weights) is timed with no dashboard, with the text dashboard and with
the widgets dashboard, interleaved (off, text, widgets, widgets, text, off, ...)
so that a change in machine load hits all three alike. Imports and the first
matplotlib figure are warmed up before timing.

    python benchmarks/dashboard_overhead.py [--per-class 100] [--epochs 2] [--repeats 2]

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
import time
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
def run(mode):
    model = copy.deepcopy(base)
    callbacks = [] if mode == "off" else [TrainingDashboard(data.classes, settings=model.transform_settings,
                                                             title="benchmark", mode=mode)]
    wall, cpu = time.perf_counter(), time.process_time()
    history = train_frozen(model, data, epochs={epochs}, batch_size={batch_size}, callbacks=callbacks)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    extra = {{"draws": callbacks[0].draws, "draw_s": callbacks[0].draw_seconds}} if mode == "widgets" else {{}}
    print("RESULT " + json.dumps(dict(mode=mode, wall=wall, cpu=cpu, val_acc=history.epochs[-1]["val_acc"], **extra)))
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
    parser.add_argument("--per-class", type=int, default=100, help="photos per class (default 100)")
    parser.add_argument("--epochs", type=int, default=2)
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

    try:
        print(f"Dashboard overhead: train_frozen, {args.per_class} photos/class, {args.epochs} epochs, "
              f"batch {args.batch_size}, {args.repeats} rounds, {args.threads} torch threads", flush=True)
        execute(SETUP.format(data_dir=_data_dir(), per_class=args.per_class, epochs=args.epochs,
                             batch_size=args.batch_size, threads=args.threads))
        execute('run("off")')  # one untimed run: caches, allocator, lazy imports
        results.clear()
        orders = [("off", "text", "widgets"), ("widgets", "text", "off")]
        for i in range(args.repeats):
            for mode in orders[i % 2]:
                execute(f'run("{mode}")')
                r = results[-1]
                print(f"  {mode:8s} {r['wall']:7.2f} s wall  {r['cpu']:7.2f} s cpu"
                      + (f"  ({r['draws']} draws, {r['draw_s']:.2f} s drawing)" if mode == "widgets" else ""),
                      flush=True)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

    def median(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results if r["mode"] == mode)

    print("\nmode       wall (median)   cpu (median)   wall ratio   cpu ratio")
    for mode in ("off", "text", "widgets"):
        print(f"{mode:8s} {median(mode, 'wall'):10.2f} s {median(mode, 'cpu'):12.2f} s "
              f"{median(mode, 'wall') / median('off', 'wall'):12.3f} {median(mode, 'cpu') / median('off', 'cpu'):11.3f}")
    print(f"\nwidgets dashboard on / off: {median('widgets', 'wall') / median('off', 'wall'):.3f} (wall time), "
          f"{median('widgets', 'cpu') / median('off', 'cpu'):.3f} (kernel CPU time); target <= 1.05")


def torch_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


if __name__ == "__main__":
    main()
