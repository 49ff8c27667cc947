#!/usr/bin/env python
"""Cold ``tlcourse train``: the default recipe against the others, timed side by side in one run.

    python benchmarks/train_cold.py            # all photos (~8 min on a quiet 2-core CPU; --skip-discriminative: ~3)
    python benchmarks/train_cold.py --quick    # a check that it runs: 40 photos per class

Each row is the real command, ``tlcourse train DATA_DIR [options]``, in its own process with an empty
feature cache and output folder (nothing computed before), as a learner runs it the first time: its
wall time from the start of the process to its exit, and its peak resident memory (the child's own, from
``wait4``). Ratios are to the default's time, measured in the same run. The load average is printed with
the results, since timings depend on what else the machine is doing. Figures also go to
``<TLCOURSE_OUTPUT>/benchmarks/train-cold-<time>.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from figures import load_average, save_figures  # benchmarks/ is on sys.path when this script runs

#: (row, extra arguments of `tlcourse train`), the default first.
ROWS = [
    ("the default (`tlcourse train`)", []),
    ("clean features only (`--views 0`)", ["--views", "0"]),
    ("the top blocks from the default cut (`--method cut`)", ["--method", "cut"]),
    ("the whole network (`--method discriminative`)", ["--method", "discriminative"]),
]


def cold_train(data_dir: str, extra: list[str], per_class: int | None, work: Path) -> dict:
    """One cold `tlcourse train` in a fresh process with an empty output folder (``work/outputs``): wall time,
    peak memory, the accuracies it printed, its stdout and the checkpoint's path."""
    env = {**os.environ, "TLCOURSE_OUTPUT": str(work / "outputs")}
    command = [sys.executable, "-m", "tlcourse", "train", data_dir, "--out", str(work / "model.pt"), *extra]
    if per_class:
        command += ["--per-class", str(per_class)]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit code {os.waitstatus_to_exitcode(status)}):\n{output}")
    figures = dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)
    peak_mb = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB on Linux
    return {"seconds": seconds, "peak_mb": peak_mb, "validation": figures.get("validation accuracy", ""),
            "test": figures.get("test accuracy", ""), "stdout": output, "checkpoint": str(work / "model.pt")}


def report(saved: dict) -> str:
    meta, rows = saved["meta"], saved["rows"]
    default = rows[0]["seconds"]
    out = [f"Cold `tlcourse train` ({meta['mode']}): {meta['machine']}; load average {meta['load_before']} before, "
           f"{meta['load_after']} after.", "",
           "| recipe | cold time | ratio to the default | peak memory | validation accuracy | test accuracy |",
           "|---|---|---|---|---|---|"]
    for row in rows:
        out.append(f"| {row['name']} | {row['seconds']:.1f} s | {row['seconds'] / default:.2f}x | "
                   f"{row['peak_mb']:.0f} MB | {row['validation']} | {row['test']} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="40 photos per class (a check that it runs)")
    parser.add_argument("--skip-discriminative", action="store_true", help="leave out the slowest row")
    options = parser.parse_args()
    from tlcourse.config import get_config

    cfg = get_config()
    per_class = 40 if options.quick else None
    rows = [r for r in ROWS if not (options.skip_discriminative and "discriminative" in r[1])]
    meta = {"mode": "quick, 40 photos per class" if per_class else "all photos",
            "load_before": load_average(),
            "machine": f"{os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}"}
    results = []
    with tempfile.TemporaryDirectory(prefix="tlcourse-train-cold-") as work:
        for number, (name, extra) in enumerate(rows):
            print(f"  {name} ...", file=sys.stderr, flush=True)
            run = cold_train(str(cfg.data_dir), extra, per_class, Path(work) / str(number))
            results.append({"name": name, "arguments": extra, **{k: v for k, v in run.items() if k != "stdout"}})
            print(f"    {results[-1]['seconds']:.1f} s, peak {results[-1]['peak_mb']:.0f} MB", file=sys.stderr, flush=True)
    meta["load_after"] = load_average()
    saved = {"meta": meta, "rows": results}
    print(report(saved))
    save_figures(cfg.output_dir, "train-cold", saved)


if __name__ == "__main__":
    main()
