"""Problems found in input: a severity, the JSON path (or file:line) it is about, and a message."""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from dataclasses import dataclass

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 8, 8, 80, 80


def show(value: object) -> str:
    """A repr for messages, bounded in length and depth whatever the input (a value nested
    a thousand deep would make ``repr`` recurse past Python's limit)."""
    return _REPR.repr(value)


ERROR = "error"
WARNING = "warning"
# Something the reader did that the user should know about but need not act on (a file
# it skipped on purpose, ids it renumbered): never refuses anything.
NOTE = "note"


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem. ``path`` is e.g. ``annotations[17].bbox`` or ``labels/train/a.txt:3``."""

    severity: str
    path: str
    message: str

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def to_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "path": self.path, "message": self.message}

    def __str__(self) -> str:
        if self.path:
            return f"{self.severity}: {self.path}: {self.message}"
        return f"{self.severity}: {self.message}"


class ProblemList(list):
    """A list of :class:`Problem` with helpers to add errors and warnings."""

    def error(self, path: str, message: str) -> None:
        self.append(Problem(ERROR, path, message))

    def warning(self, path: str, message: str) -> None:
        self.append(Problem(WARNING, path, message))

    def note(self, path: str, message: str) -> None:
        self.append(Problem(NOTE, path, message))

    @property
    def has_errors(self) -> bool:
        return any(p.severity == ERROR for p in self)


def errors(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == ERROR]


def warnings(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == WARNING]


def notes(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == NOTE]
