"""What the benchmarks share: the load average printed with their timings, and where their figures go."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, for the report (timings depend on what else runs)."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def save_figures(output_dir: Path, name: str, saved: dict) -> Path:
    """Write a run's figures to ``<output_dir>/benchmarks/<name>-<time>.json`` and say where."""
    out = Path(output_dir) / "benchmarks" / f"{name}-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(saved, indent=1))
    print(f"\nFigures: {out}", file=sys.stderr)
    return out
