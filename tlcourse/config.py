"""Course settings: every ``TLCOURSE_*`` environment variable, read in one place.

Lessons and the ``tlcourse`` command start from :func:`get_config` and pass the values on; library
functions never read the environment themselves. Relative paths are resolved against the *course root*
(:func:`course_root`), so a lesson in ``notebooks/`` and a terminal in the repository root see the same ``data/``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .errors import ConfigError

#: Environment variables the course reads, with their defaults and meaning.
SETTINGS = {
    "TLCOURSE_DATA": ("data", "folder of class subfolders with the photos"),
    "TLCOURSE_FIELD_TEST": ("field-test", "photos from elsewhere, laid out like the data, for evaluation only"),
    "TLCOURSE_BACKBONE": ("mobilenet_v2", "torchvision backbone name (vgg11, resnet18, ...)"),
    "TLCOURSE_OUTPUT": ("outputs", "where derived files go: labels CSV, feature cache, checkpoints"),
    "TLCOURSE_SMOKE": ("0", "1 = quick run on a small subset with fewer epochs"),
    "TLCOURSE_SEED": ("0", "seed for the split, the head's initial weights and shuffling"),
    "TLCOURSE_DEVICE": ("auto", "auto, cpu, cuda or mps"),
    "TLCOURSE_OFFLINE": ("0", "1 = never download; missing weights are an error naming the fix"),
    "TLCOURSE_DASHBOARD": ("auto", "training display: widgets, text, or auto (widgets in Jupyter)"),
}

#: The words every true/false setting accepts (compared in lower case).
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
DEVICES = ("auto", "cpu", "cuda", "mps")
DASHBOARD_MODES = ("auto", "widgets", "text")
#: Photos per class of a lesson's own sample in a quick run (see :meth:`Config.photos`).
QUICK_SAMPLE = 16
#: The reference recipe's methods (:func:`tlcourse.recipes.train_reference`), cheapest first, and the default
#: of ``tlcourse train``, chosen on validation by benchmarks/cut.py (the README gives its table).
METHODS = ("freeze", "cut", "discriminative")
DEFAULT_METHOD = "freeze"


def course_root(start: Path | None = None) -> Path:
    """Return the nearest folder at or above ``start`` that has a ``notebooks/`` folder (else ``start``)."""
    start = Path.cwd() if start is None else Path(start)
    for folder in (start, *start.parents):
        if (folder / "notebooks").is_dir():
            return folder
    return start


@dataclass(frozen=True)
class Config:
    """Resolved course settings. Build it with :func:`get_config`."""

    data_dir: Path
    field_test_dir: Path = field(default_factory=lambda: Path("field-test"))
    backbone: str = "mobilenet_v2"
    output_dir: Path = field(default_factory=lambda: Path("outputs"))
    smoke: bool = False
    seed: int = 0
    device: str = "auto"
    offline: bool = False
    dashboard: str = "auto"

    @property
    def labels_csv(self) -> Path:
        """Where the labels CSV is written (never inside the learner's photo folder)."""
        return self.output_dir / "labels.csv"

    @property
    def feature_cache(self) -> Path:
        """Where cached backbone features are kept on disk."""
        return self.output_dir / "feature-cache"

    @property
    def excluded_csv(self) -> Path:
        """The exclusion list: photos marked as mislabelled, left out of the data (see tlcourse.exclusions)."""
        return self.output_dir / "excluded.csv"

    @property
    def photos_per_class(self) -> int | None:
        """Photos per class the lessons load: all of them (``None``), or 80 in a quick run
        (the test split then has 8 per class: enough for a verdict that a guess passes under 1 % of the time)."""
        return 80 if self.smoke else None

    smoke_images_per_class = photos_per_class  # the same number under its older name

    def photos(self, full: int | None = None) -> int | None:
        """Photos per class for a lesson's own sample: ``full`` (``None``: all) normally, at most 16 in a
        quick run. With :meth:`epochs`, the one place where a quick run's sizes are decided."""
        if not self.smoke:
            return full
        return QUICK_SAMPLE if full is None else min(full, QUICK_SAMPLE)

    def epochs(self, full: int) -> int:
        """Number of epochs to run: ``full`` normally, 1 in smoke mode."""
        return 1 if self.smoke else full


def _resolve(value: str, root: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (root / path)


def _choice(name: str, value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        # A typo such as TLCOURSE_SMOKE=ture must not silently start a full-length run.
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    return value


def get_config(env: Mapping[str, str] | None = None, root: Path | None = None) -> Config:
    """Read the course settings from ``env`` (default: ``os.environ``); see :data:`SETTINGS`."""
    env = os.environ if env is None else env
    root = course_root(root)

    def get(name: str) -> str:
        return env.get(name, "").strip() or SETTINGS[name][0]

    def flag(name: str) -> bool:
        words = f"1 (or {'/'.join(TRUE_WORDS[1:])}) or 0 (or {'/'.join(FALSE_WORDS[1:])})"
        return _choice(name, get(name).lower(), TRUE_WORDS + FALSE_WORDS, words) in TRUE_WORDS

    try:
        seed = int(get("TLCOURSE_SEED"))
    except ValueError:
        raise ConfigError(f"TLCOURSE_SEED must be an integer, got {get('TLCOURSE_SEED')!r}") from None
    return Config(data_dir=_resolve(get("TLCOURSE_DATA"), root), output_dir=_resolve(get("TLCOURSE_OUTPUT"), root),
                  field_test_dir=_resolve(get("TLCOURSE_FIELD_TEST"), root), backbone=get("TLCOURSE_BACKBONE"),
                  smoke=flag("TLCOURSE_SMOKE"), seed=seed, offline=flag("TLCOURSE_OFFLINE"),
                  device=_choice("TLCOURSE_DEVICE", get("TLCOURSE_DEVICE").lower(), DEVICES, "auto, cpu, cuda or mps"),
                  dashboard=_choice("TLCOURSE_DASHBOARD", get("TLCOURSE_DASHBOARD").lower(), DASHBOARD_MODES,
                                    "auto, widgets or text (auto: widgets in Jupyter, text elsewhere)"))
