"""Synthetic readings for store tests, and the reference answers they are checked against.

The references are direct aggregates over raw rows of ``ft.readings`` (plain SQL, no rollup,
no query layer), so the same checks prove the plain-PostgreSQL tables and TimescaleDB's
continuous aggregates alike.
"""

from __future__ import annotations

import contextlib
import math
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cloud.store import db, partitions
from cloud.store.migrate import migrate
from contract.telemetry import Q_COMM_ERROR

ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
START = datetime(2025, 6, 1, tzinfo=UTC)
COLUMNS = "tenant_id, device_id, metric_id, ts, value, value_text, quality, trust, epoch, seq"

#: farm -> its devices
FARMS = {"farm-a": ["dev-1", "dev-2", "dev-3", "dev-4"], "farm-b": ["dev-5", "dev-6"]}
METRICS = [("soil_moisture", "%"), ("temperature", "C"), ("ec", "uS/cm")]

Row = tuple[str, str, int, datetime, float | None, str | None, int, int, int, int]


@dataclass(frozen=True)
class Seeded:
    metric_ids: dict[str, int]
    start: datetime
    end: datetime
    rows: int


@contextlib.contextmanager
def database(server_url: str, backend: db.Backend | None) -> Iterator[str]:
    """A new database on the test server, migrated for ``backend`` (None: not migrated); dropped after."""
    name = f"ft_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(**(conninfo_to_dict(server_url) | {"dbname": name}))
    try:
        if backend is not None:
            migrate(url, backend=backend)
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def register(conn: psycopg.Connection, tenant: str = "tenant-1") -> dict[str, int]:
    """Tenant, farms, devices and metrics of the synthetic data set; returns metric ids by name."""
    conn.execute("INSERT INTO ft.tenants (id, name) VALUES (%s, 'Test tenant')", (tenant,))
    for farm, devices in FARMS.items():
        conn.execute("INSERT INTO ft.farms (id, tenant_id, name) VALUES (%s, %s, %s)", (farm, tenant, farm))
        for device in devices:
            conn.execute(
                "INSERT INTO ft.devices (id, tenant_id, farm_id, kind) VALUES (%s, %s, %s, 'bus')",
                (device, tenant, farm),
            )
    ids = {}
    for name, unit in METRICS:
        row = conn.execute("INSERT INTO ft.metrics (name, unit) VALUES (%s, %s) RETURNING id", (name, unit)).fetchone()
        assert row is not None
        ids[name] = row[0]
    conn.commit()
    return ids


def readings(metric_ids: dict[str, int], days: int = 4, interval_min: int = 15, seed: int = 7) -> list[Row]:
    """Readings with gaps of every kind a series must show as gaps, never interpolate.

    dev-2 is silent for seven hours on day 2, dev-3 for all of day 3, dev-4 starts on day 2;
    about 3 % of readings are missing at random and some carry no value (a failed read).
    Times are jittered within each interval so bucket edges matter.
    """
    rng = random.Random(seed)
    rows: list[Row] = []
    steps = days * 24 * 60 // interval_min
    for devices in FARMS.values():
        for device in devices:
            seq = 0
            for step in range(steps):
                ts = START + timedelta(minutes=step * interval_min, seconds=rng.randrange(0, interval_min * 60 - 1))
                day = (ts - START).days
                if device == "dev-2" and day == 1 and 6 <= ts.hour < 13:
                    continue
                if (device == "dev-3" and day == 2) or (device == "dev-4" and day == 0):
                    continue
                seq += 1
                for k, (name, _) in enumerate(METRICS):
                    if rng.random() < 0.03:
                        continue
                    failed = rng.random() < 0.02
                    value = None if failed else round(20 + 10 * math.sin(step / 17 + k) + rng.gauss(0, 2), 3)
                    quality = Q_COMM_ERROR if failed else 0
                    rows.append(("tenant-1", device, metric_ids[name], ts, value, None, quality, 2, 1, seq))
    return rows


