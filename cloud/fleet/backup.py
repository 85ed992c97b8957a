"""Backup and restore of the store: ``pg_dump`` of schema ``ft`` (and the ``ft_*`` schemas beside it) in custom
format, ``pg_restore`` of it.

The dump holds every table, view, function, row-level security policy and the grants to ``ft_app``
(object privileges are part of each object in a dump).  Roles themselves are cluster-wide and not in
it: :func:`restore` makes sure ``ft_app`` exists (NOSUPERUSER, NOBYPASSRLS, as migration 040 makes it)
before restoring, so the grants and policies land on the right role.  Both run as the database
owner (``FIELDTRUST_DATABASE_URL``); the owner of a restored object is the restoring role unless
``keep_owner`` (same owner on both sides).

A restore goes into an empty database only: one that has a schema ``ft`` already is refused unless
``force``, which drops what the dump holds first (``pg_restore --clean --if-exists``).  The restore
is one transaction (``--single-transaction --exit-on-error``): it applies whole or not at all.

TimescaleDB databases need the extension's pre/post restore steps (``timescaledb_pre_restore()``),
which this does not run: back them up with the extension's own procedure (docs/deployment.md).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg

from cloud.config import APP_ROLE
from cloud.store import db

SCHEMA = "ft"
TIMEOUT_S = 6 * 3600


class BackupError(RuntimeError):
    """pg_dump / pg_restore missing or failing, or a restore refused."""


@dataclass(frozen=True)
class BackupInfo:
    path: Path
    bytes: int
    tables: int


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(f"{name} not found on PATH: install the PostgreSQL client tools (postgresql-client)")
    return path


def _run(cmd: list[str], what: str) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise BackupError(f"{what} did not finish within {TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise BackupError(f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")


def backup(database_url: str, out: Path) -> BackupInfo:
    """Dump schema ``ft`` of the database at ``database_url`` to ``out`` (custom format); written via a temporary
    file renamed into place, so ``out`` is never a partial dump."""
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    with db.connect(database_url, autocommit=True, application="fieldtrust-backup") as conn:
        schemas = our_schemas(conn)
    if not schemas:
        raise BackupError(f"the database has no schema {SCHEMA!r}: nothing to back up")
    _run([_tool("pg_dump"), "--format=custom", *(f"--schema={s}" for s in schemas), "--no-password",
          f"--file={tmp}", f"--dbname={database_url}"], "pg_dump")
    tmp.replace(out)
    listing = subprocess.run([_tool("pg_restore"), "--list", str(out)], capture_output=True, text=True, check=False,
                             timeout=600)
    tables = sum(1 for line in listing.stdout.splitlines() if " TABLE DATA " in line)
    return BackupInfo(out, out.stat().st_size, tables)


def our_schemas(conn: psycopg.Connection) -> list[str]:
    """``ft`` and the schemas beside it that migrations make (``ft_audit``, ...): everything FieldTrust keeps."""
    return [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = %s OR nspname LIKE %s"
                                       " ORDER BY nspname", (SCHEMA, SCHEMA + r"\_%"))]


def is_empty(conn: psycopg.Connection) -> bool:
    """Whether the database has none of FieldTrust's schemas yet."""
    return not our_schemas(conn)


def ensure_app_role(conn: psycopg.Connection) -> None:
    """``ft_app`` as migration 040 creates it (roles are cluster-wide: not in the dump)."""
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone()
    if exists is None:
        conn.execute(f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE")


def restore(database_url: str, source: Path, *, force: bool = False, keep_owner: bool = False) -> None:
    """Restore a dump made by :func:`backup` into the database at ``database_url``."""
    source = Path(source)
    if not source.is_file():
        raise BackupError(f"{source}: no such backup file")
    with db.connect(database_url, autocommit=True, application="fieldtrust-restore") as conn:
        if not is_empty(conn) and not force:
            raise BackupError(f"the database already has a schema {SCHEMA!r}: restore into an empty database, "
                              "or give --force to replace what the backup holds")
        ensure_app_role(conn)
    cmd = [_tool("pg_restore"), "--single-transaction", "--exit-on-error", "--no-password",
           f"--dbname={database_url}", str(source)]
    if force:
        cmd[1:1] = ["--clean", "--if-exists"]
    if not keep_owner:
        cmd.insert(1, "--no-owner")
    _run(cmd, "pg_restore")
