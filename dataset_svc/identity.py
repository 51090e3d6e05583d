"""The signed-in caller as a catalog row.

The shared :class:`visionmesh.auth.AuthInterceptor` has already verified the token (missing,
expired and forged tokens never reach a handler); this maps its subject to the user row.
A valid token for a user the catalog does not know (e.g. the catalog was reset but the
signing key kept) is UNAUTHENTICATED too.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from dataset_svc import users
from dataset_svc.catalog.models import User
from dataset_svc.errors import unauthenticated
from visionmesh import auth

PUBLIC_METHODS = (
    "/visionmesh.v1.AuthService/Register",
    "/visionmesh.v1.AuthService/Login",
)


def caller(session: Session) -> User:
    identity = auth.current_identity()
    if identity is None:  # only reachable if the interceptor was not installed
        raise unauthenticated("no access token: sign in with AuthService/Login")
    user = users.by_username(session, identity.username)
    if user is None:
        raise unauthenticated(
            f"the token's user {identity.username!r} does not exist here: register or sign in again"
        )
    return user
