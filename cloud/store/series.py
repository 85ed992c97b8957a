"""The one query layer for time series: the same SQL and the same answers on both backends.

Both backends expose ``ft.readings``, ``ft.readings_hourly`` and ``ft.readings_daily`` with the
same columns (tables on plain PostgreSQL, continuous aggregates on TimescaleDB), and every query
here uses only those and ``date_bin``.  Buckets are aligned to UTC midnight of 2000-01-01 (so
hours and days are UTC hours and days) and a requested range is widened to whole buckets:
rollups cannot split an hour, so neither does the raw path.

Where a bucket's numbers come from:

* ``bucket="raw"``: the readings themselves, exactly ``start <= ts < end``.
* a bucket that is a whole number of days: the daily rollups;
* a whole number of hours: the hourly rollups;
* anything else (15 min, 90 min): raw rows aggregated on the fly.
* ``bucket=None`` picks by range: raw up to :data:`RAW_UP_TO`, hourly up to
  :data:`HOURLY_UP_TO`, daily beyond.

Every bucket of the range is returned (``generate_series`` LEFT JOIN the aggregate): an empty
bucket is a gap (value None, n 0), never interpolated.  ``fill="previous"`` carries the last
bucket's numbers into gaps, still with n 0, so a filled bucket can always be told apart.
Only numeric values count (records without a number, such as failed reads, do not).

The rollups are read through ``ft.readings_hourly_v`` and ``ft.readings_daily_v`` (migration 040):
views that filter by the transaction's tenant scope like the tables' row-level security does,
because TimescaleDB's continuous aggregates cannot carry row-level security.  The services' role
may read only the views, on both backends, so the SQL stays the same on both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import psycopg
from psycopg import sql

from cloud.store.db import ROW_SCHEMA
from cloud.store.rollups import DAY, HOUR, ORIGIN, ceil, floor

RAW_UP_TO = timedelta(days=2)
HOURLY_UP_TO = timedelta(days=90)
#: at most this many buckets (or raw rows) per answer
MAX_POINTS = 100_000
#: :func:`latest` looks at raw rows this far back before trusting the rollups to say where to look
LATEST_RECENT = timedelta(days=2)

Bucket = Literal["raw"] | timedelta | None
Fill = Literal["null", "previous"]


class SeriesError(ValueError):
    """A query that cannot be answered as asked (bad range, bucket, fill, ambiguous metric)."""


class NotFound(LookupError):
    """The metric or farm named does not exist."""


@dataclass(frozen=True)
class Point:
    """One point of a series: a raw reading, or one bucket's numbers."""

    __pydantic_config__ = ROW_SCHEMA
    ts: datetime
    """the reading's time, or the start of its bucket"""
    value: float | None
    """the reading, or the bucket's mean; null in a gap"""
    min: float | None
    max: float | None
    n: int
    """readings behind the point: 1 for a raw reading, 0 for a gap or a filled bucket"""


@dataclass(frozen=True)
class Latest:
    """The most recent reading of one of a device's metrics."""

    __pydantic_config__ = ROW_SCHEMA
    metric: str
    unit: str
    ts: datetime
    value: float | None
    value_text: str | None
    quality: int
    """quality bit flags (contract Q_*); 0 is good"""
    trust: int
    """1 node-signed, 2 gateway-attested"""


def choose_bucket(start: datetime, end: datetime) -> Literal["raw"] | timedelta:
    """The bucket :func:`series` uses when none is asked for."""
    span = end - start
    if span <= RAW_UP_TO:
        return "raw"
    return HOUR if span <= HOURLY_UP_TO else DAY


def metric_id(conn: psycopg.Connection, name: str, unit: str | None = None) -> int:
    """The id of metric ``name`` (in ``unit``, needed only if the name exists in several units)."""
    if unit is None:
        rows = conn.execute("SELECT id, unit FROM ft.metrics WHERE name = %s ORDER BY unit", (name,)).fetchall()
    else:
        rows = conn.execute("SELECT id, unit FROM ft.metrics WHERE name = %s AND unit = %s", (name, unit)).fetchall()
    if not rows:
        raise NotFound(f"unknown metric {name!r}" + (f" in {unit!r}" if unit is not None else ""))
    if len(rows) > 1:
        raise SeriesError(f"metric {name!r} exists in several units {[u for _, u in rows]}; name the unit")
    return int(rows[0][0])


