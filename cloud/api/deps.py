"""Typed dependencies of the routes: settings, pooled database connections, the KEK, the caller.

The caller is a :class:`~cloud.auth.principal.Principal` (:data:`PrincipalDep`): a user's session
(bearer token or the ``ft_session`` cookie), a partner's API key, or the platform admin's token.  Routes
ask for scopes with :func:`require`; under ``/tenants/{tenant}/...`` another tenant answers 404.
:data:`TenantConnDep` is a connection in the principal's tenant scope (row-level security).

:data:`AdminDep` (platform admins only, ``Authorization: Bearer <admin token>``) stays for the routes
that have not moved to scopes.  With no admin token configured those routes answer 503 rather than run
open; development mode alone falls back to the well-known :data:`DEV_ADMIN_TOKEN`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from typing import Annotated, Any, Final

import psycopg
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool

from cloud.auth import api_keys, csrf, rate_limit, sessions
from cloud.auth import scopes as scope_table
from cloud.auth.events import security_event
from cloud.auth.principal import Principal
from cloud.config import CloudSettings
from cloud.metering import api_calls as metering
from cloud.store.scope import PLATFORM, Scope, scoped_connection, tenant_scope

DEV_ADMIN_TOKEN = "fieldtrust-dev-admin"  # noqa: S105 - development mode only, documented as well known
#: how long a request waits for a pooled connection before answering 503
CONNECTION_WAIT_S = 5.0
#: the scope of every connection dependency: its exit (the COMMIT) runs when the route function returns, before
#: the answer is sent.  FastAPI's default for ``yield`` dependencies ("request") runs it after the response has
#: gone out, so a client could be told 201 about a write whose commit then fails, and a read sent right after
#: the answer could miss the write (tests/test_api_commit.py).  A failed commit answers 500 instead.
COMMIT_BEFORE_ANSWER: Final = "function"

_bearer = HTTPBearer(auto_error=False, description="a session token (fts_...), an API key (ftk_...) or the admin "
                                                   "token (FIELDTRUST_ADMIN_TOKEN)")
_session_cookie = APIKeyCookie(name=sessions.COOKIE_NAME, auto_error=False,
                               description="the session cookie of web pages; writes need the X-CSRF-Token header")


def get_settings(request: Request) -> CloudSettings:
    return request.app.state.settings


def get_pool(request: Request) -> ConnectionPool:
    return request.app.state.pool


SettingsDep = Annotated[CloudSettings, Depends(get_settings)]
PoolDep = Annotated[ConnectionPool, Depends(get_pool)]


def scoped_conn(pool: ConnectionPool, tenant: Scope) -> Iterator[psycopg.Connection]:
    """A connection for one request whose transaction sees ``tenant``'s rows only, or every tenant's for
    :data:`~cloud.store.scope.PLATFORM` (row-level security, cloud.store.tenancy): committed when the
    route returns, rolled back if it raises.  The connection dependencies are built on it."""
    with scoped_connection(pool, tenant, timeout=CONNECTION_WAIT_S) as conn:
        yield conn


def get_conn(pool: PoolDep) -> Iterator[psycopg.Connection]:
    """A platform-scoped connection, for the routes behind :data:`AdminDep` (platform admins only)."""
    yield from scoped_conn(pool, PLATFORM)


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
    if not _is_admin_token(settings, credentials.credentials):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid admin token", headers={"WWW-Authenticate": "Bearer"})


ConnDep = Annotated[psycopg.Connection, Depends(get_conn, scope=COMMIT_BEFORE_ANSWER)]
KekDep = Annotated[bytes, Depends(get_kek)]
AdminDep = Depends(require_admin)


# -- principals: who calls, what they may do, and in which tenant --------------------------------------------
# (cloud/auth holds the pieces; here they meet the request.)  A request is authenticated by, in this order:
# the admin token (platform admin), an API key (ftk_...), a session token (fts_...) in the Authorization
# header, or else the ft_session cookie of a web page, whose unsafe requests must carry the CSRF token.


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})


def _is_admin_token(settings: CloudSettings, given: str) -> bool:
    expected = admin_token(settings)
    if not expected:
        return False
    # compare digests: constant time, and the length of the token does not leak either
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())


def get_principal(request: Request, settings: SettingsDep, pool: PoolDep,
                  _bearer_scheme: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                  cookie: Annotated[str | None, Depends(_session_cookie)]) -> Principal:
    """The caller of this request (401 when none, 403 for a cookie POST without CSRF token, 429 over the
    rate limit).  Resolved in a short transaction of its own, committed before the route runs, so a refusal's
    counters and security events are kept."""
    source_ip = request.client.host if request.client else None
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("the Authorization header must be 'Bearer <session token, API key or admin token>'")
        if _is_admin_token(settings, token):
            return scope_table.admin_principal(source_ip)
    elif cookie:
        token = cookie
    else:
        raise _unauthorized("not signed in: send 'Authorization: Bearer <token>' or sign in for a session cookie")

    with pool.connection(timeout=CONNECTION_WAIT_S) as conn:
        if token.startswith(api_keys.KEY_PREFIX):
            principal, refusal, limit = _by_api_key(conn, token, source_ip)
        elif token.startswith(sessions.TOKEN_PREFIX):
            principal, refusal = _by_session(conn, request, token, source_ip, from_cookie=authorization is None)
            limit = (rate_limit.USER_RATE_LIMIT, rate_limit.USER_RATE_WINDOW_S)
        else:
            principal, refusal = None, _unauthorized("invalid token: not a session token, API key or admin token")
        if principal is not None and refusal is None:
            tenant_scope(conn, principal.tenant_id)  # type: ignore[arg-type]  # users and keys have a tenant
            refusal = _over_rate_limit(conn, principal, *limit)
    if refusal is not None:
        raise refusal
    assert principal is not None
    metering.admit(request, principal)  # counted by cloud.metering's middleware; 402 over a hard quota
    return principal


def _by_api_key(conn: psycopg.Connection, key: str, source_ip: str | None
                ) -> tuple[Principal | None, HTTPException | None, tuple[int, int]]:
    check = api_keys.authenticate(conn, key, source_ip)
    limit = (check.rate_limit, check.rate_window_s)
    if check.principal is not None:
        return check.principal, None, limit
    if check.key_id is not None and check.tenant_id is not None:  # a key that exists: its refusal is audited
        tenant_scope(conn, check.tenant_id)
        security_event(conn, None, "api_key.refused", "api_key", check.key_id, tenant_id=check.tenant_id,
                       source_ip=source_ip, detail={"reason": check.refusal})
    reason = {"expired": "this API key has expired", "revoked": "this API key has been revoked"}
    return None, _unauthorized(reason.get(check.refusal or "", "invalid API key")), limit


def _by_session(conn: psycopg.Connection, request: Request, token: str, source_ip: str | None, *,
                from_cookie: bool) -> tuple[Principal | None, HTTPException | None]:
    session = sessions.resolve(conn, token, source_ip)
    if session is None:
        return None, _unauthorized("session expired or signed out: sign in again")
    if from_cookie:
        try:
            csrf.check(request.method, request.headers.get(csrf.HEADER), session.csrf_secret)
        except csrf.CsrfError as exc:
            return None, HTTPException(status.HTTP_403_FORBIDDEN, str(exc))
    return session.principal, None


def _over_rate_limit(conn: psycopg.Connection, principal: Principal, limit: int, window_s: int
                     ) -> HTTPException | None:
    """Count the request in the principal's bucket (API keys: their own limit; users: the users' limit)."""
    decision = rate_limit.hit(conn, f"{principal.kind}:{principal.id}", limit, window_s)
    if decision.allowed:
        return None
    if decision.count == limit + 1:  # once per window, not once per refused request
        security_event(conn, principal, "rate.limited", principal.kind, principal.id,
                       detail={"limit": limit, "window_s": window_s})
    retry = decision.retry_after_s
    return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                         f"rate limit of {limit} requests per {window_s} s reached; retry in {retry} s",
                         headers={"Retry-After": str(retry)})


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def _check_tenant_path(request: Request, principal: Principal) -> str | None:
    """The ``{tenant}`` of the path, refused as not found (404, so existence does not leak) unless it is the
    principal's tenant; platform admins reach every tenant."""
    tenant = request.path_params.get("tenant")
    if tenant is not None and principal.kind != "platform_admin" and tenant != principal.tenant_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"tenant {tenant!r} not found")
    return tenant