def load(conn: psycopg.Connection, rows: Sequence[Row]) -> None:
    """Store rows the way a writer does: partitions for their days first, then one COPY."""
    partitions.ensure_for(conn, (r[3] for r in rows))
    with conn.cursor() as cur, cur.copy(f"COPY ft.readings ({COLUMNS}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    conn.commit()


def seed(conn: psycopg.Connection, days: int = 4) -> Seeded:
    ids = register(conn)
    rows = readings(ids, days)
    load(conn, rows)
    return Seeded(ids, START, START + timedelta(days=days), len(rows))


# -- references -------------------------------------------------------------------------------


def floor(ts: datetime, step: timedelta) -> datetime:
    return ORIGIN + ((ts - ORIGIN) // step) * step


def direct_rollup(conn: psycopg.Connection, step: timedelta) -> dict[tuple, tuple]:
    """(device, metric, bucket) -> (n, sum, min, max) straight from raw rows."""
    rows = conn.execute(
        "SELECT device_id, metric_id, date_bin(make_interval(secs => %s), ts, %s), count(value), sum(value),"
        " min(value), max(value) FROM ft.readings WHERE value IS NOT NULL GROUP BY 1, 2, 3",
        (step.total_seconds(), ORIGIN),
    ).fetchall()
    return {r[:3]: r[3:] for r in rows}


def stored_rollup(conn: psycopg.Connection, table: str) -> dict[tuple, tuple]:
    assert table in ("ft.readings_hourly", "ft.readings_daily")
    rows = conn.execute(f"SELECT device_id, metric_id, bucket, n, sum, min, max FROM {table}").fetchall()
    return {r[:3]: r[3:] for r in rows}


def assert_same_rollup(stored: dict[tuple, tuple], direct: dict[tuple, tuple]) -> None:
    assert stored.keys() == direct.keys(), (
        f"buckets only stored: {sorted(stored.keys() - direct.keys())[:5]}, "
        f"only in raw rows: {sorted(direct.keys() - stored.keys())[:5]}"
    )
    for key, (n, total, low, high) in direct.items():
        s_n, s_total, s_low, s_high = stored[key]
        assert int(s_n) == n, key
        assert math.isclose(s_total, total, rel_tol=1e-12, abs_tol=1e-9), key
        assert (s_low, s_high) == (low, high), key


def assert_rollups_match_raw(conn: psycopg.Connection) -> None:
    assert_same_rollup(stored_rollup(conn, "ft.readings_hourly"), direct_rollup(conn, timedelta(hours=1)))
    assert_same_rollup(stored_rollup(conn, "ft.readings_daily"), direct_rollup(conn, timedelta(days=1)))


def direct_series(
    conn: psycopg.Connection, devices: Sequence[str], metric_id: int, start: datetime, end: datetime, step: timedelta
) -> dict[datetime, tuple[float, float, float, int]]:
    """bucket -> (mean of the devices' means, min, max, n) over raw rows, buckets widened like the layer's."""
    first, stop = floor(start, step), floor(end - timedelta(microseconds=1), step) + step
    rows = conn.execute(
        "WITH per_device AS ("
        "  SELECT device_id, date_bin(make_interval(secs => %(s)s), ts, %(o)s) AS b, avg(value) AS v,"
        "         min(value) AS lo, max(value) AS hi, count(value) AS n"
        "  FROM ft.readings WHERE device_id = ANY(%(d)s) AND metric_id = %(m)s AND ts >= %(a)s AND ts < %(z)s"
        "    AND value IS NOT NULL GROUP BY 1, 2)"
        " SELECT b, avg(v), min(lo), max(hi), sum(n) FROM per_device GROUP BY b",
        {"s": step.total_seconds(), "o": ORIGIN, "d": list(devices), "m": metric_id, "a": first, "z": stop},
    ).fetchall()
    return {b: (v, lo, hi, int(n)) for b, v, lo, hi, n in rows}


def assert_series_matches(points: Sequence, reference: dict, start: datetime, end: datetime, step: timedelta) -> int:
    """Every bucket of the range present, in order; data buckets equal the reference, the rest gaps.

    Returns the number of gap buckets (tests check there are some).
    """
    first = floor(start, step)
    assert [p.ts for p in points] == [first + i * step for i in range(len(points))]
    assert points[-1].ts < end <= points[-1].ts + step
    gaps = 0
    for point in points:
        if point.ts in reference:
            value, low, high, n = reference[point.ts]
            assert point.n == n, point
            assert math.isclose(point.value, value, rel_tol=1e-9), (point, value)
            assert (point.min, point.max) == (low, high), point
        else:
            assert (point.value, point.min, point.max, point.n) == (None, None, None, 0), point
            gaps += 1
    assert reference.keys() <= {p.ts for p in points}
    return gaps
