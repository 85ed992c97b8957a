"""Whose rows a transaction may see: one tenant's, or the whole platform's.

Row-level security on every tenant-owned table (cloud.store.tenancy) compares each row's
``tenant_id`` with ``ft.current_tenant()`` (the setting ``ft.tenant``) or lets every row through
in platform scope (``ft.scope = 'platform'``).  Services set one of the two at the start of every
transaction with :func:`tenant_scope` or :func:`platform_scope`; the settings are local to the
transaction (``set_config(..., true)``), so a pooled connection handed to the next request starts
with neither, and then every tenant-owned table is empty to it.  Setting one scope clears the
other, so a transaction never holds both.

Platform scope is for trusted platform services only: the ingest (it writes every tenant's
readings), the downlink publisher, the store's upkeep, platform admins.  A dedicated connection
of such a service that never serves a tenant may set it for the whole session with
:func:`platform_session` (the ingest's autocommit lookups are each their own transaction).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool


class PlatformScope(enum.Enum):
    """The type of :data:`PLATFORM`: every tenant's rows (trusted platform services only)."""

    PLATFORM = "platform"


#: the scope of trusted platform services: every tenant's rows
PLATFORM: Final = PlatformScope.PLATFORM
#: a tenant id, or :data:`PLATFORM`
Scope = str | PlatformScope

_SET = "SELECT set_config('ft.tenant', %s, {local}), set_config('ft.scope', %s, {local})"
_SET_LOCAL = _SET.format(local="true")
_SET_SESSION = _SET.format(local="false")


def tenant_scope(conn: psycopg.Connection, tenant_id: str) -> None:
    """Let the current transaction see ``tenant_id``'s rows only (and write rows of that tenant only)."""
    if not isinstance(tenant_id, str) or not tenant_id:
        raise ValueError(f"tenant scope needs a tenant id; got {tenant_id!r}")
    _require_transaction(conn)
    conn.execute(_SET_LOCAL, (tenant_id, ""))


def platform_scope(conn: psycopg.Connection) -> None:
    """Let the current transaction see every tenant's rows (trusted platform services only)."""
    _require_transaction(conn)
    conn.execute(_SET_LOCAL, ("", "platform"))


def set_scope(conn: psycopg.Connection, scope: Scope) -> None:
    """:func:`platform_scope` for :data:`PLATFORM`, else :func:`tenant_scope` of the tenant id."""
    if isinstance(scope, PlatformScope):
        platform_scope(conn)
    else:
        tenant_scope(conn, scope)


def platform_session(conn: psycopg.Connection) -> None:
    """Platform scope for every transaction of this connection, until it closes.

    Only for a connection of its own that a platform service never lends to a tenant's work
    (never a pooled one): an autocommit connection's statements are each a transaction, too
    short-lived for :func:`platform_scope`.
    """
    idle = conn.info.transaction_status == pq.TransactionStatus.IDLE
    conn.execute(_SET_SESSION, ("", "platform"))
    if idle and not conn.autocommit:
        conn.commit()  # a session setting made in a transaction that rolled back would be undone with it


@contextmanager
def scoped_connection(pool: ConnectionPool, scope: Scope, *, timeout: float) -> Iterator[psycopg.Connection]:
    """A pooled connection whose transaction is scoped to ``scope``; committed at the end of the block,
    rolled back if it raises (the scope ends with the transaction either way).

    The API's connection dependencies are built on this: ``PLATFORM`` for platform admins, the
    principal's tenant otherwise.
    """
    with pool.connection(timeout=timeout) as conn:
        set_scope(conn, scope)
        yield conn


def _require_transaction(conn: psycopg.Connection) -> None:
    """A transaction-local setting on an autocommit connection outside a transaction would end with the
    statement that sets it: refuse rather than scope nothing."""
    if conn.autocommit and conn.info.transaction_status == pq.TransactionStatus.IDLE:
        raise RuntimeError("a scope is set inside a transaction: use `with conn.transaction():` on an autocommit "
                           "connection (or platform_session for a dedicated platform connection)")
