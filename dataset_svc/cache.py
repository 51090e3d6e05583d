"""In-process caches for the hot read path (GetDataset, ListDatasets and every authorized call).

Profiled (cProfile inside the server): a GetDataset ran 16 catalog queries through the
SQLAlchemy ORM (caller, dataset, owner, three counts, categories and eight for the health
summary) plus an EdDSA signature check of the caller's token, about 9 ms of the server's
CPU per call on this machine, against one lookup for a minimal server. Kept here:

- :class:`CachingVerifier`: a token verified once is trusted until it expires (the
  signature cannot change; an expired token is verified again, which refuses it).
- :class:`UserCache`: the caller's row by username (users are never renamed or deleted;
  entries live ``ttl`` seconds all the same).
- :class:`DatasetStatsCache`: counts, categories and health of a dataset, keyed by the
  dataset's id **and** ``update_time``. Every write that changes images, annotations or
  categories touches ``update_time`` in its transaction (uploads, image deletion,
  imports, updates), so a stale entry is never served: the key changes with the data,
  on every replica.

All are bounded (least recently used entries go first) and safe to share between threads.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from visionmesh import auth

V = TypeVar("V")


class LRU(Generic[V]):
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def pop(self, key: Hashable) -> None:
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class CachingVerifier:
    """A :class:`visionmesh.auth.TokenVerifier` that remembers tokens it accepted."""

    def __init__(self, verifier: auth.TokenVerifier, size: int = 10_000) -> None:
        self.verifier = verifier
        self._accepted: LRU[auth.Identity] = LRU(size)

    def verify(self, token: str | bytes | None) -> auth.Identity:
        key = token.decode("utf-8", "replace") if isinstance(token, bytes) else token
        if key:
            identity = self._accepted.get(key)
            if identity is not None:
                if identity.expires_at > datetime.now(UTC):
                    return identity
                self._accepted.pop(key)  # verified again below: refused as expired
        identity = self.verifier.verify(token)
        if key:
            self._accepted.put(key, identity)
        return identity

    def __getattr__(self, name: str) -> Any:  # algorithm, issuer, ... of the real verifier
        return getattr(self.verifier, name)


class UserCache:
    """username -> a detached copy of the user's row, for ``ttl`` seconds."""

    def __init__(self, ttl: float = 60.0, size: int = 10_000) -> None:
        self.ttl = ttl
        self._users: LRU[tuple[float, Any]] = LRU(size)

    def get(self, username: str, load: Callable[[str], Any | None]) -> Any | None:
        hit = self._users.get(username)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        user = load(username)
        if user is not None:
            self._users.put(username, (now, user))
        return user


class DatasetStatsCache:
    """(dataset id, update_time) -> what summarizing the dataset's rows gave."""

    def __init__(self, size: int = 4096) -> None:
        self._stats: LRU[Any] = LRU(size)

    @staticmethod
    def key(dataset_id: str, update_time: datetime | str, part: str) -> tuple[str, str, str]:
        # str(): a datetime and SQLite's stored text of it give the same key.
        return (dataset_id, str(update_time), part)

    def get(self, key: tuple[str, str, str]) -> Any | None:
        return self._stats.get(key)

    def put(self, key: tuple[str, str, str], value: Any) -> None:
        self._stats.put(key, value)


users = UserCache()
stats = DatasetStatsCache()
