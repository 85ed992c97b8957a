"""Versioned schema migrations: numbered SQL files applied in order, once, recorded in a ledger.

Files in ``migrations/`` are named ``NNN_name.sql``, or ``NNN_name.timescale.sql`` and
``NNN_name.postgres.sql`` when the two backends need different DDL for the same version.  Each
file runs in its own transaction together with its ledger row in ``ft.schema_migrations``
(version, name, checksum, applied_at, backend), so a failed file leaves nothing half applied.

The backend is chosen once, when the first migration is applied: TimescaleDB if the server can
load the extension, plain PostgreSQL otherwise; later migrations follow the recorded choice.
A session-level advisory lock serialises migrators, so any number of processes may call
:func:`migrate` at start; the second finds nothing to do.  A file whose text changed after it
was applied is an error naming the file: applied migrations are history, fixed by a new file.

After every run, applied migrations or not, :func:`cloud.store.tenancy.apply` brings row-level
security and the services' privileges in line with the schema (changing only what differs), so
a table a new migration adds is covered at once.  The migrator runs as the owner, in platform
scope for the whole session: a data migration sees every tenant's rows even where the owner is
subject to row-level security (FORCEd, for a non-superuser owner).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from cloud.store import db, scope, tenancy

log = logging.getLogger(__name__)

#: pg_advisory_lock key of the migrator (an arbitrary constant: "FT" "migr" in ASCII).
LOCK_KEY = 0x4654_6D69_6772

_FILE_NAME = re.compile(r"^(?P<version>\d{3})_(?P<name>[a-z0-9_]+)(?:\.(?P<variant>timescale|postgres))?\.sql$")

_LEDGER = """
CREATE SCHEMA IF NOT EXISTS ft;
CREATE TABLE IF NOT EXISTS ft.schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    backend     text NOT NULL CHECK (backend IN ('timescale', 'postgres'))
)
"""


class MigrationError(RuntimeError):
    """The migrations cannot be applied as they are (changed, missing or malformed files)."""


@dataclass(frozen=True)
class Migration:
    version: int
    file: str  # the file name, recorded as the migration's name
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available(backend: db.Backend) -> list[Migration]:
    """The migrations for ``backend`` in version order (a variant file where one exists)."""
    by_version: dict[int, dict[str | None, Migration]] = {}
    for entry in resources.files("cloud.store").joinpath("migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            if entry.name.endswith(".sql"):
                raise MigrationError(f"{entry.name}: not a migration file name (NNN_name[.timescale|.postgres].sql)")
            continue
        version = int(match["version"])
        variants = by_version.setdefault(version, {})
        variants[match["variant"]] = Migration(version, entry.name, entry.read_text(encoding="utf-8"))
    chosen = []
    for version in sorted(by_version):
        variants = by_version[version]
        if None in variants and len(variants) > 1:
            raise MigrationError(f"version {version:03d}: both a common file and backend variants")
        if None not in variants and set(variants) != {"timescale", "postgres"}:
            raise MigrationError(f"version {version:03d}: needs both a .timescale.sql and a .postgres.sql variant")
        chosen.append(variants.get(None) or variants[backend])
    return chosen


def migrate(conninfo: str, *, backend: db.Backend | None = None) -> list[str]:
    """Apply every pending migration to the database at ``conninfo``; return the names applied.

    ``backend`` forces the layout of a new database (default: TimescaleDB when the server can
    load it).  Raises :class:`MigrationError` if an applied file changed or disappeared, or if
    ``backend`` contradicts the one the database was built with.
    """
    with db.connect(conninfo, autocommit=True, application="fieldtrust-migrate") as conn:
        scope.platform_session(conn)
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            done = _migrate_locked(conn, backend)
            with conn.transaction():
                tenancy.apply(conn)
            return done
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def _migrate_locked(conn: psycopg.Connection, forced: db.Backend | None) -> list[str]:
    with conn.transaction():
        conn.execute(_LEDGER)
    applied = {
        version: (name, checksum, recorded)
        for version, name, checksum, recorded in conn.execute(
            "SELECT version, name, checksum, backend FROM ft.schema_migrations ORDER BY version"
        )
    }
    recorded_backends = {entry[2] for entry in applied.values()}
    if len(recorded_backends) > 1:
        raise MigrationError(f"ft.schema_migrations mixes backends {sorted(recorded_backends)}")
    if recorded_backends:
        chosen: db.Backend = recorded_backends.pop()
        if forced is not None and forced != chosen:
            raise MigrationError(f"the database was built for {chosen}; cannot migrate it as {forced}")
    elif forced is not None:
        chosen = forced
    else:
        chosen = "timescale" if db.timescale_available(conn) else "postgres"

    migrations = available(chosen)
    known = {m.version: m for m in migrations}
    for version, (name, checksum, _) in applied.items():
        migration = known.get(version)
        if migration is None or migration.file != name:
            raise MigrationError(f"{name}: applied to the database but not found among the migration files")
        if migration.checksum != checksum:
            raise MigrationError(f"{name}: changed after it was applied (checksum {checksum[:12]}… is now "
                                 f"{migration.checksum[:12]}…); add a new migration instead of editing it")

    done = []
    for migration in migrations:
        if migration.version in applied:
            continue
        log.info("applying migration %s (%s)", migration.file, chosen)
        with conn.transaction():
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO ft.schema_migrations (version, name, checksum, backend) VALUES (%s, %s, %s, %s)",
                (migration.version, migration.file, migration.checksum, chosen),
            )
        done.append(migration.file)
    return done
