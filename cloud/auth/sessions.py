"""Sessions of signed-in users: the bearer token of apps and the ``ft_session`` cookie of web pages.

A session token (``fts_`` + 256 random bits) is shown once, at sign-in; the database keeps its SHA-256
(:mod:`cloud.auth.tokens`).  A session ends at the first of: its absolute lifetime
(:data:`SESSION_TTL`), :data:`SESSION_IDLE` without a request, sign-out, or its user being disabled.
Each session has its own CSRF secret (:mod:`cloud.auth.csrf`).  ``last_seen_at`` is written at most
once per :data:`TOUCH_EVERY`, so reading pages does not write a row per request.

Lookups by token run before any tenant is known, through ``ft.auth_session`` (SECURITY DEFINER); writes
run in the session's tenant scope.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from cloud.auth import scopes, tokens
from cloud.auth.principal import Principal
from cloud.store.scope import tenant_scope

TOKEN_PREFIX = "fts_"
#: the session cookie of web pages (Secure, HttpOnly, SameSite=Lax)
COOKIE_NAME = "ft_session"
SESSION_TTL = timedelta(hours=12)
SESSION_IDLE = timedelta(hours=2)
TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class NewSession:
    token: str  # shown once
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf_secret: str
    expires_at: datetime


def create(conn: psycopg.Connection, principal: Principal, user_agent: str | None) -> NewSession:
    """A new session of the user ``principal`` (the transaction is in the user's tenant scope)."""
    assert principal.kind == "user" and principal.tenant_id is not None
    token, csrf_secret = tokens.new_token(TOKEN_PREFIX), secrets.token_urlsafe(32)
    row = conn.execute(
        "INSERT INTO ft.sessions (token_hash, tenant_id, user_id, csrf_secret, expires_at, source_ip, user_agent)"
        " VALUES (%s, %s, %s, %s, now() + %s, %s, %s) RETURNING expires_at",
        (tokens.digest(token), principal.tenant_id, principal.id, csrf_secret, SESSION_TTL, principal.source_ip,
         (user_agent or "")[:500] or None)).fetchone()
    assert row is not None
    # the user's ended sessions go when a new one starts: the table holds live sessions and few others
    conn.execute("DELETE FROM ft.sessions WHERE user_id = %s AND (expires_at <= now() OR last_seen_at <= now() - %s)",
                 (principal.id, SESSION_IDLE))
    return NewSession(token=token, csrf_token=csrf_secret, expires_at=row[0])


def resolve(conn: psycopg.Connection, token: str, source_ip: str | None) -> Session | None:
    """The live session of ``token``, or None (unknown, ended, or its user no longer active).

    Leaves the transaction in the session's tenant scope when it had to record the request's time.
    """
    row = conn.execute(
        "SELECT user_id, tenant_id, roles, farmer_id, csrf_secret, expires_at, last_seen_at < now() - %s"
        " FROM ft.auth_session(%s, %s)", (TOUCH_EVERY, tokens.digest(token), SESSION_IDLE)).fetchone()
    if row is None:
        return None
    user_id, tenant_id, roles, farmer_id, csrf_secret, expires_at, stale = row
    if stale:
        tenant_scope(conn, tenant_id)
        conn.execute("UPDATE ft.sessions SET last_seen_at = now() WHERE token_hash = %s", (tokens.digest(token),))
    principal = scopes.user_principal(user_id, tenant_id, roles, farmer_id, source_ip)
    return Session(principal=principal, csrf_secret=csrf_secret, expires_at=expires_at)


def end(conn: psycopg.Connection, token: str) -> bool:
    """End the session of ``token`` (sign-out; the transaction is in its tenant scope).  Whether it existed."""
    return conn.execute("DELETE FROM ft.sessions WHERE token_hash = %s", (tokens.digest(token),)).rowcount > 0


def end_all(conn: psycopg.Connection, user_id: str) -> int:
    """End every session of a user (disabled, roles changed); the number ended."""
    return conn.execute("DELETE FROM ft.sessions WHERE user_id = %s", (user_id,)).rowcount
