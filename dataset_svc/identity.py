"""The signed-in caller as a catalog row.

The shared :class:`visionmesh.auth.AuthInterceptor` has already verified the token (missing,
expired and forged tokens never reach a handler); this maps its subject to the user row.
A valid token for a user the catalog does not know (e.g. the catalog was reset but the
signing key kept) is UNAUTHENTICATED too. Rows are cached per username
(:mod:`dataset_svc.cache`): a copy attached to no session.
"""

from __future__ import annotations

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from dataset_svc import cache
from dataset_svc.catalog.models import User
from visionmesh import auth
from visionmesh.errors import unauthenticated

PUBLIC_METHODS = (
    "/visionmesh.v1.AuthService/Register",
    "/visionmesh.v1.AuthService/Login",
)


def _detached(db: Session | Connection, username: str) -> User | None:
    """A copy of the user's row that belongs to no session (shared between calls)."""
    row = db.execute(
        select(User.id, User.username, User.username_key, User.create_time).where(
            User.username == username
        )
    ).first()
    if row is None:
        return None
    return User(
        id=row.id,
        username=row.username,
        username_key=row.username_key,
        password_hash="",  # never needed after sign-in; not kept in memory
        create_time=row.create_time,
    )


def caller(session: Session | Connection) -> User:
    identity = auth.current_identity()
    if identity is None:  # only reachable if the interceptor was not installed
        raise unauthenticated("no access token: sign in with AuthService/Login")
    user = cache.users.get(identity.username, lambda name: _detached(session, name))
    if user is None:
        raise unauthenticated(
            f"the token's user {identity.username!r} does not exist here: register or sign in again"
        )
    return user