def require(*needed: str) -> Any:
    """A dependency: the principal, if it holds every scope in ``needed`` (else 403) and the path's
    ``{tenant}`` is its own (else 404).  ``principal: Annotated[Principal, require("users:admin")]``."""
    unknown = sorted(set(needed) - set(scope_table.SCOPES))
    if unknown:
        raise ValueError(f"require(): unknown scopes {unknown}")

    def check(request: Request, principal: PrincipalDep) -> Principal:
        _check_tenant_path(request, principal)
        missing = [scope for scope in needed if not principal.can(scope)]
        if missing:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"not allowed: this needs the scope {', '.join(missing)}")
        return principal

    return Depends(check)


def get_tenant_conn(request: Request, pool: PoolDep, principal: PrincipalDep) -> Iterator[psycopg.Connection]:
    """A connection in the principal's tenant scope (platform admins: the path's tenant, else platform scope).

    A platform admin may name any tenant, so theirs is looked up first: 404 for one that does not exist,
    rather than a route failing on it later (an audit entry of an unknown tenant breaks its foreign key)."""
    tenant = _check_tenant_path(request, principal)
    with scoped_connection(pool, principal.tenant_id or tenant or PLATFORM, timeout=CONNECTION_WAIT_S) as conn:
        if principal.kind == "platform_admin" and tenant is not None and conn.execute(
                "SELECT 1 FROM ft.tenants WHERE id = %s", (tenant,)).fetchone() is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"tenant {tenant!r} not found")
        yield conn


def get_anonymous_conn(pool: PoolDep) -> Iterator[psycopg.Connection]:
    """A connection in no scope: no tenant row is visible.  For the routes that come before a principal
    (sign-in, accepting an invitation), which set the scope once they know the tenant."""
    with pool.connection(timeout=CONNECTION_WAIT_S) as conn:
        yield conn


TenantConnDep = Annotated[psycopg.Connection, Depends(get_tenant_conn, scope=COMMIT_BEFORE_ANSWER)]
AnonymousConnDep = Annotated[psycopg.Connection, Depends(get_anonymous_conn, scope=COMMIT_BEFORE_ANSWER)]
