"""A small AIP-160 filter subset: a conjunction of ``field OP value`` terms.

``display_name:"cats" owner="users/alice" AND labeled=true``: terms are separated by
whitespace or ``AND``; OP is ``=`` (equals) or ``:`` (has: substring or prefix, per
field); a value is a bare word or a double-quoted string (``\\"`` escapes a quote).
Each list RPC says which fields and operators it accepts; anything else is
INVALID_ARGUMENT on the ``filter`` field with a message listing what is accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from visionmesh.errors import invalid_argument

# Bounded before parsing: a list filter names a few fields, never thousands of terms.
MAX_FILTER_CHARS = 2048
MAX_TERMS = 16
_CONJUNCTION = re.compile(r"\s*(AND\s+)?")

_TERM = re.compile(
    r"""\s*(?P<field>[A-Za-z_][A-Za-z0-9_.]*)\s*(?P<op>=|:)\s*
        (?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>[^\s"]+))\s*""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Term:
    field: str
    op: str
    value: str


def parse(text: str, allowed: dict[str, set[str]]) -> list[Term]:
    """Parse ``text``; ``allowed`` maps each accepted field to its accepted operators."""
    if len(text) > MAX_FILTER_CHARS:
        raise invalid_argument(
            f"filter is {len(text)} characters long; at most {MAX_FILTER_CHARS} are accepted",
            "filter",
        )
    terms: list[Term] = []
    pos = 0
    text = text.strip()
    accepted = ", ".join(f"{f}{'|'.join(sorted(ops))}" for f, ops in sorted(allowed.items()))
    while pos < len(text):
        if len(terms) >= MAX_TERMS:
            raise invalid_argument(
                f"filter has more than {MAX_TERMS} terms: combine fewer conditions", "filter"
            )
        if terms:
            conj = _CONJUNCTION.match(text, pos)
            pos = conj.end() if conj else pos
        match = _TERM.match(text, pos)
        if not match:
            raise invalid_argument(
                f"filter: cannot parse {text[pos:]!r}; expected terms like "
                f'field="value" joined by AND (accepted: {accepted})',
                "filter",
            )
        field, op = match.group("field"), match.group("op")
        value = match.group("quoted")
        value = re.sub(r"\\(.)", r"\1", value) if value is not None else match.group("bare")
        if field not in allowed:
            raise invalid_argument(
                f"filter: unknown field {field!r} (accepted: {accepted})", "filter"
            )
        if op not in allowed[field]:
            raise invalid_argument(
                f"filter: {field} does not take {op!r} (accepted: {accepted})", "filter"
            )
        terms.append(Term(field, op, value))
        pos = match.end()
    return terms


def parse_bool(term: Term) -> bool:
    lowered = term.value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise invalid_argument(
        f"filter: {term.field} takes true or false, got {term.value!r}", "filter"
    )
