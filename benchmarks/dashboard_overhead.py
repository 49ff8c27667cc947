"""How much slower is training with the live dashboard on? Prints the times side by side and the ratios.

Runs inside a real Jupyter kernel (started with jupyter_client), so the widgets
mode does everything it does in JupyterLab: builds its widgets, draws the curves
and the sample photo, and sends every widget update over the kernel's sockets
(this script plays the front end and receives them). Three workloads, each timed
with no dashboard, with the text dashboard and with the widgets dashboard,
interleaved (off, text, widgets, then widgets, text, off, ...) so that a change in
machine load hits all three alike:

* lesson 3's training cell once its features are cached: ``train_frozen`` on all
  the photos, 10 epochs, batch 32 (what a learner re-runs; under a second);
* the backbone run on every batch (``cache=False``, a subset, 10 epochs; at least 30 s):
  the slow kind of training where the dashboard is watched longest;
* a deliberately tiny cached run (a subset, 20 epochs, about 0.1 s), shorter than
  the dashboard's own fixed cost: its ratio shows that cost, not a typical run.

Besides wall times, each widgets run also reports the time spent inside the
dashboard's callbacks (its own work in the training loop, measured directly
and much less disturbed by other programs than a difference of two wall times).
Imports and the first use of each module are warmed up before timing.

    python benchmarks/dashboard_overhead.py [--repeats 2] [--fast-repeats 15]

Reads TLCOURSE_DATA (default: data/ or ../shared/data/dogs-vs-hotdogs) and
TORCH_HOME like the course. No assertion; the target: on a run of at least 30 s
the dashboard costs at most 5 %, and on any run at most 0.5 s in all.
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

class TimedDashboard(TrainingDashboard):
    '''The dashboard, with the time spent in its callbacks added up.'''
    spent = 0.0
def _timed(name):
    method = getattr(TrainingDashboard, name)
    def timed(self, state):
        start = time.perf_counter()
        try:
            method(self, state)
        finally:
            self.spent += time.perf_counter() - start
    return timed
for _name in ("on_train_begin", "on_epoch_begin", "on_batch_end", "on_epoch_end", "on_train_end"):
    setattr(TimedDashboard, _name, _timed(_name))

base = build_model(2)
datasets = {{"all": load_course_data({data_dir!r}, base.transform_settings, seed=0),
            "subset": load_course_data({data_dir!r}, base.transform_settings, seed=0, per_class={per_class})}}
def run(mode, data_name, cache, epochs, batch_size):
    data = datasets[data_name]
    model = copy.deepcopy(base)
    callbacks = [] if mode == "off" else [TimedDashboard(data.classes, settings=model.transform_settings,
                                                          dataset=data.dataset("train"), title="benchmark", mode=mode)]
    wall, cpu = time.perf_counter(), time.process_time()
    train_frozen(model, data, epochs=epochs, batch_size=batch_size, cache=cache, cache_dir=False,
                 verbose=False, callbacks=callbacks)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    extra = {{"draws": callbacks[0].draws, "draw_s": callbacks[0].draw_seconds,
             "own_s": callbacks[0].spent}} if mode == "widgets" else {{}}
    print("RESULT " + json.dumps(dict(mode=mode, wall=wall, cpu=cpu, **extra)))
print("READY", {{name: data.split.sizes() for name, data in datasets.items()}})
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
    parser.add_argument("--per-class", type=int, default=60, help="photos per class of the subset (default 60)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the slow (uncached) workload")
    parser.add_argument("--fast-repeats", type=int, default=15, help="rounds of each cached workload")
    parser.add_argument("--slow-epochs", type=int, default=10, help="epochs of the slow workload (>= 30 s)")
    parser.add_argument("--only-slow", action="store_true", help="only the slow workload (skips caching all photos)")
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

    # (label, data, cache, epochs, batch size, rounds)
    workloads = [
        ("lesson 3's cell, features cached: all photos, 10 epochs", "all", True, 10, 32, args.fast_repeats),
        (f"backbone on every batch (cache=False): subset, {args.slow_epochs} epochs", "subset", False,
         args.slow_epochs, 16, args.repeats),
        ("tiny cached run: subset, 20 epochs (shows the fixed cost)", "subset", True, 20, 16, args.fast_repeats),
    ]
    if args.only_slow:
        workloads = workloads[1:2]
    load = os.getloadavg()
    summary: list[tuple[str, dict[str, float]]] = []
    try:
        print(f"Dashboard overhead, in a Jupyter kernel; {os.cpu_count()} CPUs, load average "
              f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} before", flush=True)
        execute(SETUP.format(data_dir=_data_dir(), per_class=args.per_class))
        for name in ("subset",) if args.only_slow else ("all", "subset"):  # untimed: caches features, warms up
            for mode in ("off", "widgets"):
                execute(f"run({mode!r}, {name!r}, True, 1, 32)")
        execute("run('widgets', 'subset', False, 1, 16)")
        results.clear()
        orders = [("off", "text", "widgets"), ("widgets", "text", "off")]
        for label, data, cache, epochs, batch_size, rounds in workloads:
            print(f"\n{label}, {rounds} rounds:", flush=True)
            first = len(results)
            for i in range(rounds):
                for mode in orders[i % 2]:
                    execute(f"run({mode!r}, {data!r}, {cache}, {epochs}, {batch_size})")
                    r = results[-1]
                    if rounds <= 4 or i == 0:
                        print(f"  {mode:8s} {r['wall']:7.3f} s wall  {r['cpu']:7.3f} s cpu"
                              + (f"  (own {1000 * r['own_s']:.1f} ms, {r['draws']} draws {1000 * r['draw_s']:.1f} ms)"
                                 if mode == "widgets" else ""), flush=True)
            summary.append((label, _report(results[first:])))
            time.sleep(0.5)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

    print("\nSummary (medians; target: <= 5 % on a run of >= 30 s, <= 0.5 s on any run):")
    print("| workload | off | text | widgets | widgets / off (wall) | widgets - off | dashboard's own time |")
    print("|---|---|---|---|---|---|---|")
    for label, s in summary:
        print(f"| {label} | {s['off']:.3f} s | {s['text']:.3f} s | {s['widgets']:.3f} s | **{s['ratio']:.3f}** "
              f"| {s['widgets'] - s['off']:+.3f} s | {1000 * s['own']:.1f} ms ({s['own'] / s['off']:.1%} of off) |")
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} after")


def _report(rows: list[dict]) -> dict[str, float]:
    def median(mode: str, key: str = "wall") -> float:
        return statistics.median(r[key] for r in rows if r["mode"] == mode)

    s = {mode: median(mode) for mode in ("off", "text", "widgets")}
    s["ratio"] = s["widgets"] / s["off"]
    s["cpu_ratio"] = median("widgets", "cpu") / median("off", "cpu")
    s["own"] = median("widgets", "own_s")
    print("  medians: " + "  ".join(f"{mode} {s[mode]:.3f} s" for mode in ("off", "text", "widgets"))
          + f"  -> widgets/off {s['ratio']:.3f} (wall), {s['cpu_ratio']:.3f} (kernel CPU); "
          f"dashboard's own time {1000 * s['own']:.1f} ms", flush=True)
    return s


if __name__ == "__main__":
    main()