def series(
    conn: psycopg.Connection,
    device_id: str,
    metric: str,
    start: datetime,
    end: datetime,
    bucket: Bucket = None,
    fill: Fill = "null",
    *,
    unit: str | None = None,
) -> list[Point]:
    """A device's metric from ``start`` to ``end``: raw readings, or gap-filled buckets."""
    _check(start, end, fill)
    mid = metric_id(conn, metric, unit)
    step = choose_bucket(start, end) if bucket is None else bucket
    if step == "raw":
        return _raw(conn, device_id, mid, start, end)
    return _bucketed(conn, _DEVICE, {"device": device_id, "metric": mid}, start, end, _step(step), fill)


def farm_series(
    conn: psycopg.Connection,
    farm_id: str,
    metric: str,
    start: datetime,
    end: datetime,
    bucket: timedelta | None = None,
    fill: Fill = "null",
    *,
    unit: str | None = None,
) -> list[Point]:
    """A farm's metric in buckets: per bucket the mean of its devices' means (each device counts
    once however often it reports), the min and max over all of them, and all their readings in n.

    ``bucket=None`` picks hourly up to :data:`HOURLY_UP_TO`, daily beyond.
    """
    _check(start, end, fill)
    if conn.execute("SELECT 1 FROM ft.farms WHERE id = %s", (farm_id,)).fetchone() is None:
        raise NotFound(f"unknown farm {farm_id!r}")
    mid = metric_id(conn, metric, unit)
    step = (HOUR if end - start <= HOURLY_UP_TO else DAY) if bucket is None else bucket
    if not isinstance(step, timedelta):
        raise SeriesError(f"a farm series needs a bucket (a duration); got {step!r}")
    return _bucketed(conn, _FARM, {"farm": farm_id, "metric": mid}, start, end, _step(step), fill)


def latest(conn: psycopg.Connection, device_id: str) -> list[Latest]:
    """The most recent reading of each of a device's metrics, in metric name order.

    Fast on years of data: the daily rollups say on which day each metric was last seen, so
    only that day onwards is searched; raw rows of the last :data:`LATEST_RECENT` are searched
    too, for metrics not yet rolled up (or without numeric values).
    """
    rows = conn.execute(_LATEST, {"device": device_id, "since": datetime.now(UTC) - LATEST_RECENT}).fetchall()
    return [Latest(*row) for row in rows]


# -- internals ------------------------------------------------------------------------------


def _check(start: datetime, end: datetime, fill: str) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise SeriesError("start and end must carry a time zone")
    if end <= start:
        raise SeriesError(f"end {end.isoformat()} is not after start {start.isoformat()}")
    if fill not in ("null", "previous"):
        raise SeriesError(f"fill must be 'null' or 'previous'; got {fill!r}")


def _step(bucket: object) -> timedelta:
    if not isinstance(bucket, timedelta) or bucket < timedelta(seconds=1) or bucket % timedelta(seconds=1):
        raise SeriesError(f"bucket must be 'raw' or a whole number of seconds (at least 1); got {bucket!r}")
    return bucket


def _source(step: timedelta) -> tuple[sql.Composable, sql.Composable]:
    """The relation a bucket of ``step`` is summed from, and its time column."""
    if step % DAY == timedelta(0):
        return sql.Identifier("ft", "readings_daily_v"), sql.Identifier("bucket")
    if step % HOUR == timedelta(0):
        return sql.Identifier("ft", "readings_hourly_v"), sql.Identifier("bucket")
    return sql.Identifier("ft", "readings"), sql.Identifier("ts")


def _raw(conn: psycopg.Connection, device_id: str, mid: int, start: datetime, end: datetime) -> list[Point]:
    rows = conn.execute(
        "SELECT ts, value FROM ft.readings WHERE device_id = %s AND metric_id = %s AND ts >= %s AND ts < %s"
        " AND value IS NOT NULL ORDER BY ts LIMIT %s",
        (device_id, mid, start, end, MAX_POINTS + 1),
    ).fetchall()
    if len(rows) > MAX_POINTS:
        raise SeriesError(f"more than {MAX_POINTS} readings in range; ask for buckets or a shorter range")
    return [Point(ts, value, value, value, 1) for ts, value in rows]


# Per-bucket numbers from a source (rollup or raw).  Rollups carry n/sum/min/max; raw rows are
# turned into the same four columns, so one template serves both.  sum(sum)/sum(n) is the mean
# of all readings in the bucket; n >= 1 in every source row (rollups hold numeric values only).
_PARTS_ROLLUP = sql.SQL("n, sum, min, max")
_PARTS_RAW = sql.SQL("1::bigint AS n, value AS sum, value AS min, value AS max")

