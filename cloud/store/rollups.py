"""Hourly and daily rollups of the readings: ``ft.readings_hourly`` and ``ft.readings_daily``.

Plain PostgreSQL: rollups are tables recomputed from raw rows.  Every INSERT or COPY into
``ft.readings`` marks the (device, UTC hour) pairs it touched in ``ft.rollup_dirty`` (a statement
trigger, so no writer can forget, and late or backfilled rows count like fresh ones).
:func:`refresh_dirty` drains those marks and recomputes exactly the touched hours, then the
days that contain them (daily = sums of hourly rows); :func:`refresh_rollups` recomputes an
explicit time range for all devices.  Both are idempotent upserts; a bucket whose numbers did
not change is not rewritten.  Rows are never deleted here: rollups outlive raw data that
retention dropped, and marks older than the raw retention horizon are discarded unused.

TimescaleDB: rollups are continuous aggregates kept by the extension's refresh policies (and
answered in real time past the last refresh); :func:`refresh_rollups` forces a refresh of a
range, :func:`refresh_dirty` has nothing to do.

Buckets are aligned to :data:`ORIGIN` (UTC midnight), the same on both backends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import pq

from cloud.store import db

ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def floor(ts: datetime, step: timedelta) -> datetime:
    """Start of the ``step``-bucket holding ``ts`` (buckets aligned to :data:`ORIGIN`)."""
    if ts.tzinfo is None:
        raise ValueError(f"timestamp without time zone: {ts.isoformat()}")
    return ORIGIN + ((ts - ORIGIN) // step) * step


def ceil(ts: datetime, step: timedelta) -> datetime:
    """End of the last ``step``-bucket that ``ts`` reaches into (``ts`` itself on a boundary)."""
    start = floor(ts, step)
    return start if start == ts else start + step


@dataclass(frozen=True)
class Refreshed:
    """What a refresh did.  Row counts are None on TimescaleDB (the extension does the work)."""

    hourly_rows: int | None
    daily_rows: int | None
    hours_marked: int = 0


_UPSERT = """
ON CONFLICT (device_id, metric_id, bucket) DO UPDATE
SET tenant_id = EXCLUDED.tenant_id, n = EXCLUDED.n, sum = EXCLUDED.sum, min = EXCLUDED.min, max = EXCLUDED.max
WHERE ({t}.tenant_id, {t}.n, {t}.sum, {t}.min, {t}.max)
      IS DISTINCT FROM (EXCLUDED.tenant_id, EXCLUDED.n, EXCLUDED.sum, EXCLUDED.min, EXCLUDED.max)
"""

_HOURLY_RANGE = """
INSERT INTO ft.readings_hourly AS h (tenant_id, device_id, metric_id, bucket, n, sum, min, max)
SELECT min(tenant_id), device_id, metric_id, date_bin('1 hour', ts, %(origin)s),
       count(value), sum(value), min(value), max(value)
FROM ft.readings
WHERE ts >= %(lo)s AND ts < %(hi)s AND value IS NOT NULL
GROUP BY device_id, metric_id, date_bin('1 hour', ts, %(origin)s)
""" + _UPSERT.format(t="h")

_DAILY_RANGE = """
INSERT INTO ft.readings_daily AS d (tenant_id, device_id, metric_id, bucket, n, sum, min, max)
SELECT min(tenant_id), device_id, metric_id, date_bin('1 day', bucket, %(origin)s),
       sum(n), sum(sum), min(min), max(max)
