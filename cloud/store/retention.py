"""Retention: how long raw readings and their rollups are kept, and the dropping of older data.

Plain PostgreSQL: raw data goes a whole day partition at a time (``DROP TABLE`` of the
partition: no row-by-row delete, no bloat), once the day lies entirely before the horizon;
rollup rows older than their own retention are deleted.  Dropping a partition needs a short
exclusive lock on ``ft.readings``; it waits at most :data:`LOCK_TIMEOUT` so writers are never
held up for long, and a partition it could not drop is retried on the next run.

TimescaleDB: the extension's policies do the same (``drop_chunks`` by a retention policy on the
hypertable and on each continuous aggregate); :func:`configure_timescale` sets them from the
configuration, and keeps the aggregates' refresh window inside every retention window so that
a refresh never erases rollups whose raw rows are gone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from cloud.config import CloudSettings
from cloud.store import db, partitions

log = logging.getLogger(__name__)

LOCK_TIMEOUT = "2s"


@dataclass(frozen=True)
class RetentionPolicy:
    """Days to keep: raw readings, hourly rollups, daily rollups (None: for ever)."""

    raw_days: int
    hourly_days: int | None
    daily_days: int | None

    def __post_init__(self) -> None:
        for name in ("raw_days", "hourly_days", "daily_days"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1; got {value}")

    @classmethod
    def from_settings(cls, settings: CloudSettings) -> RetentionPolicy:
        return cls(
            raw_days=settings.retention_days,
            hourly_days=settings.rollup_hourly_retention_days or settings.retention_days,
            daily_days=settings.rollup_daily_retention_days,
        )

    def raw_horizon(self, now: datetime) -> datetime:
        """Raw readings before this instant (UTC midnight) are dropped."""
        return _midnight(now - timedelta(days=self.raw_days))


@dataclass
class Dropped:
    partitions: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # could not get the lock this time
    hourly_rows: int = 0
    daily_rows: int = 0


def apply_retention(conn: psycopg.Connection, policy: RetentionPolicy, now: datetime | None = None) -> Dropped:
    """Drop raw partitions and delete rollup rows past their retention (plain PostgreSQL).

    On TimescaleDB this returns an empty result: the retention policies do the work.
    """
    now = now or datetime.now(UTC)
    dropped = Dropped()
    if db.backend(conn) == "timescale":
        return dropped
    horizon_day = policy.raw_horizon(now).date()
    for day, name in sorted(partitions.existing(conn).items()):
        if day >= horizon_day:
            break
        try:
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
                conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(partitions.SCHEMA, name)))
        except psycopg.errors.LockNotAvailable:
            log.warning("retention: %s is busy; dropping it on the next run", name)
            dropped.skipped.append(name)
            continue
        partitions.forget(conn, [day])
        dropped.partitions.append(name)
    with conn.transaction():
        if policy.hourly_days is not None:
            horizon = _midnight(now - timedelta(days=policy.hourly_days))
            dropped.hourly_rows = conn.execute("DELETE FROM ft.readings_hourly WHERE bucket < %s", (horizon,)).rowcount
        if policy.daily_days is not None:
            horizon = _midnight(now - timedelta(days=policy.daily_days))
            dropped.daily_rows = conn.execute("DELETE FROM ft.readings_daily WHERE bucket < %s", (horizon,)).rowcount
    return dropped


def configure_timescale(conn: psycopg.Connection, policy: RetentionPolicy, max_past_days: int) -> None:
    """Set TimescaleDB's retention and refresh policies from the configuration (idempotent).

    The continuous aggregates refresh back as far as ingest accepts late data
    (``max_past_days``), but never as far as any retention horizon.
    """
    if db.backend(conn) != "timescale":
        raise RuntimeError("configure_timescale: this database is not on TimescaleDB")
    limits = [policy.raw_days] + [d for d in (policy.hourly_days, policy.daily_days) if d is not None]
    window = max(2, min(max_past_days + 1, min(limits) - 1))
    with conn.transaction():
        conn.execute("SELECT remove_retention_policy('ft.readings', if_exists => true)")
        conn.execute("SELECT add_retention_policy('ft.readings', drop_after => make_interval(days => %s))",
                     (policy.raw_days,))
        for view, days, end_offset, schedule in (
            ("ft.readings_hourly", policy.hourly_days, "1 hour", "5 minutes"),
            ("ft.readings_daily", policy.daily_days, "1 day", "1 hour"),
        ):
            conn.execute("SELECT remove_retention_policy(%s::regclass, if_exists => true)", (view,))
            if days is not None:
                conn.execute("SELECT add_retention_policy(%s::regclass, drop_after => make_interval(days => %s))",
                             (view, days))
            conn.execute("SELECT remove_continuous_aggregate_policy(%s::regclass, if_exists => true)", (view,))
            conn.execute(
                "SELECT add_continuous_aggregate_policy(%s::regclass, start_offset => make_interval(days => %s),"
                " end_offset => %s::interval, schedule_interval => %s::interval)",
                (view, window, end_offset, schedule),
            )


def _midnight(when: datetime) -> datetime:
    return datetime.combine(when.astimezone(UTC).date(), datetime.min.time(), UTC)
