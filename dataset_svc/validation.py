"""Checks every request gets before its content is used: enum values and free text.

- :func:`check_enums`: proto3 enums are open, so a client may send any integer; a value
  the enum does not declare is INVALID_ARGUMENT naming the field (``task_type``,
  ``header.on_conflict``), checked once for every RPC (the services pass it to
  :func:`visionmesh.errors.grpc_errors` as ``check_request``).
- :func:`check_text`: names and descriptions are bounded and free of control characters
  (a description may hold line breaks and tabs; a name may not).
"""

from __future__ import annotations

import functools
import re

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from visionmesh.errors import Violation, invalid_fields

# C0 and C1 controls and DEL; a description may keep \t, \n and \r.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_ENUM = FieldDescriptor.TYPE_ENUM
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


@functools.cache
def _has_enums(descriptor: Descriptor) -> bool:
    """Whether a message type holds an enum field, itself or in a nested message."""
    seen: set[str] = set()

    def walk(d: Descriptor) -> bool:
        if d.full_name in seen:
            return False
        seen.add(d.full_name)
        for f in d.fields:
            if f.type == _ENUM:
                return True
            if f.type == _MESSAGE and not f.message_type.GetOptions().map_entry:
                if walk(f.message_type):
                    return True
        return False

    return walk(descriptor)


def _enum_violations(message: Message, prefix: str, out: list[Violation]) -> None:
    if not _has_enums(message.DESCRIPTOR):
        return
    for field, value in message.ListFields():
        name = f"{prefix}{field.name}"
        if field.type == _ENUM:
            known = field.enum_type.values_by_number
            values = value if field.is_repeated else [value]
            for i, v in enumerate(values):
                if v not in known:
                    where = f"{name}[{i}]" if field.is_repeated else name
                    choices = ", ".join(e.name for e in field.enum_type.values if e.number)
                    out.append((where, f"{v} is not a value of {field.enum_type.name} ({choices})"))
        elif field.type == _MESSAGE and not field.message_type.GetOptions().map_entry:
            if field.is_repeated:
                for i, item in enumerate(value):
                    _enum_violations(item, f"{name}[{i}].", out)
            else:
                _enum_violations(value, f"{name}.", out)


def check_enums(message: Message, prefix: str = "") -> None:
    """INVALID_ARGUMENT naming each enum field whose value its enum does not declare."""
    problems: list[Violation] = []
    _enum_violations(message, prefix, problems)
    if problems:
        raise invalid_fields(
            "; ".join(f"{field}: {why}" for field, why in problems[:5]), problems[:100]
        )


def text_problem(value: str, max_chars: int, *, multiline: bool = False) -> str | None:
    """Why ``value`` is not acceptable text (None when it is)."""
    if len(value) > max_chars:
        return f"must be at most {max_chars} characters, got {len(value)}"
    bad = (_CONTROL_BUT_LINES if multiline else _CONTROL).search(value)
    if bad:
        return (
            f"must not contain control characters (found U+{ord(bad.group()):04X} at "
            f"character {bad.start()})"
        )
    return None


def check_text(value: str, field: str, max_chars: int, *, multiline: bool = False) -> None:
    problem = text_problem(value, max_chars, multiline=multiline)
    if problem:
        raise invalid_fields(f"{field} {problem}", [(field, problem)])
