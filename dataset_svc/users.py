"""Sign-up and password checks (argon2id via argon2-cffi)."""

from __future__ import annotations

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dataset_svc.catalog.models import User
from dataset_svc.errors import already_exists, invalid_argument, invalid_fields, unauthenticated

USERNAME = re.compile(r"^[A-Za-z0-9._-]{3,64}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024

_hasher = PasswordHasher()
# Verified against when the user does not exist, so timing does not reveal usernames.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def validate_registration(username: str, password: str) -> None:
    problems = []
    if not USERNAME.match(username):
        problems.append(("username", "3-64 characters: letters, digits, '.', '_' and '-'"))
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        problems.append(("password", f"must be {MIN_PASSWORD}-{MAX_PASSWORD} characters"))
    if problems:
        raise invalid_fields("; ".join(f"{field}: {why}" for field, why in problems), problems)


def register(session: Session, username: str, password: str) -> User:
    validate_registration(username, password)
    if session.scalars(select(User).where(User.username == username)).first() is not None:
        raise already_exists(f"username {username!r} is taken: choose another", "username")
    user = User(username=username, password_hash=_hasher.hash(password))
    session.add(user)
    try:
        session.flush()
    except IntegrityError:  # a concurrent registration won the race
        raise already_exists(
            f"username {username!r} is taken: choose another", "username"
        ) from None
    return user


def authenticate(session: Session, username: str, password: str) -> User:
    """The user if the password matches; UNAUTHENTICATED (same message either way) if not."""
    if not username:
        raise invalid_argument("username is required", "username")
    if not password:
        raise invalid_argument("password is required", "password")
    user = session.scalars(select(User).where(User.username == username)).first()
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        user = None
    if user is None:
        raise unauthenticated("wrong username or password")
    return user


def by_username(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username)).first()
