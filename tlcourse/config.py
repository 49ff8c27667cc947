"""Course settings, read from environment variables with sensible defaults.

Every lesson and command starts from :func:`get_config`, so one variable changes
the whole course (for example ``TLCOURSE_BACKBONE=vgg11`` to follow the original
notebook's VGG11). Relative paths are resolved against the *course root*: the
nearest folder, from the current one upwards, that holds a ``notebooks/``
folder (so a lesson running in ``notebooks/`` and a terminal in the repository
root see the same ``data/``), or the current folder when there is none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

#: Environment variables the course reads, with their defaults and meaning.
SETTINGS = {
    "TLCOURSE_DATA": ("data", "folder of class subfolders with the photos"),
    "TLCOURSE_BACKBONE": ("mobilenet_v2", "torchvision backbone name (vgg11, resnet18, ...)"),
    "TLCOURSE_OUTPUT": ("outputs", "where derived files go: labels CSV, feature cache, checkpoints"),
    "TLCOURSE_SMOKE": ("0", "1 = quick run on a small subset with fewer epochs"),
    "TLCOURSE_SEED": ("0", "seed for the split, the head's initial weights and shuffling"),
    "TLCOURSE_DEVICE": ("auto", "auto, cpu, cuda or mps"),
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def course_root(start: Path | None = None) -> Path:
    """Return the nearest folder at or above ``start`` that has a ``notebooks/`` folder."""
    start = Path.cwd() if start is None else Path(start)
    for folder in (start, *start.parents):
        if (folder / "notebooks").is_dir():
            return folder
    return start


@dataclass(frozen=True)
class Config:
    """Resolved course settings. Build it with :func:`get_config`."""

    data_dir: Path
    backbone: str = "mobilenet_v2"
    output_dir: Path = field(default_factory=lambda: Path("outputs"))
    smoke: bool = False
    seed: int = 0
    device: str = "auto"

    @property
    def labels_csv(self) -> Path:
        """Where the labels CSV is written (never inside the learner's photo folder)."""
        return self.output_dir / "labels.csv"

    @property
    def excluded_csv(self) -> Path:
        """The exclusion list: photos marked as mislabelled, left out of the data (see tlcourse.exclusions)."""
        return self.output_dir / "excluded.csv"

    @property
    def smoke_images_per_class(self) -> int | None:
        """How many photos per class a smoke run uses (``None``: all of them)."""
        return 40 if self.smoke else None

    def epochs(self, full: int) -> int:
        """Number of epochs to run: ``full`` normally, 1 in smoke mode."""
        return 1 if self.smoke else full


def _resolve(value: str, root: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (root / path)


def get_config(env: dict[str, str] | None = None, root: Path | None = None) -> Config:
    """Read the course settings from ``env`` (default: ``os.environ``).

    See :data:`SETTINGS` for the variables, their defaults and what they mean.
    """
    env = os.environ if env is None else env
    root = course_root(root)

    def get(name: str) -> str:
        value = env.get(name, "").strip()
        return value or SETTINGS[name][0]

    seed_text = get("TLCOURSE_SEED")
    try:
        seed = int(seed_text)
    except ValueError:
        raise ValueError(f"TLCOURSE_SEED must be an integer, got {seed_text!r}") from None
    smoke_text = get("TLCOURSE_SMOKE").lower()
    if smoke_text not in _TRUE | _FALSE:
        # A typo such as TLCOURSE_SMOKE=ture must not silently start a full-length run.
        raise ValueError(f"TLCOURSE_SMOKE must be 1 (or true/yes/on) or 0 (or false/no/off), got {smoke_text!r}")
    device = get("TLCOURSE_DEVICE").lower()
    if device not in {"auto", "cpu", "cuda", "mps"}:
        raise ValueError(f"TLCOURSE_DEVICE must be auto, cpu, cuda or mps, got {device!r}")
    return Config(
        data_dir=_resolve(get("TLCOURSE_DATA"), root),
        backbone=get("TLCOURSE_BACKBONE"),
        output_dir=_resolve(get("TLCOURSE_OUTPUT"), root),
        smoke=smoke_text in _TRUE,
        seed=seed,
        device=device,
    )
