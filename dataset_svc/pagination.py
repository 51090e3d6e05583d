"""AIP-158 pagination: ``page_size`` (0 means 50, at most 1000) and an opaque ``page_token``.

A token encodes the offset of the next page and a fingerprint of the query it belongs to
(parent, filter, order), so a token reused with another query answers INVALID_ARGUMENT
instead of a wrong page.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from visionmesh.errors import invalid_argument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# A token this service issues is about 60 characters and never points past the rows a
# query can have: bounded up front, so a forged token is refused before anything reads it.
MAX_TOKEN_CHARS = 256
MAX_OFFSET = 2**31 - 1
_BAD_TOKEN = "page_token is not a token this service issued: pass next_page_token unchanged"


@dataclass(frozen=True)
class Page:
    offset: int
    size: int
    fingerprint: str

    def next_token(self, returned: int, total: int) -> str:
        nxt = self.offset + returned
        if returned < self.size or nxt >= total:
            return ""
        raw = json.dumps({"o": nxt, "q": self.fingerprint}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _fingerprint(*query: object) -> str:
    return hashlib.sha256(json.dumps(query, default=str).encode()).hexdigest()[:16]


def page(page_size: int, page_token: str, *query: object) -> Page:
    if page_size < 0:
        raise invalid_argument(
            f"page_size must be >= 0, got {page_size}", "page_size", "must be between 0 and 1000"
        )
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    fingerprint = _fingerprint(*query)
    if not page_token:
        return Page(0, size, fingerprint)
    if len(page_token) > MAX_TOKEN_CHARS:
        raise invalid_argument(
            _BAD_TOKEN, "page_token", f"longer than {MAX_TOKEN_CHARS} characters"
        )
    try:
        padded = page_token + "=" * (-len(page_token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        offset = data["o"]
        token_query = data["q"]
    except (ValueError, KeyError, TypeError):
        raise invalid_argument(_BAD_TOKEN, "page_token") from None
    if type(offset) is not int or not isinstance(token_query, str):
        raise invalid_argument(_BAD_TOKEN, "page_token")
    if not 0 <= offset <= MAX_OFFSET:
        raise invalid_argument(
            _BAD_TOKEN, "page_token", f"offset {offset} is outside 0..{MAX_OFFSET}"
        )
    if token_query != fingerprint:
        raise invalid_argument(
            "page_token belongs to another query: keep filter and order_by as in the first "
            "request, or start over without a page_token",
            "page_token",
        )
    return Page(offset, size, fingerprint)
