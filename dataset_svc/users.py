"""Sign-up, password checks (argon2id via argon2-cffi) and slowing down password guessing.

Usernames are normalized before anything else: Unicode NFKC, surrounding whitespace
removed; then 3-64 characters of letters, digits, ``.``, ``_`` and ``-`` (so no control
characters). They are unique regardless of case (``users.username_key``): ``Alice`` and
``alice\\n`` are the account ``alice``, and sign in as it.

Passwords: at least :data:`MIN_PASSWORD` characters not counting surrounding whitespace,
at most :data:`MAX_PASSWORD`, not one of the common passwords in ``common_passwords.txt``
and not the username (both compared case-insensitively).

Sign-in attempts are throttled by :class:`LoginThrottle`, per account and per client address
(behind the gateway: the browser's address the gateway sends as ``x-forwarded-for``, trusted
only from the addresses in ``VISIONMESH_TRUSTED_PROXIES``).
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dataset_svc.catalog.models import User
from dataset_svc.settings import IPNetwork
from visionmesh.errors import (
    already_exists,
    invalid_argument,
    invalid_fields,
    resource_exhausted,
    unauthenticated,
)

USERNAME = re.compile(r"[A-Za-z0-9._-]{3,64}")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_USERNAME_INPUT = 256  # what is normalized at all; longer input is refused outright
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")

_hasher = PasswordHasher()
# Verified against when the user does not exist, so timing does not reveal usernames.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


@functools.cache
def common_passwords() -> frozenset[str]:
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(
        line.strip().casefold() for line in lines if line.strip() and not line.startswith("#")
    )


def normalize_username(raw: str) -> str:
    """The canonical form of a username as typed (NFKC, no surrounding whitespace)."""
    return unicodedata.normalize("NFKC", raw[:MAX_USERNAME_INPUT]).strip()


def username_key(username: str) -> str:
    """What uniqueness and sign-in compare: the canonical username, case folded."""
    return username.casefold()


def username_problem(raw: str) -> str | None:
    if len(raw) > MAX_USERNAME_INPUT:
        return f"at most 64 characters, got {len(raw)}"
    name = normalize_username(raw)
    if any(unicodedata.category(c) == "Cc" for c in name):
        return "must not contain control characters"
    if not USERNAME.fullmatch(name):
        return "3-64 characters: letters, digits, '.', '_' and '-'"
    return None


def password_problem(password: str, username: str) -> str | None:
    stripped = password.strip()
    if len(password) > MAX_PASSWORD:
        return f"at most {MAX_PASSWORD} characters"
    if len(stripped) < MIN_PASSWORD:
        return (
            f"at least {MIN_PASSWORD} characters, not counting spaces at either end "
            f"(got {len(stripped)})"
        )
    folded = stripped.casefold()
    if folded in common_passwords():
        return "must not be one of the most common passwords: choose one nobody would guess"
    if folded == username_key(username):
        return "must not be the username"
    return None


def validate_registration(username: str, password: str) -> str:
    """The canonical username, or INVALID_ARGUMENT naming each bad field."""
    problems = []
    if why := username_problem(username):
        problems.append(("username", why))
    if why := password_problem(password, normalize_username(username)):
        problems.append(("password", why))
    if problems:
        raise invalid_fields("; ".join(f"{field}: {why}" for field, why in problems), problems)
    return normalize_username(username)


def _taken(username: str) -> Exception:
    return already_exists(f"username {username!r} is taken: choose another", "username")


def register(session: Session, username: str, password: str) -> User:
    name = validate_registration(username, password)
    key = username_key(name)
    if session.scalars(select(User.id).where(User.username_key == key)).first() is not None:
        raise _taken(name)
    user = User(username=name, username_key=key, password_hash=_hasher.hash(password))
    session.add(user)
    try:
        session.flush()
    except IntegrityError:  # a concurrent registration won the race
        raise _taken(name) from None
    return user


def find_for_login(session: Session, username: str) -> User | None:
    """The account a sign-in names: by its case-folded canonical name (an account from
    before usernames were folded, whose folded name another took, by its exact name)."""
    name = normalize_username(username)
    rows = session.scalars(
        select(User).where(or_(User.username_key == username_key(name), User.username == name))
    ).all()
    exact = [u for u in rows if u.username == name]
    return exact[0] if exact else (rows[0] if rows else None)


def authenticate(session: Session, username: str, password: str) -> User:
    """The user if the password matches; UNAUTHENTICATED (same message either way) if not."""
    if not username.strip():
        raise invalid_argument("username is required", "username")
    if not password:
        raise invalid_argument("password is required", "password")
    if len(username) > MAX_USERNAME_INPUT or len(password) > MAX_PASSWORD:
        raise unauthenticated("wrong username or password")
    user = find_for_login(session, username)
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        user = None
    if user is None:
        raise unauthenticated("wrong username or password")
    return user


def by_username(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username)).first()


# -- throttling ------------------------------------------------------------------------------


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0


class LoginThrottle:
    """Slows password guessing per account and per client address.

    After ``max_failures`` failed sign-ins in a row for one account (or
    ``client_max_failures`` from one client address, over any accounts), every further
    attempt, right or wrong, is refused with RESOURCE_EXHAUSTED for a delay that doubles
    with each further failure: 1 s, 2 s, 4 s, ... up to ``max_delay`` (15 minutes). The
    message says how long to wait. A successful sign-in clears the account's count; a
    count is forgotten after ``forget_after`` seconds without failures.
    Kept in memory per dataset_svc process.
    """

    MAX_ENTRIES = 100_000

    def __init__(
        self,
        max_failures: int = 5,
        client_max_failures: int = 20,
        *,
        base_delay: float = 1.0,
        max_delay: float = 900.0,
        forget_after: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.client_max_failures = client_max_failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], _Failures] = {}

    def _wait(self, key: tuple[str, str], limit: int, now: float) -> float:
        entry = self._failures.get(key)
        if entry is None or limit <= 0 or entry.count < limit:
            return 0.0
        delay = min(self.base_delay * 2 ** (entry.count - limit), self.max_delay)
        return max(0.0, entry.last + delay - now)

    def check(self, username: str, client: str) -> None:
        """RESOURCE_EXHAUSTED while the account or the client must wait."""
        account = ("account", username_key(normalize_username(username)))
        now = self.clock()
        with self._lock:
            waits = [
                ("this account", self._wait(account, self.max_failures, now)),
                ("this client", self._wait(("client", client), self.client_max_failures, now)),
            ]
        who, wait = max(waits, key=lambda w: w[1])
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise resource_exhausted(
                f"too many failed sign-ins for {who}: retry after {seconds} s "
                f"(retry-after: {seconds})"
            )

    def failed(self, username: str, client: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) >= self.MAX_ENTRIES:
                self._forget_old(now)
            for key in (
                ("account", username_key(normalize_username(username))),
                ("client", client),
            ):
                entry = self._failures.get(key)
                if entry is None or now - entry.last > self.forget_after:
                    entry = self._failures[key] = _Failures()
                entry.count += 1
                entry.last = now

    def succeeded(self, username: str) -> None:
        """Clears the account's count (not the client's: signing in to an account of
        one's own must not reset the count of guesses at others)."""
        with self._lock:
            self._failures.pop(("account", username_key(normalize_username(username))), None)

    def _forget_old(self, now: float) -> None:
        old = [k for k, v in self._failures.items() if now - v.last > self.forget_after]
        for key in old:
            del self._failures[key]
        if len(self._failures) >= self.MAX_ENTRIES:  # still full: forget the oldest half
            by_age = sorted(self._failures, key=lambda k: self._failures[k].last)
            for key in by_age[: len(by_age) // 2]:
                del self._failures[key]


def _in_networks(address: str, networks: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # unix:/path and other non-IP peers
        return False
    return any(ip in net for net in networks)


def client_address(peer: str) -> str:
    """The address part of a gRPC peer string (``ipv4:127.0.0.1:5000`` -> ``127.0.0.1``)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]") or rest
    return peer


def login_client(peer: str, metadata: Iterable[Any], trusted_proxies: Sequence[IPNetwork]) -> str:
    """The client address a sign-in is counted against: the gRPC peer's, or, when that
    peer is in a trusted proxy range (the gateway), the last address of its
    ``x-forwarded-for``."""
    address = client_address(peer)
    if not _in_networks(address, trusted_proxies):
        return address
    for key, value in metadata:
        if key == "x-forwarded-for" and isinstance(value, str) and value.strip():
            return value.split(",")[-1].strip()[:64]
    return address
