"""The gradebook: a table of learners by exercises, a summary per exercise, a CSV and feedback files."""

from __future__ import annotations

import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..exercises import ERROR, FAILED, NOT_ATTEMPTED, PASSED
if TYPE_CHECKING:
    import pandas as pd

from .execute import INVALID, MISSING, NO_RECORD, NOT_REACHED, TIMEOUT, WRONG_LESSON, Result

#: How each status reads in the printed table (the CSV keeps the status names).
SHORT = {PASSED: "solved", FAILED: "wrong", NOT_ATTEMPTED: "-", ERROR: "error", MISSING: "missing",
         INVALID: "bad file", WRONG_LESSON: "other lesson", TIMEOUT: "time limit", NOT_REACHED: "not reached",
         NO_RECORD: "not run"}
LEGEND = ("solved; wrong (the hint is in the feedback); - not attempted (as shipped); error (the answer raised "
          "an exception); missing (no notebook); bad file (not a notebook); other lesson (another lesson's "
          "notebook); time limit (not reached in time); not reached (the lesson failed before it); not run "
          "(--saved: no verdict saved)")


@dataclass
class Gradebook:
    """Every learner's verdict on every exercise, and how they were obtained."""

    results: list[Result]
    mode: str  # "run" or "saved"
    seconds: dict[tuple[str, str], float] = field(default_factory=dict)  # (learner, lesson) -> run time

    @staticmethod
    def column(lesson: str, exercise: str) -> str:
        return f"{lesson}/{exercise}"

    def frame(self) -> "pd.DataFrame":
        """One row per learner: ``solved``, ``exercises`` and one status column per exercise."""
        import pandas as pd  # only when a table is made: `tlcourse --help` stays quick
        columns = list(dict.fromkeys(self.column(r.lesson, r.exercise) for r in self.results))
        table = pd.DataFrame([(r.learner, self.column(r.lesson, r.exercise), r.status) for r in self.results],
                             columns=["learner", "exercise", "status"])
        wide = table.pivot(index="learner", columns="exercise", values="status")[columns]
        wide.columns.name = None
        wide.insert(0, "exercises", len(columns))
        wide.insert(0, "solved", (wide[columns] == PASSED).sum(axis=1))
        learners = list(dict.fromkeys(r.learner for r in self.results))
        return wide.loc[learners]

    def table(self) -> str:
        """The printed table: statuses in short words, one column per exercise (lesson number + id)."""
        import pandas as pd  # only when a table is made: `tlcourse --help` stays quick
        wide = self.frame()
        shown = pd.DataFrame({"solved": [f"{s}/{n}" for s, n in zip(wide["solved"], wide["exercises"])]},
                             index=wide.index)
        for column in wide.columns[2:]:
            lesson, exercise = column.split("/", 1)
            shown[f"{lesson.split('_', 1)[0]} {exercise}"] = wide[column].map(SHORT)
        how = ("re-run in a fresh kernel (quick mode) with the course's checkers" if self.mode == "run" else
               "read from the outputs saved in the notebooks: this trusts the learners' own runs (and outputs)")
        return f"Verdicts {how}.\n{shown.to_string()}\n\n" + textwrap.fill(LEGEND, 100)

    def summary(self) -> "pd.DataFrame":
        """Per exercise: how many solved, failed, not attempted, other; the most common hint."""
        import pandas as pd  # only when a table is made: `tlcourse --help` stays quick
        rows = []
        for column in dict.fromkeys(self.column(r.lesson, r.exercise) for r in self.results):
            mine = [r for r in self.results if self.column(r.lesson, r.exercise) == column]
            counts = Counter(r.status for r in mine)
            hints = Counter(_hint(r.message) for r in mine if r.status in (FAILED, ERROR))
            hint = hints.most_common(1)[0] if hints else None
            rows.append({"exercise": column, "solved": f"{counts[PASSED]}/{len(mine)}", "wrong": counts[FAILED],
                         "not attempted": counts[NOT_ATTEMPTED], "error": counts[ERROR],
                         "no verdict": len(mine) - counts[PASSED] - counts[FAILED] - counts[NOT_ATTEMPTED] - counts[ERROR],
                         "most common hint": f"{_short(hint[0])} ({hint[1]}x)" if hint else ""})
        return pd.DataFrame(rows).set_index("exercise")

    def write_csv(self, path: Path) -> None:
        """The gradebook as CSV: one row per learner, solved count, then each exercise's status."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.frame().to_csv(path, encoding="utf-8")

    def write_feedback(self, folder: Path) -> list[Path]:
        """One short Markdown file per learner, plus ``verdicts.csv`` with every message; returns the files."""
        import pandas as pd  # only when a table is made: `tlcourse --help` stays quick
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        pd.DataFrame([r.__dict__ for r in self.results]).to_csv(folder / "verdicts.csv", index=False, encoding="utf-8")
        for learner in dict.fromkeys(r.learner for r in self.results):
            mine = [r for r in self.results if r.learner == learner]
            solved = sum(r.status == PASSED for r in mine)
            lines = [f"# Feedback for {learner}", "", f"{solved} of {len(mine)} exercises solved.", ""]
            for lesson in dict.fromkeys(r.lesson for r in mine):
                lines.append(f"## {lesson}")
                for r in (r for r in mine if r.lesson == lesson):
                    lines.append(f"- {r.exercise}: " + ("solved" if r.status == PASSED else
                                                         f"not solved ({r.status.replace('_', ' ')}): {r.message}"))
                lines.append("")
            path = folder / f"{_safe(learner)}.md"
            path.write_text("\n".join(lines), encoding="utf-8")
            written.append(path)
        return written


def _hint(message: str) -> str:
    """The part of a checker's message that does not repeat the learner's answer ("Not 12. Hint: ...")."""
    if "Hint:" in message:
        return message[message.index("Hint:"):]
    head, colon, rest = message.partition(": ")
    return rest if colon and head.startswith("Not ") else message


def _short(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_. " else "_" for c in name).strip() or "learner"
