#!/usr/bin/env python
"""How long each lesson takes a learner: Run All in a fresh kernel, with an empty cache and then warm.

    python benchmarks/lessons.py                 # every lesson, all photos (~15 min on a quiet 2-core CPU)
    python benchmarks/lessons.py 03 07           # some lessons (by number)
    python benchmarks/lessons.py --update        # also rewrite each lesson's "**Time:**" line with the figures
    python benchmarks/lessons.py --report outputs/benchmarks/lessons-<time>.json [--update]   # a saved run again

Each lesson runs alone, as a learner who opens it first: in a fresh kernel, with its own empty output
folder (no cached features, views or activations: the "empty cache" figure), then once more in a fresh
kernel with that folder kept (the "cache warm" figure). The lessons' own settings apply (all photos
unless TLCOURSE_SMOKE=1). The figures are the wall time of the whole Run All, start of the kernel
included, and the time the lesson's last cell printed. Timings depend on what else the machine is
doing: the load average is printed with them. Figures also go to
``<TLCOURSE_OUTPUT>/benchmarks/lessons-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

from figures import load_average, save_figures  # benchmarks/ is on sys.path when this script runs

ROOT = Path(__file__).resolve().parents[1]
#: The first cell's time line, as tests/test_lesson_shape.py requires it.
TIME_LINE = re.compile(r"(\*\*Time:\*\* about )(\d+)( min on a 2-core laptop CPU with an empty cache, about )(\d+)"
                       r"( min with the cache warm)")
OWN_TIME = re.compile(r"This lesson took ([\d.]+) min")


def run_lesson(path: Path, output: Path) -> dict:
    """Run All of one lesson in a fresh kernel with ``TLCOURSE_OUTPUT=output``: wall time and its own figure."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    os.environ["TLCOURSE_OUTPUT"] = str(output)  # the kernel inherits this process's environment
    started = time.perf_counter()
    NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - started
    printed = [OWN_TIME.search(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    own = next((float(m.group(1)) for m in printed if m), math.nan)
    return {"seconds": seconds, "own_minutes": own}


def minutes(seconds: float) -> int:
    """A "**Time:**" figure: whole minutes, rounded up from a quarter past (88 s is "about 2 min"), at least 1."""
    return max(1, math.ceil(seconds / 60 - 0.25))


def update_time_line(path: Path, cold: float, warm: float) -> bool:
    """Rewrite the lesson's time line with the measured figures; whether it changed."""
    text = path.read_text(encoding="utf-8")
    new = TIME_LINE.sub(lambda m: f"{m[1]}{minutes(cold)}{m[3]}{minutes(warm)}{m[5]}", text, count=1)
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def report(saved: dict) -> str:
    meta = saved["meta"]
    out = [f"Lessons, Run All in a fresh kernel ({meta['mode']}): {meta['machine']}; load average "
           f"{meta['load_before']} before, {meta['load_after']} after.", "",
           "| lesson | empty cache | its last cell printed | cache warm | its last cell printed | its first cell says |",
           "|---|---|---|---|---|---|"]
    for row in saved["rows"]:
        said = f"{row['stated'][0]} / {row['stated'][1]} min" if row["stated"] else "-"
        out.append(f"| {row['lesson']} | {row['cold']['seconds']:.0f} s ({minutes(row['cold']['seconds'])} min) | "
                   f"{row['cold']['own_minutes']} min | {row['warm']['seconds']:.0f} s "
                   f"({minutes(row['warm']['seconds'])} min) | {row['warm']['own_minutes']} min | {said} |")
    total = [sum(r[k]["seconds"] for r in saved["rows"]) for k in ("cold", "warm")]
    out.append(f"| all | {total[0]:.0f} s | | {total[1]:.0f} s | | |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lessons", nargs="*", help="lesson numbers, e.g. 03 07 (default: all)")
    parser.add_argument("--update", action="store_true", help="rewrite each lesson's time line with the figures")
    parser.add_argument("--report", metavar="JSON", help="print (and with --update, apply) a saved run's figures")
    options = parser.parse_args()
    if options.report:
        saved = json.loads(Path(options.report).read_text())
        print(report(saved))
        for row in saved["rows"] if options.update else []:
            update_time_line(ROOT / "notebooks" / row["lesson"], row["cold"]["seconds"], row["warm"]["seconds"])
        return
    sys.path.insert(0, str(ROOT))
    from tlcourse.config import get_config

    cfg = get_config()
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if options.lessons:
        paths = [p for p in paths if p.name[:2] in {n.zfill(2) for n in options.lessons}]
    meta = {"mode": "quick run (TLCOURSE_SMOKE=1)" if cfg.smoke else "all photos",
            "load_before": load_average(),
            "machine": f"{os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}"}
    rows = []
    for path in paths:
        stated = TIME_LINE.search(path.read_text(encoding="utf-8"))
        with tempfile.TemporaryDirectory(prefix="tlcourse-lesson-") as folder:
            print(f"  {path.name}: empty cache ...", file=sys.stderr, flush=True)
            cold = run_lesson(path, Path(folder))
            print(f"    {cold['seconds']:.0f} s; cache warm ...", file=sys.stderr, flush=True)
            warm = run_lesson(path, Path(folder))
            print(f"    {warm['seconds']:.0f} s", file=sys.stderr, flush=True)
        rows.append({"lesson": path.name, "cold": cold, "warm": warm,
                     "stated": [int(stated[2]), int(stated[4])] if stated else None})
        if options.update and update_time_line(path, cold["seconds"], warm["seconds"]):
            print(f"    time line of {path.name} updated", file=sys.stderr, flush=True)
    meta["load_after"] = load_average()
    saved = {"meta": meta, "rows": rows}
    print(report(saved))
    save_figures(cfg.output_dir, "lessons", saved)


if __name__ == "__main__":
    main()
