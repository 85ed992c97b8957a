"""Partners' API keys: ``ftk_<prefix>_<secret>``, with scopes, an optional expiry, a rate limit, revocation.

A key is shown once, in the answer to its creation.  The 12-hex-digit prefix is not secret: it finds the
key's row (``ft.auth_api_key``, SECURITY DEFINER, since no tenant is known before the key is) and names the
key in lists and logs.  The database keeps the SHA-256 of the whole key, compared in constant time
(:mod:`cloud.auth.tokens` says why a fast hash is right for 256 random bits).

:func:`authenticate` tells an unknown key from an expired or revoked one, so the refusal of a key that
once worked is audited with its reason; the HTTP answer is the same 401 for all of them.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import psycopg
from psycopg.rows import class_row

from cloud.auth import scopes as scope_table
from cloud.auth import tokens
from cloud.auth.principal import Principal
from cloud.store.db import ROW_SCHEMA
from cloud.store.scope import tenant_scope

KEY_PREFIX = "ftk_"
KEY_PATTERN = re.compile(r"^ftk_(?P<prefix>[0-9a-f]{12})_[A-Za-z0-9_-]{43}$")
#: default rate limit of a key: requests per window
DEFAULT_RATE_LIMIT, DEFAULT_RATE_WINDOW_S = 600, 60
TOUCH_EVERY = timedelta(minutes=1)

Refusal = Literal["malformed", "unknown", "wrong_secret", "expired", "revoked"]


@dataclass(frozen=True)
class ApiKey:
    """A partner's API key (never its secret)."""

    __pydantic_config__ = ROW_SCHEMA
    id: str
    tenant_id: str
    name: str
    prefix: str
    """the key's public part: ftk_<prefix>_..."""
    scopes: list[str]
    rate_limit: int
    """requests allowed per rate window"""
    rate_window_s: int
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    """to the minute"""
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class KeyCheck:
    """The outcome of presenting a key: a principal, or why not (and which key, when one was found)."""

    principal: Principal | None
    refusal: Refusal | None = None
    key_id: str | None = None
    tenant_id: str | None = None
    rate_limit: int = DEFAULT_RATE_LIMIT
    rate_window_s: int = DEFAULT_RATE_WINDOW_S


_COLUMNS = ("id, tenant_id, name, prefix, scopes, rate_limit, rate_window_s, expires_at, revoked_at, last_used_at,"
            " created_by, created_at")


def create(conn: psycopg.Connection, tenant_id: str, name: str, scopes: Iterable[str], created_by: str, *,
           expires_at: datetime | None = None, rate_limit: int = DEFAULT_RATE_LIMIT,
           rate_window_s: int = DEFAULT_RATE_WINDOW_S) -> tuple[ApiKey, str]:
    """A new key of ``tenant_id`` (the transaction is in its scope) and the key itself, to show once.

    Raises ValueError for scopes an API key may not have.
    """
    granted = sorted(scope_table.check_api_key_scopes(scopes))
    prefix = secrets.token_hex(6)
    key = tokens.new_token(f"{KEY_PREFIX}{prefix}_")
    with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        row = cur.execute(
            f"INSERT INTO ft.api_keys (id, tenant_id, name, prefix, secret_hash, scopes, rate_limit, rate_window_s,"
            f" expires_at, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (f"k_{secrets.token_hex(8)}", tenant_id, name, prefix, tokens.digest(key), granted, rate_limit,
             rate_window_s, expires_at, created_by)).fetchone()
    assert row is not None
    return row, key


def list_keys(conn: psycopg.Connection, tenant_id: str) -> list[ApiKey]:
    with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        return cur.execute(f"SELECT {_COLUMNS} FROM ft.api_keys WHERE tenant_id = %s ORDER BY created_at, id",
                           (tenant_id,)).fetchall()


def revoke(conn: psycopg.Connection, tenant_id: str, key_id: str) -> ApiKey | None:
    """Revoke a key (again: no change); None when the tenant has no such key."""
    with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        return cur.execute(
            f"UPDATE ft.api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE tenant_id = %s AND id = %s"
            f" RETURNING {_COLUMNS}", (tenant_id, key_id)).fetchone()


def authenticate(conn: psycopg.Connection, key: str, source_ip: str | None) -> KeyCheck:
    """Check a presented key.  A valid key's use is recorded (to the minute) in its tenant's scope, which the
    transaction is left in."""
    match = KEY_PATTERN.match(key)
    if match is None:
        return KeyCheck(None, "malformed")
    row = conn.execute(
        "SELECT id, tenant_id, scopes, secret_hash, rate_limit, rate_window_s, expires_at <= now(),"
        " revoked_at IS NOT NULL FROM ft.auth_api_key(%s)", (match["prefix"],)).fetchone()
    if row is None:
        return KeyCheck(None, "unknown")
    key_id, tenant_id, key_scopes, secret_hash, rate_limit, rate_window_s, expired, revoked = row
    found = {"key_id": key_id, "tenant_id": tenant_id, "rate_limit": rate_limit, "rate_window_s": rate_window_s}
    if not hmac.compare_digest(bytes(secret_hash), tokens.digest(key)):
        return KeyCheck(None, "wrong_secret", **found)
    if revoked:
        return KeyCheck(None, "revoked", **found)
    if expired:
        return KeyCheck(None, "expired", **found)
    tenant_scope(conn, tenant_id)
    conn.execute("UPDATE ft.api_keys SET last_used_at = now() WHERE id = %s"
                 " AND (last_used_at IS NULL OR last_used_at < now() - %s)", (key_id, TOUCH_EVERY))
    principal = Principal(kind="api_key", id=key_id, tenant_id=tenant_id, roles=frozenset(),
                          scopes=frozenset(key_scopes), source_ip=source_ip)
    return KeyCheck(principal, None, **found)
