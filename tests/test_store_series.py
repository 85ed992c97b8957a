"""The plain-PostgreSQL store: partitions, rollups, retention, the series layer and the upkeep loop.

Every answer is checked against a direct aggregate over raw rows (tests/support/store_data.py).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from support.store_data import (
    COLUMNS,
    FARMS,
    START,
    assert_rollups_match_raw,
    assert_series_matches,
    database,
    direct_series,
    load,
    readings,
    register,
    seed,
)

from cloud.config import app_url
from cloud.store import db, partitions, retention, rollups, scope, series
from cloud.store.maintenance import Maintenance
from cloud.store.series import DAY, HOUR, NotFound, SeriesError

UTC_TODAY = datetime(2026, 1, 10, tzinfo=UTC).date()


@pytest.fixture
def plain_db(pg_server_url: str):
    """A new database with the plain-PostgreSQL layout, even on a server that has TimescaleDB."""
    with database(pg_server_url, "postgres") as url:
        yield url


@pytest.fixture
def conn(plain_db: str):
    with db.connect(plain_db) as connection:
        yield connection


@pytest.fixture
def app(plain_db: str, seeded):
    """The services' connection (ft_app, under row-level security) in the seeded tenant's scope: the series
    layer is what the API serves, so it is tested the way it runs."""
    with db.connect(app_url(plain_db)) as connection:
        scope.tenant_scope(connection, "tenant-1")
        yield connection


@pytest.fixture
def seeded(conn: psycopg.Connection):
    data = seed(conn)
    rollups.refresh_dirty(conn)
    return data


# -- partitions ---------------------------------------------------------------------------------


def test_partitions_are_made_ahead_and_for_backfill_days(conn: psycopg.Connection) -> None:
    made = partitions.ensure_ahead(conn, 7, today=UTC_TODAY)
    assert made == [partitions.partition_name(UTC_TODAY + timedelta(days=d)) for d in range(-1, 8)]
    assert partitions.ensure_ahead(conn, 7, today=UTC_TODAY) == []

    backfill = datetime(2025, 3, 14, 23, 59, tzinfo=UTC)
    assert partitions.ensure_for(conn, [backfill, backfill - timedelta(minutes=5)]) == ["readings_p20250314"]
    assert set(partitions.existing(conn)) >= {backfill.date(), UTC_TODAY + timedelta(days=7)}

    # every partition has the primary key and the BRIN index on time
    indexes = conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'ft' AND tablename = 'readings_p20250314'"
    ).fetchall()
    assert any("UNIQUE" in d and "(device_id, metric_id, ts)" in d for (d,) in indexes)
    assert any("USING brin (ts)" in d for (d,) in indexes)
    # no default partition that could swallow rows
    row = conn.execute(
        "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'ft.readings'::regclass AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'"
    ).fetchone()
    assert row == (0,)


def test_known_partitions_cost_no_query(conn: psycopg.Connection, plain_db: str) -> None:
    partitions.ensure_partitions(conn, datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 3, tzinfo=UTC))
    with db.connect(plain_db) as broken:
        with pytest.raises(psycopg.errors.DivisionByZero):
            broken.execute("SELECT 1 / 0")
        # any query on this connection would now raise: the cache answers alone
        assert partitions.ensure_partitions(broken, datetime(2025, 1, 2, 12, tzinfo=UTC),
                                            datetime(2025, 1, 3, tzinfo=UTC)) == []
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            partitions.ensure_partitions(broken, datetime(2025, 1, 4, tzinfo=UTC), datetime(2025, 1, 4, tzinfo=UTC))


def test_a_row_for_a_day_without_partition_fails_loudly_and_ensure_fixes_it(conn: psycopg.Connection) -> None:
    ids = register(conn)
    late = [r for r in readings(ids, days=1) if r[1] == "dev-1"][:10]
    copy_sql = f"COPY ft.readings ({COLUMNS}) FROM STDIN"
    with pytest.raises(psycopg.errors.CheckViolation, match="no partition"), conn.cursor() as cur, \
            cur.copy(copy_sql) as copy:
        for row in late:
            copy.write_row(row)
    conn.rollback()
    load(conn, late)  # the store's way: partitions for the batch's days, then COPY
    assert conn.execute("SELECT count(*) FROM ft.readings").fetchone() == (len(late),)


def test_concurrent_writers_create_a_day_once(conn: psycopg.Connection, plain_db: str) -> None:
    day = datetime(2024, 2, 29, 12, tzinfo=UTC)
    barrier = threading.Barrier(4)
    created: list[list[str]] = []

    def writer() -> None:
        with db.connect(plain_db) as own:
            partitions.forget(own)
            barrier.wait()
            created.append(partitions.ensure_partitions(own, day, day + timedelta(days=1)))

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(name for names in created for name in names) == ["readings_p20240229", "readings_p20240301"]


def test_naive_times_and_runaway_ranges_are_refused(conn: psycopg.Connection) -> None:
    with pytest.raises(ValueError, match="without time zone"):
        partitions.ensure_partitions(conn, datetime(2025, 1, 1), datetime(2025, 1, 2))
    with pytest.raises(ValueError, match="at most"):
        partitions.ensure_partitions(conn, datetime(1970, 1, 1, tzinfo=UTC), datetime(2099, 1, 1, tzinfo=UTC))


# -- retention ------------------------------------------------------------------------------------


def test_retention_drops_old_partitions_and_rollups_and_keeps_recent(conn: psycopg.Connection, seeded) -> None:
    now = START + timedelta(days=2, hours=5)  # raw horizon (1 day): midnight starting day 1
    policy = retention.RetentionPolicy(raw_days=1, hourly_days=2, daily_days=None)
    before = conn.execute("SELECT count(*) FROM ft.readings WHERE ts >= %s", (START + DAY,)).fetchone()

    dropped = retention.apply_retention(conn, policy, now)

    assert dropped.partitions == ["readings_p20250601"]
    assert START.date() not in partitions.existing(conn)
    assert conn.execute("SELECT min(ts) >= %s FROM ft.readings", (START + DAY,)).fetchone() == (True,)
    assert conn.execute("SELECT count(*) FROM ft.readings").fetchone() == before
    # hourly rollups kept for 2 days (from midnight), daily rollups for ever: the dropped day survives there
    assert conn.execute("SELECT min(bucket) FROM ft.readings_hourly").fetchone() == (START,)
    assert dropped.hourly_rows == 0
    assert conn.execute("SELECT count(*) FROM ft.readings_daily WHERE bucket = %s", (START,)).fetchone()[0] > 0
    assert retention.apply_retention(conn, policy, now).partitions == []

    later = retention.apply_retention(conn, policy, now + 2 * DAY)
    assert later.hourly_rows > 0
    assert conn.execute("SELECT min(bucket) FROM ft.readings_hourly").fetchone() == (START + 2 * DAY,)


def test_retention_policy_from_settings() -> None:
    from cloud.config import CloudSettings

    settings = CloudSettings(retention_days=400, rollup_daily_retention_days=9000)
    policy = retention.RetentionPolicy.from_settings(settings)
    assert (policy.raw_days, policy.hourly_days, policy.daily_days) == (400, 400, 9000)
    with pytest.raises(ValueError, match="raw_days must be at least 1"):
        retention.RetentionPolicy(0, None, None)


# -- rollups ------------------------------------------------------------------------------------


def test_rollups_equal_a_direct_aggregate_of_raw_rows_including_late_data(conn: psycopg.Connection, seeded) -> None:
    assert rollups.pending(conn) == 0
    assert_rollups_match_raw(conn)

    # late data: a day-old hour of dev-1 gets more readings; dev-2's silent hours are backfilled;
    # a brand-new day arrives for dev-5 (into a partition made on demand)
    mid = seeded.metric_ids["temperature"]
    late = [("tenant-1", "dev-1", mid, START + timedelta(hours=3, minutes=m, seconds=1), 99.5, None, 0, 1, 2, m)
            for m in range(0, 60, 7)]
    late += [("tenant-1", "dev-2", mid, START + timedelta(days=1, hours=h), -5.25, None, 0, 2, 2, 100 + h)
             for h in range(6, 13)]
    late += [("tenant-1", "dev-5", mid, START + timedelta(days=30, minutes=m), 1.0 * m, None, 0, 2, 2, 200 + m)
             for m in range(0, 120, 15)]
    load(conn, late)

    with pytest.raises(AssertionError):
        assert_rollups_match_raw(conn)  # stale until refreshed: the check can tell
    result = rollups.refresh_dirty(conn)
    assert result.hours_marked == 1 + 7 + 2
    assert_rollups_match_raw(conn)
    assert rollups.refresh_dirty(conn).hours_marked == 0

    # a redelivered row inserted with ON CONFLICT DO NOTHING changes nothing and marks nothing
    conn.execute("INSERT INTO ft.readings (tenant_id, device_id, metric_id, ts, value, value_text, quality, trust,"
                 " epoch, seq) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", late[0])
    conn.commit()
    assert rollups.pending(conn) == 0


def test_explicit_range_refresh_rebuilds_rollups(conn: psycopg.Connection, seeded) -> None:
    conn.execute("TRUNCATE ft.readings_hourly, ft.readings_daily")
    conn.commit()
    done = rollups.refresh_rollups(conn, seeded.start + timedelta(hours=5), seeded.end - timedelta(hours=5))
    assert done.hourly_rows and done.daily_rows
    assert_rollups_match_raw(conn)
    again = rollups.refresh_rollups(conn, seeded.start, seeded.end)
    assert (again.hourly_rows, again.daily_rows) == (0, 0)  # nothing changed: nothing rewritten


# -- series ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "start_offset", "span"),
    [
        (timedelta(minutes=15), timedelta(hours=30, minutes=7), timedelta(hours=10)),  # raw rows in buckets
        (timedelta(minutes=90), timedelta(hours=2), timedelta(days=2)),  # not whole hours: raw rows
        (HOUR, timedelta(hours=1, minutes=30), timedelta(days=3)),  # hourly rollups
        (timedelta(hours=6), timedelta(0), timedelta(days=4)),  # hourly rollups, re-bucketed
        (DAY, timedelta(hours=12), timedelta(days=6)),  # daily rollups, range past the data
        (2 * DAY, -2 * DAY, timedelta(days=8)),  # daily rollups, re-bucketed
    ],
)
def test_device_series_buckets_equal_a_direct_aggregate(conn, seeded, step, start_offset, span, app) -> None:
    mid = seeded.metric_ids["soil_moisture"]
    start = seeded.start + start_offset
    end = start + span
    gaps = 0
    for device in ("dev-2", "dev-3", "dev-4"):
        points = series.series(app, device, "soil_moisture", start, end, step)
        reference = direct_series(conn, [device], mid, start, end, step)
        assert reference
        gaps += assert_series_matches(points, reference, start, end, step)
    assert gaps > 0  # the silent stretches show as gaps


def test_raw_series_is_the_readings_themselves(conn: psycopg.Connection, seeded, app) -> None:
    start, end = seeded.start + timedelta(hours=5), seeded.start + timedelta(hours=20)
    points = series.series(app, "dev-1", "temperature", start, end, "raw")
    rows = conn.execute(
        "SELECT ts, value FROM ft.readings WHERE device_id = 'dev-1' AND metric_id = %s AND ts >= %s AND ts < %s"
        " AND value IS NOT NULL ORDER BY ts",
        (seeded.metric_ids["temperature"], start, end),
    ).fetchall()
    assert [(p.ts, p.value, p.min, p.max, p.n) for p in points] == [(t, v, v, v, 1) for t, v in rows]
    assert series.series(app, "dev-1", "temperature", start, end) == points  # < 2 days: raw by default


def test_bucket_size_is_chosen_by_range() -> None:
    t = START
    assert series.choose_bucket(t, t + timedelta(days=2)) == "raw"
    assert series.choose_bucket(t, t + timedelta(days=2, seconds=1)) == HOUR
    assert series.choose_bucket(t, t + timedelta(days=90)) == HOUR
    assert series.choose_bucket(t, t + timedelta(days=91)) == DAY


def test_fill_previous_carries_the_last_bucket_into_gaps(conn: psycopg.Connection, seeded, app) -> None:
    start, end = seeded.start + timedelta(days=1), seeded.start + timedelta(days=2)
    plain = series.series(app, "dev-2", "ec", start, end, HOUR)
    filled = series.series(app, "dev-2", "ec", start, end, HOUR, fill="previous")
    assert [p.n for p in plain] == [p.n for p in filled]
    silent = [i for i, p in enumerate(plain) if p.n == 0]
    assert len(silent) >= 7
    for i in silent:
        assert plain[i].value is None
        assert filled[i].value == filled[i - 1].value and filled[i].ts == plain[i].ts


def test_farm_series_averages_its_devices(conn: psycopg.Connection, seeded, app) -> None:
    mid = seeded.metric_ids["temperature"]
    for step in (HOUR, timedelta(hours=3), DAY, timedelta(minutes=30)):
        start, end = seeded.start - DAY, seeded.end + DAY
        points = series.farm_series(app, "farm-a", "temperature", start, end, step)
        reference = direct_series(conn, FARMS["farm-a"], mid, start, end, step)
        assert assert_series_matches(points, reference, start, end, step) > 0
    # defaults: hourly up to 90 days
    auto = series.farm_series(app, "farm-b", "temperature", seeded.start, seeded.end)
    assert len(auto) == 4 * 24 and auto[0].n > 0
    with pytest.raises(NotFound, match="unknown farm"):
        series.farm_series(app, "farm-z", "temperature", seeded.start, seeded.end)


def test_latest_per_metric(conn: psycopg.Connection, seeded, app) -> None:
    expected = conn.execute(
        "SELECT DISTINCT ON (m.name) m.name, r.ts, r.value FROM ft.readings r JOIN ft.metrics m ON m.id = r.metric_id"
        " WHERE r.device_id = 'dev-3' ORDER BY m.name, r.ts DESC"
    ).fetchall()
    got = series.latest(app, "dev-3")
    assert [(x.metric, x.ts, x.value) for x in got] == expected
    assert {x.trust for x in got} == {2}

    # a metric seen only minutes ago (not rolled up yet) is there too
    conn.execute("INSERT INTO ft.metrics (name, unit) VALUES ('battery', 'V')")
    recent = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    load(conn, [("tenant-1", "dev-3", _metric(conn, "battery"), recent, 3.61, None, 0, 1, 1, 9)])
    first = series.latest(app, "dev-3")[0]
    assert (first.metric, first.ts, first.value, first.trust) == ("battery", recent, 3.61, 1)
    assert series.latest(app, "dev-unknown") == []


def test_bad_queries_get_clear_errors(conn: psycopg.Connection, seeded, app) -> None:
    s, e = seeded.start, seeded.end
    with pytest.raises(NotFound, match="unknown metric 'rain'"):
        series.series(app, "dev-1", "rain", s, e)
    conn.execute("INSERT INTO ft.metrics (name, unit) VALUES ('temperature', 'F')")
    conn.commit()
    with pytest.raises(SeriesError, match=r"several units \['C', 'F'\]"):
        series.series(app, "dev-1", "temperature", s, e)
    assert series.series(app, "dev-1", "temperature", s, e, DAY, unit="C")[0].n > 0
    with pytest.raises(SeriesError, match="time zone"):
        series.series(app, "dev-1", "ec", s.replace(tzinfo=None), e)
    with pytest.raises(SeriesError, match="not after start"):
        series.series(app, "dev-1", "ec", e, s)
    with pytest.raises(SeriesError, match="bucket must be"):
        series.series(app, "dev-1", "ec", s, e, timedelta(milliseconds=10))
    with pytest.raises(SeriesError, match="buckets of"):
        series.series(app, "dev-1", "ec", s - timedelta(days=2000), e, timedelta(minutes=1))
    with pytest.raises(SeriesError, match="fill must be"):
        series.series(app, "dev-1", "ec", s, e, HOUR, fill="linear")  # type: ignore[arg-type]
    with pytest.raises(SeriesError, match="needs a bucket"):
        series.farm_series(app, "farm-a", "ec", s, e, "raw")  # type: ignore[arg-type]


def _metric(conn: psycopg.Connection, name: str) -> int:
    row = conn.execute("SELECT id FROM ft.metrics WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return row[0]


# -- the upkeep loop --------------------------------------------------------------------------------


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_maintenance_loop_keeps_partitions_and_rollups_and_survives_errors(conn: psycopg.Connection,
                                                                          plain_db: str) -> None:
    ids = register(conn)
    policy = retention.RetentionPolicy(raw_days=3650, hourly_days=None, daily_days=None)
    owner = Maintenance(plain_db, partitions_ahead_days=3, policy=policy, max_past_days=30, interval_s=0.1)
    standby = Maintenance(plain_db, partitions_ahead_days=3, policy=policy, max_past_days=30, interval_s=0.1)
    owner.start()
    try:
        _wait_for(lambda: owner.status.cycles >= 1)
        standby.start()
        _wait_for(lambda: standby.status.role == "standby")
        today = datetime.now(UTC).date()
        assert set(partitions.existing(conn)) >= {today + timedelta(days=d) for d in range(-1, 4)}

        load(conn, readings(ids, days=1)[:500])
        _wait_for(lambda: rollups.pending(conn) == 0 and owner.status.rollup_hours_refreshed > 0)
        assert_rollups_match_raw(conn)

        # a cycle that fails is counted, and the loop carries on
        conn.execute("ALTER TABLE ft.rollup_dirty RENAME TO rollup_dirty_away")
        conn.commit()
        _wait_for(lambda: owner.status.errors >= 1)
        conn.execute("ALTER TABLE ft.rollup_dirty_away RENAME TO rollup_dirty")
        conn.commit()
        cycles = owner.status.cycles
        _wait_for(lambda: owner.status.cycles > cycles + 1)
        assert "rollup_dirty" in (owner.status.last_error or "")
        assert owner.status.role == "owner" and standby.status.cycles == 0

        # the owner's connection is killed: the loop reconnects and carries on
        errors = owner.status.errors
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                     " AND application_name = 'fieldtrust-maintenance' AND pid <> pg_backend_pid()")
        conn.commit()
        _wait_for(lambda: owner.status.errors > errors or standby.status.role == "owner")
        cycles = owner.status.cycles + standby.status.cycles
        _wait_for(lambda: owner.status.cycles + standby.status.cycles > cycles + 1)
        assert {owner.status.role, standby.status.role} == {"owner", "standby"}
    finally:
        owner.stop()
        standby.stop()
    assert not any(t.name == "store-maintenance" for t in threading.enumerate())
