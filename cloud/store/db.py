"""Connections to the store: psycopg 3 connections, a pool factory, and which backend a database is.

Every process of the cloud talks to PostgreSQL through these few functions, so connection
settings (time zone, application name, timeouts) are the same everywhere.  Sessions run in UTC:
bucket boundaries and partition bounds are UTC days and hours, whatever the server's default.
"""

from __future__ import annotations

import weakref
from typing import Literal

import psycopg
from psycopg_pool import ConnectionPool
from pydantic import ConfigDict

Backend = Literal["timescale", "postgres"]

#: ``__pydantic_config__`` of the row types the API answers with: their fields' docstrings describe the fields
ROW_SCHEMA = ConfigDict(use_attribute_docstrings=True)

APPLICATION_NAME = "fieldtrust"
_SESSION_OPTIONS = "-c TimeZone=UTC"


def connect(conninfo: str, *, autocommit: bool = False, application: str = APPLICATION_NAME) -> psycopg.Connection:
    """A new connection in UTC, named ``application`` in pg_stat_activity."""
    return psycopg.connect(
        conninfo, autocommit=autocommit, application_name=application, options=_SESSION_OPTIONS, connect_timeout=10
    )


def pool(
    conninfo: str,
    *,
    min_size: int = 1,
    max_size: int = 4,
    application: str = APPLICATION_NAME,
    open: bool = True,
) -> ConnectionPool:
    """A connection pool whose connections are configured like :func:`connect`'s.

    The caller owns it and closes it (``with pool(...) as p:`` or ``p.close()``).
    """
    return ConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        kwargs={"application_name": application, "options": _SESSION_OPTIONS, "connect_timeout": 10},
        name=application,
        open=open,
    )


def timescale_available(conn: psycopg.Connection) -> bool:
    """Whether ``CREATE EXTENSION timescaledb`` can succeed on this server.

    The extension must be installed (``pg_available_extensions``) and preloaded
    (``shared_preload_libraries``); installed but not preloaded fails at CREATE EXTENSION.
    """
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),"
        " current_setting('shared_preload_libraries')"
    ).fetchone()
    assert row is not None
    available, preload = row
    return bool(available) and "timescaledb" in {lib.strip() for lib in preload.split(",")}


def backend(conn: psycopg.Connection) -> Backend:
    """The backend this database's readings schema was built for: "timescale" or "postgres".

    Read from the migration ledger (the backend recorded when the schema was migrated), so a
    database stays on its layout even if TimescaleDB is installed on the server later.  A
    database without the ledger yet is judged by the installed extension.  The answer is
    remembered per connection once the ledger has it (it cannot change after that).
    """
    known = _backends.get(conn)
    if known is not None:
        return known
    ledger = conn.execute("SELECT to_regclass('ft.schema_migrations') IS NOT NULL").fetchone()
    if ledger and ledger[0]:
        row = conn.execute("SELECT backend FROM ft.schema_migrations ORDER BY version DESC LIMIT 1").fetchone()
        if row is not None and row[0] in ("timescale", "postgres"):
            _backends[conn] = row[0]
            return row[0]
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')").fetchone()
    return "timescale" if row and row[0] else "postgres"


_backends: weakref.WeakKeyDictionary[psycopg.Connection, Backend] = weakref.WeakKeyDictionary()
