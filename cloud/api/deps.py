"""Typed dependencies of the routes: settings, a pooled database connection, the KEK, admin auth.

Until accounts exist, every route but health needs ``Authorization: Bearer <admin token>``.
With no token configured the API refuses those routes (503) rather than run open; development
mode alone falls back to the well-known :data:`DEV_ADMIN_TOKEN`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from typing import Annotated

import psycopg
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool

from cloud.config import CloudSettings

DEV_ADMIN_TOKEN = "fieldtrust-dev-admin"  # noqa: S105 - development mode only, documented as well known
#: how long a request waits for a pooled connection before answering 503
CONNECTION_WAIT_S = 5.0

_bearer = HTTPBearer(auto_error=False, description="the admin token (FIELDTRUST_ADMIN_TOKEN)")


def get_settings(request: Request) -> CloudSettings:
    return request.app.state.settings


def get_pool(request: Request) -> ConnectionPool:
    return request.app.state.pool


SettingsDep = Annotated[CloudSettings, Depends(get_settings)]
PoolDep = Annotated[ConnectionPool, Depends(get_pool)]


def get_conn(pool: PoolDep) -> Iterator[psycopg.Connection]:
    """A connection for one request: committed when the route returns, rolled back if it raises."""
    with pool.connection(timeout=CONNECTION_WAIT_S) as conn:
        yield conn


def get_kek(settings: SettingsDep) -> bytes:
    try:
        return settings.kek_bytes()
    except ValueError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"keys cannot be stored: {exc}") from None


def admin_token(settings: CloudSettings) -> str | None:
    """The token the API accepts: the configured one, else the well-known one in development mode."""
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    return DEV_ADMIN_TOKEN if settings.dev_mode else None


def require_admin(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    expected = admin_token(settings)
    if not expected:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "the API is closed: no admin token is configured (set FIELDTRUST_ADMIN_TOKEN)")
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing 'Authorization: Bearer <admin token>' header",
                            headers={"WWW-Authenticate": "Bearer"})
    # compare digests: constant time, and the length of the token does not leak either
    given_digest, expected_digest = (hashlib.sha256(t.encode()).digest() for t in (credentials.credentials, expected))
    if not hmac.compare_digest(given_digest, expected_digest):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid admin token", headers={"WWW-Authenticate": "Bearer"})


ConnDep = Annotated[psycopg.Connection, Depends(get_conn)]
KekDep = Annotated[bytes, Depends(get_kek)]
AdminDep = Depends(require_admin)
