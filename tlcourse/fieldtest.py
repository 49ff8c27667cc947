"""A field test: how a trained model does on a folder of photos from elsewhere.

A test split comes from the same source as the training photos, so it flatters: photos from another
camera or website tell more. Their report has recall per class with its 95 % interval (a handful of
photos per class leaves a wide one), balanced accuracy and the list of mistakes to look at."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .data import scan_folder
from .evaluation import Scores, balanced_accuracy, recall_table, prediction_scores  # noqa: F401 - lessons import these here


def load_field_test(classes: Sequence[str], folder: str | Path,
                    instead: str = "The sections on photos from elsewhere use the validation photos instead."
                    ) -> pd.DataFrame | None:
    """The field-test photos in ``folder`` (the course's is ``get_config().field_test_dir``, set by
    ``TLCOURSE_FIELD_TEST``) as a labels table with the training classes' labels, or ``None`` with one
    printed line saying why, how to get one, and (``instead``) what the lesson does without it: the
    folder is missing, or its classes are not the training classes."""
    path = Path(folder).expanduser()
    how = ("`tlcourse download-data` fetches the course's field test there; for your own photos, point "
           "TLCOURSE_FIELD_TEST at a folder of photos from elsewhere laid out like the training folder")
    if not path.is_dir():
        print(f"No field-test folder at {path} ({how}). {instead}")
        return None
    table = scan_folder(path)
    found = sorted(table["class_name"].unique())
    if found != sorted(classes):
        print(f"The field-test folder {path} has classes {found}, not the training classes {list(classes)} "
              f"({how}). {instead}")
        return None
    table = table.copy()
    table["label"] = [list(classes).index(name) for name in table["class_name"]]  # the training labels
    return table


def mistakes(frame: pd.DataFrame, file_paths: Sequence[str | Path], class_names: Sequence[str]) -> pd.DataFrame:
    """The wrongly predicted photos of a :func:`~tlcourse.evaluation.predict` frame (rows in
    ``file_paths`` order): ``file``, ``true``, ``predicted`` and the predicted class's ``probability``,
    the most confident mistakes first (those are the surprising ones)."""
    if len(frame) != len(file_paths):
        raise ValueError(f"{len(frame)} predictions but {len(file_paths)} files")
    wrong = frame.index[frame["label"].to_numpy() != frame["pred"].to_numpy()]
    table = pd.DataFrame({
        "file": [str(file_paths[i]) for i in wrong],
        "true": [class_names[int(frame.at[i, "label"])] for i in wrong],
        "predicted": [class_names[int(frame.at[i, "pred"])] for i in wrong],
        "probability": [float(frame.at[i, f"prob_{int(frame.at[i, 'pred'])}"]) for i in wrong],
    })
    return table.sort_values(["probability", "file"], ascending=[False, True], kind="stable").reset_index(drop=True)


@dataclass
class FieldReport(Scores):
    """The :class:`~tlcourse.evaluation.Scores` of one folder, and its mistakes."""

    mistakes: pd.DataFrame = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON (``None`` where a class has no photos: JSON has no NaN)."""
        def plain(value: float) -> float | None:
            return None if np.isnan(value) else float(value)

        return {
            "balanced_accuracy": self.balanced_accuracy,
            "accuracy_interval": list(self.interval),
            "interval_method": "95 % Wilson score interval",
            "recall": {name: {"n": int(row.n), "correct": int(row.correct), "recall": plain(row.recall),
                              "interval": [plain(row.low), plain(row.high)]}
                       for name, row in self.recall.iterrows()},
            "mistakes": self.mistakes.to_dict(orient="records"),
        }

    def summary(self) -> str:
        """A few lines for a terminal or a notebook."""
        lines = [f"accuracy {self.accuracy:.1%} ({self.correct} of {self.n}), 95 % interval "
                 f"{self.interval[0]:.1%} to {self.interval[1]:.1%}; balanced accuracy {self.balanced_accuracy:.1%}"]
        for name, row in self.recall.iterrows():
            lines.append(f"  {name}: no photos" if row.n == 0 else
                         f"  {name}: recall {row.recall:.1%} ({int(row.correct)} of {int(row.n)}), "
                         f"95 % interval {row.low:.1%} to {row.high:.1%}")
        return "\n".join(lines)


def field_report(frame: pd.DataFrame, file_paths: Sequence[str | Path], class_names: Sequence[str]) -> FieldReport:
    """The :class:`FieldReport` of a :func:`~tlcourse.evaluation.predict` frame whose rows are the photos
    ``file_paths`` (same order). Taught in lesson 7."""
    result = prediction_scores(frame["label"].to_numpy(), frame["pred"].to_numpy(), class_names)
    return FieldReport(**vars(result), mistakes=mistakes(frame, file_paths, class_names))
