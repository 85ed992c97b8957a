"""Daily partitions of ``ft.readings`` on plain PostgreSQL (TimescaleDB makes its own chunks).

A partition holds one UTC day and is named ``readings_pYYYYMMDD``.  There is no default
partition, so a writer must make sure the days of a batch exist before inserting:
:func:`ensure_partitions` does that and is cheap when they do (the days known to exist are
cached per database, so a steady stream of batches costs no query at all).

New partitions are created as plain tables and then attached: ``ATTACH PARTITION`` takes only a
SHARE UPDATE EXCLUSIVE lock on ``ft.readings``, so writers and readers of other days carry on
(``CREATE TABLE … PARTITION OF`` would block them all).  The SQL function
``ft.create_readings_partition`` does it as the owner (SECURITY DEFINER), so the ingest, logged in
as ``ft_app``, creates its days without the right to create tables; a new partition is readable
by the owner only (row-level security guards ``ft.readings``, not a partition named directly).
An advisory lock keeps two processes from creating the same day at once.  Call it outside a long
write transaction, so that the new partition's lock is released at once.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import psycopg

from cloud.store import db

PARENT = "readings"
SCHEMA = "ft"
#: pg_advisory_xact_lock key of partition creation ("FT" "part" in ASCII).
LOCK_KEY = 0x4654_7061_7274
#: a single call covers at most this many days (a bad timestamp must not create thousands)
MAX_DAYS_PER_CALL = 4000

_NAME = re.compile(r"^readings_p(\d{8})$")
_known: dict[tuple[str, int, str], set[date]] = {}
_known_lock = threading.Lock()


def utc_day(when: datetime | date) -> date:
    """The UTC day of ``when`` (a date is taken as it is; a datetime must carry a time zone)."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ValueError(f"timestamp without time zone: {when.isoformat()}")
        return when.astimezone(UTC).date()
    return when


def partition_name(day: date) -> str:
    return f"{PARENT}_p{day:%Y%m%d}"


def existing(conn: psycopg.Connection) -> dict[date, str]:
    """The day partitions of ``ft.readings`` in the database, by day."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'ft.readings'::regclass"
    ).fetchall()
    days = {}
    for (name,) in rows:
        match = _NAME.match(name)
        if match:
            days[datetime.strptime(match[1], "%Y%m%d").date()] = name
    return days


def ensure_partitions(conn: psycopg.Connection, start: datetime | date, end: datetime | date) -> list[str]:
    """Make sure every UTC day from ``start`` to ``end`` (both included) has a partition.

    Returns the names of the partitions created (empty when all existed, and always on
    TimescaleDB).  Raises ValueError for naive timestamps, ``end`` before ``start``, or a range
    longer than :data:`MAX_DAYS_PER_CALL`.
    """
    first, last = utc_day(start), utc_day(end)
    if last < first:
        raise ValueError(f"end {last} is before start {first}")
    count = (last - first).days + 1
    if count > MAX_DAYS_PER_CALL:
        raise ValueError(f"{count} days requested; at most {MAX_DAYS_PER_CALL} per call")
    wanted = {first + timedelta(days=i) for i in range(count)}
    key = _database(conn)
    with _known_lock:
        missing = wanted - _known.get(key, set())
    if not missing or db.backend(conn) == "timescale":
        return []
    created = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        present = set(existing(conn))
        for day in sorted(missing - present):
            _create(conn, day)
            created.append(partition_name(day))
    with _known_lock:
        _known.setdefault(key, set()).update(present | missing)
    return created


def ensure_for(conn: psycopg.Connection, timestamps: Iterable[datetime]) -> list[str]:
    """:func:`ensure_partitions` for the days of a batch's timestamps (which may be far apart)."""
    days = sorted({utc_day(ts) for ts in timestamps})
    created: list[str] = []
    for day in days:
        created += ensure_partitions(conn, day, day)
    return created


def ensure_ahead(conn: psycopg.Connection, days_ahead: int, today: date | None = None) -> list[str]:
    """Partitions from yesterday to ``days_ahead`` days after today (UTC)."""
    today = today or datetime.now(UTC).date()
    return ensure_partitions(conn, today - timedelta(days=1), today + timedelta(days=days_ahead))


def forget(conn: psycopg.Connection, days: Iterable[date] | None = None) -> None:
    """Drop cached knowledge of partitions (all, or ``days``): after another process dropped
    partitions, or after an insert found one missing."""
    key = _database(conn)
    with _known_lock:
        if days is None:
            _known.pop(key, None)
        else:
            _known.get(key, set()).difference_update(days)


def _create(conn: psycopg.Connection, day: date) -> None:
    """Create and attach ``day``'s partition through ``ft.create_readings_partition`` (migration 040): it runs
    as the owner, so the services' role, which may not create tables, can still make the days it writes."""
    conn.execute("SELECT ft.create_readings_partition(%s)", (day,))


def _database(conn: psycopg.Connection) -> tuple[str, int, str]:
    info = conn.info
    return (info.host, info.port, info.dbname)
