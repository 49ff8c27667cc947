"""Exercise checkers that report: the learner's verdict, and a record of it that stays in the notebook.

Every lesson ends with exercises. Its checker cell shows the learner one message ("Correct: ..." or a
hint) and, in the same output, a machine-readable record under its own MIME type
(:data:`MIME_TYPE`): the lesson, the exercise, the status and the message. Jupyter shows the
``text/plain`` part (the message); the record is saved with the notebook's outputs, where
``tlcourse grade`` reads it (:func:`records_in`). A checker cell reads::

    from tlcourse.exercises import exercise

    if answer is None:
        exercise("01_data", "answer").not_attempted()
    else:
        with exercise("01_data", "answer") as check:
            assert answer == 42, "Not quite. Hint: ..."
            check.correct("Correct: 42")

A wrong answer still raises its ``AssertionError`` (so "Run All" stops there, as before) after the
record is shown; any other exception raised while checking (a half-written answer such as a string
where a number is asked) is recorded as ``error`` with its message, then raised too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

#: The MIME type of an exercise record in a notebook's outputs.
MIME_TYPE = "application/vnd.tlcourse.exercise+json"
#: The statuses a record can have.
PASSED, FAILED, NOT_ATTEMPTED, ERROR = "passed", "failed", "not_attempted", "error"
STATUSES = (PASSED, FAILED, NOT_ATTEMPTED, ERROR)


@dataclass(frozen=True)
class Record:
    """One checker's verdict: what ``tlcourse grade`` reads back from a notebook."""

    lesson: str
    exercise: str
    status: str
    message: str

    def bundle(self, visible: str) -> dict[str, Any]:
        """The display bundle: the record under :data:`MIME_TYPE`, ``visible`` as the learner's text."""
        return {MIME_TYPE: asdict(self), "text/plain": visible}


def _show(record: Record, visible: str) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        get_ipython = None
    if get_ipython is None or get_ipython() is None:  # plain Python: the message is all there is to see
        if visible:
            print(visible)
        return
    display(record.bundle(visible), raw=True)


class exercise:  # noqa: N801 - read in lessons like a function: `with exercise(...) as check:`
    """Check one exercise and record the verdict; see the module's docstring for the cell it is used in."""

    def __init__(self, lesson: str, exercise_id: str) -> None:
        self.lesson, self.exercise_id = lesson, exercise_id
        self._message: str | None = None

    def record(self, status: str, message: str) -> Record:
        """The record of this exercise with ``status`` and ``message``."""
        return Record(self.lesson, self.exercise_id, status, message)

    def not_attempted(self, message: str | None = None) -> Record:
        """Show (and record) that the answer is still as shipped."""
        message = message or f"Fill in {self.exercise_id} above, then run this cell again."
        record = self.record(NOT_ATTEMPTED, message)
        _show(record, message)
        return record

    def correct(self, message: str) -> None:
        """Say what the learner sees when the answer is right; shown when the ``with`` block ends."""
        self._message = message

    def __enter__(self) -> "exercise":
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        if error is None:
            message = self._message or "Correct."
            _show(self.record(PASSED, message), message)
        elif isinstance(error, AssertionError):
            # The hint is the AssertionError's message, shown by its traceback: the record adds no second copy.
            _show(self.record(FAILED, str(error) or "Not correct yet."), "")
        elif isinstance(error, Exception):
            _show(self.record(ERROR, f"{kind.__name__}: {error}"), "")
        return False  # never swallow: a wrong answer stops "Run All" here, as it always did


def records_in(outputs: Iterable[dict]) -> list[Record]:
    """The exercise records among a code cell's saved outputs (``display_data`` with :data:`MIME_TYPE`)."""
    found = []
    for output in outputs:
        data = output.get("data", {}) if output.get("output_type") in ("display_data", "execute_result") else {}
        value = data.get(MIME_TYPE)
        if isinstance(value, dict) and value.get("status") in STATUSES:
            found.append(Record(str(value.get("lesson", "")), str(value.get("exercise", "")),
                                value["status"], str(value.get("message", ""))))
    return found
