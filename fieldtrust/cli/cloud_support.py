"""Shared steps of the ``fieldtrust cloud`` commands: settings, migrations, the KEK, one transaction.

Errors become a message on stderr and an exit status (2: bad configuration or argument,
1: refused by the registry or the database), never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import psycopg
import typer

from cloud.config import CloudSettings
from cloud.keys import KeyCryptoError, new_key
from cloud.store import db, scope
from cloud.store.registry import RegistryError

T = TypeVar("T")


def settings(database_url: str | None) -> CloudSettings:
    """The configured settings, with ``--database-url`` taking precedence."""
    loaded = CloudSettings()
    return loaded.model_copy(update={"database_url": database_url}) if database_url else loaded


def migrate(database_url: str, backend: db.Backend | None = None) -> list[str]:
    """Apply pending schema migrations (see :func:`cloud.store.migrate.migrate`); the names applied."""
    from cloud.store.migrate import MigrationError
    from cloud.store.migrate import migrate as run_migrations

    try:
        return run_migrations(database_url, backend=backend)
    except (MigrationError, psycopg.Error) as exc:
        typer.echo(f"migration failed: {exc}", err=True)
        raise typer.Exit(1) from None


def kek(config: CloudSettings) -> bytes:
    try:
        return config.kek_bytes()
    except ValueError as exc:
        typer.echo(f"cannot store keys: {exc}", err=True)
        raise typer.Exit(2) from None


def key_from_hex(key_hex: str | None) -> bytes:
    """``--key-hex`` as bytes, or a new random key when it was not given."""
    if key_hex is None:
        return new_key()
    try:
        return bytes.fromhex(key_hex.strip())
    except ValueError:
        typer.echo("--key-hex: not hexadecimal", err=True)
        raise typer.Exit(2) from None


def in_transaction(config: CloudSettings, action: Callable[[psycopg.Connection], T]) -> T:
    """``action(conn)`` in one committed transaction, as the owner in platform scope (an operator's command
    may touch any tenant; the owner is subject to row-level security too when it is not a superuser)."""
    try:
        with db.connect(config.database_url, application="fieldtrust-cli") as conn:
            scope.platform_scope(conn)
            result = action(conn)
            conn.commit()
            return result
    except (RegistryError, KeyCryptoError, ValueError) as exc:
        typer.echo(f"refused: {exc}", err=True)
    except psycopg.Error as exc:
        typer.echo(f"database error: {exc}", err=True)
    raise typer.Exit(1)