_DEVICE = sql.SQL("""
WITH src AS (
    SELECT {time} AS t, {parts} FROM {source}
    WHERE device_id = %(device)s AND metric_id = %(metric)s AND {time} >= %(first)s AND {time} < %(stop)s {numeric}
), agg AS (
    SELECT date_bin(make_interval(secs => %(step_s)s), t, %(origin)s) AS bucket,
           sum(sum) / sum(n) AS value, min(min) AS min, max(max) AS max, sum(n) AS n
    FROM src GROUP BY 1
)
""")

_FARM = sql.SQL("""
WITH src AS (
    SELECT device_id, {time} AS t, {parts} FROM {source}
    WHERE device_id IN (SELECT id FROM ft.devices WHERE farm_id = %(farm)s)
      AND metric_id = %(metric)s AND {time} >= %(first)s AND {time} < %(stop)s {numeric}
), per_device AS (
    SELECT device_id, date_bin(make_interval(secs => %(step_s)s), t, %(origin)s) AS bucket,
           sum(sum) / sum(n) AS value, min(min) AS min, max(max) AS max, sum(n) AS n
    FROM src GROUP BY 1, 2
), agg AS (
    SELECT bucket, avg(value) AS value, min(min) AS min, max(max) AS max, sum(n) AS n
    FROM per_device GROUP BY 1
)
""")

_FILLED = sql.SQL("""
SELECT b.bucket, a.value, a.min, a.max, coalesce(a.n, 0)
FROM generate_series(%(first)s::timestamptz, %(last)s::timestamptz, make_interval(secs => %(step_s)s)) AS b(bucket)
LEFT JOIN agg a ON a.bucket = b.bucket
ORDER BY b.bucket
""")


def _bucketed(
    conn: psycopg.Connection,
    template: sql.SQL,
    params: dict[str, object],
    start: datetime,
    end: datetime,
    step: timedelta,
    fill: Fill,
) -> list[Point]:
    first, stop = floor(start, step), ceil(end, step)
    count = (stop - first) // step
    if count > MAX_POINTS:
        raise SeriesError(f"{count} buckets of {step} in range; at most {MAX_POINTS}: ask for larger buckets")
    source, time_column = _source(step)
    raw = time_column == sql.Identifier("ts")
    query = template.format(
        source=source,
        time=time_column,
        parts=_PARTS_RAW if raw else _PARTS_ROLLUP,
        numeric=sql.SQL("AND value IS NOT NULL") if raw else sql.SQL(""),
    ) + _FILLED
    # Strides as plain seconds: an interval of '1 day' would follow the session's time zone
    # across a DST change in generate_series; seconds are the same length everywhere.
    values = params | {"first": first, "stop": stop, "last": stop - step, "origin": ORIGIN,
                       "step_s": step.total_seconds()}
    rows = conn.execute(query, values).fetchall()
    points = [Point(ts, value, low, high, int(n)) for ts, value, low, high, n in rows]
    return _carry_forward(points) if fill == "previous" else points


def _carry_forward(points: list[Point]) -> list[Point]:
    filled: list[Point] = []
    previous: Point | None = None
    for point in points:
        if point.n == 0 and previous is not None:
            point = replace(previous, ts=point.ts, n=0)
        elif point.n:
            previous = point
        filled.append(point)
    return filled


_LATEST = """
WITH RECURSIVE rolled(metric_id) AS (
    (SELECT metric_id FROM ft.readings_daily_v WHERE device_id = %(device)s ORDER BY metric_id LIMIT 1)
    UNION ALL
    SELECT (SELECT d.metric_id FROM ft.readings_daily_v d
            WHERE d.device_id = %(device)s AND d.metric_id > rolled.metric_id ORDER BY d.metric_id LIMIT 1)
    FROM rolled WHERE rolled.metric_id IS NOT NULL
), ids AS (
    SELECT metric_id FROM rolled WHERE metric_id IS NOT NULL
    UNION
    SELECT DISTINCT metric_id FROM ft.readings WHERE device_id = %(device)s AND ts >= %(since)s
)
SELECT m.name, m.unit, r.ts, r.value, r.value_text, r.quality, r.trust
FROM ids
JOIN ft.metrics m ON m.id = ids.metric_id
CROSS JOIN LATERAL (
    SELECT ts, value, value_text, quality, trust FROM ft.readings
    WHERE device_id = %(device)s AND metric_id = ids.metric_id
      AND ts >= least(%(since)s, coalesce((SELECT max(bucket) FROM ft.readings_daily_v
                                           WHERE device_id = %(device)s AND metric_id = ids.metric_id), %(since)s))
    ORDER BY ts DESC LIMIT 1
) r
ORDER BY m.name, m.unit
"""
