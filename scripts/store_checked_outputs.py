"""Execute lesson notebooks and store only the outputs that nbval checks.

The course's output policy (enforced by ``tests/test_notebooks.py``): a cell tagged
``nbval-check-output`` in its metadata (nbval reads the tag; the learner sees no marker) keeps its output, because it is
deterministic and meaningful (class mapping, dataset and split sizes) and nbval
compares it on every test run; every other cell is stored without outputs, so
diffs stay small and no machine-specific numbers (times, paths) are committed.

Usage, from the repository root (with the photos and weights the tests use)::

    .venv/bin/python scripts/store_checked_outputs.py notebooks/01_data.ipynb [...]
    .venv/bin/python scripts/store_checked_outputs.py --strip-only notebooks/*.ipynb

``--strip-only`` clears outputs that the policy forbids without executing anything.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

CHECK_TAG = "nbval-check-output"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def is_checked(cell) -> bool:
    """True for a code cell tagged for nbval's output comparison."""
    return cell.cell_type == "code" and CHECK_TAG in cell.get("metadata", {}).get("tags", [])


def clean(nb) -> None:
    """Apply the output policy in place: outputs only in checked cells, no execution counts or timings."""
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    code_number = 0
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        code_number += 1
        if is_checked(cell):
            # nbval treats a cell with outputs but no execution count as "unrun" and fails it, so
            # checked cells get a stable count: their position among the code cells.
            cell.execution_count = code_number
        else:
            cell.execution_count = None
            cell.outputs = []
        for output in cell.outputs:
            if "execution_count" in output:
                output["execution_count"] = cell.execution_count


def execute(path: Path, timeout: int = 1200, executed_copy: Path | None = None) -> None:
    """Run the notebook in its own folder (as nbval and JupyterLab do), then clean and save it.

    ``executed_copy``: a folder to write the fully executed notebook into, for reading every
    output (warnings, plots) before they are stripped.
    """
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    if errors:  # nbclient raises on errors by default; this is a second guard
        raise RuntimeError(f"{path}: {errors[0]['ename']}: {errors[0]['evalue']}")
    if executed_copy is not None:
        executed_copy.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, executed_copy / path.name)
    clean(nb)
    nbformat.validate(nb)
    nbformat.write(nb, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--strip-only", action="store_true", help="clear forbidden outputs, do not execute")
    parser.add_argument("--executed-copy", type=Path, help="also save the fully executed notebooks here")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        if args.strip_only:
            nb = nbformat.read(path, as_version=4)
            clean(nb)
            nbformat.write(nb, path)
        else:
            execute(path, executed_copy=args.executed_copy)
        print("stored", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
