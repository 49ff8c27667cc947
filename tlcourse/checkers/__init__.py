"""Checkers for the lessons' coding exercises, one module per topic.

Each checker takes the learner's function(s), calls them on fresh inputs through
:func:`tlcourse.exercises.attempt`, compares with the package's tested version or a trusted reference,
and returns the "Correct" message; a wrong answer raises ``AssertionError`` whose message is the hint,
in the learner's words. A lesson's checker cell runs it with ``exercise(lesson, id).run(checker, fn)``.
"""
