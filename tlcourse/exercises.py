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

A *coding* exercise checks a function the learner wrote: a checker from :mod:`tlcourse.checkers` calls
it on fresh inputs through :func:`attempt` and compares with the package's tested version. Its cell
reads ``exercise("03_weight_freezing", "freeze").run(check_freeze, freeze)``. It never raises: a stub
(``...``, ``NotImplementedError``) is "not attempted", a wrong answer or one that crashes gets one line
naming what is wrong, and neither shows a traceback, so "Run All" goes on past an unfinished exercise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

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

    def run(self, checker: Callable[..., str], *functions: Callable) -> None:
        """Check a coding exercise: ``checker(*functions)`` returns the "Correct" message or raises
        ``AssertionError`` with a hint. Shows one line and records it; never raises (see the module)."""
        try:
            status, message = PASSED, checker(*functions)
        except NotAttempted as stub:
            status, message = NOT_ATTEMPTED, f"{stub} Then run this cell again."
        except AssertionError as wrong:
            status, message = FAILED, f"Not yet: {wrong}" if str(wrong) else "Not yet: the result is not right."
        except LearnerError as crashed:
            status, message = FAILED, f"Not yet: {crashed}"
        except Exception as error:  # e.g. a wrong return type that the checker could not even compare
            status, message = FAILED, (f"Not yet: checking your answer stopped at {type(error).__name__}: {error}. "
                                       "Does your function return what the exercise asks for?")
        _show(self.record(status, message), message)

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


class NotAttempted(Exception):
    """The learner's function is still a stub: it raised ``NotImplementedError`` or returned nothing."""


class LearnerError(Exception):
    """The learner's function raised an exception: the message names the function and the exception."""


def attempt(function: Callable, *args: Any, returns: bool = True, **kwargs: Any) -> Any:
    """Call the learner's ``function``; a stub raises :class:`NotAttempted`, any other error :class:`LearnerError`.

    ``returns=False`` for a function that works in place (its ``None`` is then an answer, not a stub).
    """
    if not callable(function):
        raise NotAttempted(f"{function!r} is not a function yet: define it with `def` in the cell above.")
    name = getattr(function, "__name__", "your function")
    try:
        result = function(*args, **kwargs)
    except NotImplementedError as error:
        raise NotAttempted(f"{name} is not written yet ({error or 'NotImplementedError'}).") from None
    except Exception as error:  # the learner's code crashed: say where, in one line, with no traceback
        raise LearnerError(f"Your {name} raised {type(error).__name__}: {error}") from None
    if returns and (result is None or result is Ellipsis):
        raise NotAttempted(f"{name} returns nothing yet: finish it and `return` the result.")
    return result


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