FROM ft.readings_hourly
WHERE bucket >= %(lo)s AND bucket < %(hi)s
GROUP BY device_id, metric_id, date_bin('1 day', bucket, %(origin)s)
""" + _UPSERT.format(t="d")

_TAKE_MARKS = """
WITH taken AS (DELETE FROM ft.rollup_dirty RETURNING device_id, hour)
INSERT INTO rollup_work (device_id, hour)
SELECT DISTINCT device_id, hour FROM taken WHERE hour >= %(horizon)s
"""

_HOURLY_MARKED = """
INSERT INTO ft.readings_hourly AS h (tenant_id, device_id, metric_id, bucket, n, sum, min, max)
SELECT min(r.tenant_id), r.device_id, r.metric_id, w.hour, count(r.value), sum(r.value), min(r.value), max(r.value)
FROM rollup_work w
JOIN ft.readings r ON r.device_id = w.device_id AND r.ts >= w.hour AND r.ts < w.hour + INTERVAL '3600 seconds'
WHERE r.value IS NOT NULL
GROUP BY r.device_id, r.metric_id, w.hour
""" + _UPSERT.format(t="h")

_DAILY_MARKED = """
WITH days AS (SELECT DISTINCT device_id, date_bin('1 day', hour, %(origin)s) AS day FROM rollup_work)
INSERT INTO ft.readings_daily AS d (tenant_id, device_id, metric_id, bucket, n, sum, min, max)
SELECT min(x.tenant_id), x.device_id, x.metric_id, days.day, sum(x.n), sum(x.sum), min(x.min), max(x.max)
FROM days
JOIN ft.readings_hourly x ON x.device_id = days.device_id AND x.bucket >= days.day
                         AND x.bucket < days.day + INTERVAL '86400 seconds'
GROUP BY x.device_id, x.metric_id, days.day
""" + _UPSERT.format(t="d")


def refresh_rollups(conn: psycopg.Connection, since: datetime, until: datetime) -> Refreshed:
    """Recompute every hourly and daily bucket that ``[since, until)`` touches, for all devices.

    The range is widened to whole hours and whole days.  Use after bulk loads, or to repair;
    the maintenance loop keeps rollups current through :func:`refresh_dirty`.
    """
    if until <= since:
        raise ValueError(f"empty range: {since.isoformat()} .. {until.isoformat()}")
    lo, hi = floor(since, DAY), ceil(until, DAY)  # whole days: a daily row needs all its hours current
    if db.backend(conn) == "timescale":
        _refresh_continuous(conn, lo, hi)
        return Refreshed(None, None)
    params = {"origin": ORIGIN, "lo": lo, "hi": hi}
    with conn.transaction():
        hourly = conn.execute(_HOURLY_RANGE, params).rowcount
        daily = conn.execute(_DAILY_RANGE, params).rowcount
    return Refreshed(hourly, daily)


def refresh_dirty(conn: psycopg.Connection, horizon: datetime | None = None) -> Refreshed:
    """Recompute the hours marked by writes since the last call, and their days.

    Marks before ``horizon`` (the raw retention horizon) are discarded: their raw rows are gone
    or about to be, and recomputing would only shrink rollups that are meant to outlive them.
    """
    if db.backend(conn) == "timescale":
        return Refreshed(None, None)
    params = {"origin": ORIGIN, "horizon": horizon or ORIGIN}
    with conn.transaction():
        # per session, emptied at commit; emptied here too in case the caller's transaction runs this twice
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS rollup_work (device_id text, hour timestamptz) ON COMMIT DELETE ROWS"
        )
        conn.execute("DELETE FROM rollup_work")
        marked = conn.execute(_TAKE_MARKS, params).rowcount
        if marked == 0:
            return Refreshed(0, 0, 0)
        conn.execute("ANALYZE rollup_work")
        hourly = conn.execute(_HOURLY_MARKED, params).rowcount
        daily = conn.execute(_DAILY_MARKED, params).rowcount
    return Refreshed(hourly, daily, marked)


def pending(conn: psycopg.Connection) -> int:
    """Marks waiting for :func:`refresh_dirty` (0 on TimescaleDB): a lag figure for monitoring."""
    if db.backend(conn) == "timescale":
        return 0
    row = conn.execute("SELECT count(*) FROM ft.rollup_dirty").fetchone()
    return int(row[0]) if row else 0


def _refresh_continuous(conn: psycopg.Connection, lo: datetime, hi: datetime) -> None:
    """``refresh_continuous_aggregate`` cannot run inside a transaction block: run it in autocommit."""
    if not conn.autocommit and conn.info.transaction_status != pq.TransactionStatus.IDLE:
        raise RuntimeError("refreshing continuous aggregates needs a connection outside a transaction")
    previous = conn.autocommit
    conn.autocommit = True
    try:
        conn.execute("CALL refresh_continuous_aggregate('ft.readings_hourly', %s::timestamptz, %s::timestamptz)",
                     (lo, hi))
        conn.execute("CALL refresh_continuous_aggregate('ft.readings_daily', %s::timestamptz, %s::timestamptz)",
                     (lo, hi))
    finally:
        conn.autocommit = previous
