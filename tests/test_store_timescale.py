"""The TimescaleDB layout: hypertable, compression, continuous aggregates, policies, and the same
answers from the one query layer as on plain PostgreSQL (checked against raw rows the same way).

Runs wherever the test server can load the extension; skips, saying why, where it cannot.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from support.store_data import (
    FARMS,
    assert_rollups_match_raw,
    assert_series_matches,
    database,
    direct_series,
    load,
    seed,
)

from cloud.config import app_url
from cloud.store import db, partitions, retention, rollups, scope, series
from cloud.store.maintenance import Maintenance
from cloud.store.series import DAY, HOUR


@pytest.fixture(scope="module")
def timescale_server(pg_server_url: str) -> str:
    with psycopg.connect(pg_server_url) as conn:
        if not db.timescale_available(conn):
            version = conn.execute("SHOW server_version").fetchone()
            pytest.skip(
                f"TimescaleDB is not available on the test server (PostgreSQL {version[0] if version else '?'}):"
                " the extension must be installed (pg_available_extensions) and in shared_preload_libraries;"
                " set FIELDTRUST_TEST_DATABASE_URL to a server that has it to run these tests"
            )
    return pg_server_url


@pytest.fixture
def ts_db(timescale_server: str):
    with database(timescale_server, "timescale") as url:
        yield url


@pytest.fixture
def ts_conn(ts_db: str):
    with db.connect(ts_db) as conn:
        yield conn


@pytest.fixture
def ts_app(ts_db: str, ts_seeded):
    """The services' connection (ft_app, under row-level security) in the seeded tenant's scope, for the
    query layer: it reads the rollups through their tenant-filtering views, as the API does."""
    with db.connect(app_url(ts_db)) as conn:
        scope.tenant_scope(conn, "tenant-1")
        yield conn


@pytest.fixture
def ts_seeded(ts_conn: psycopg.Connection):
    data = seed(ts_conn)
    rollups.refresh_rollups(ts_conn, data.start, data.end)
    return data


def test_the_timescale_layout(ts_conn: psycopg.Connection) -> None:
    assert db.backend(ts_conn) == "timescale"
    dims = ts_conn.execute(
        "SELECT column_name, time_interval FROM timescaledb_information.dimensions"
        " WHERE hypertable_schema = 'ft' AND hypertable_name = 'readings'"
    ).fetchall()
    assert dims == [("ts", timedelta(days=1))]
    enabled = ts_conn.execute(
        "SELECT compression_enabled FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = 'ft' AND hypertable_name = 'readings'"
    ).fetchone()
    assert enabled == (True,)
    if ts_conn.execute("SELECT to_regclass('timescaledb_information.hypertable_compression_settings')").fetchone()[0]:
        segmentby = ts_conn.execute(  # TimescaleDB >= 2.14
            "SELECT segmentby FROM timescaledb_information.hypertable_compression_settings"
            " WHERE hypertable = 'ft.readings'::regclass"
        ).fetchone()
        assert segmentby is not None and segmentby[0].replace(" ", "") == "device_id,metric_id"
    else:
        segmentby = ts_conn.execute(
            "SELECT string_agg(attname, ',' ORDER BY segmentby_column_index)"
            " FROM timescaledb_information.compression_settings"
            " WHERE hypertable_schema = 'ft' AND hypertable_name = 'readings' AND segmentby_column_index IS NOT NULL"
        ).fetchone()
        assert segmentby == ("device_id,metric_id",)
    views = ts_conn.execute(
        "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates"
        " WHERE view_schema = 'ft' ORDER BY view_name"
    ).fetchall()
    assert views == [("readings_daily", False), ("readings_hourly", False)]
    # a fresh database: every policy job is ours (the aggregates' jobs name internal hypertables)
    jobs = {r[0] for r in ts_conn.execute("SELECT proc_name FROM timescaledb_information.jobs").fetchall()}
    assert {"policy_compression", "policy_refresh_continuous_aggregate", "policy_retention"} <= jobs
    # no partitions to manage: chunks are the extension's
    first, last = datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 9, tzinfo=UTC)
    assert partitions.ensure_partitions(ts_conn, first, last) == []


def test_continuous_aggregates_equal_a_direct_aggregate_including_late_data(ts_conn, ts_seeded) -> None:
    assert_rollups_match_raw(ts_conn)
    mid = ts_seeded.metric_ids["temperature"]
    late = [("tenant-1", "dev-2", mid, ts_seeded.start + timedelta(days=1, hours=h), -5.25, None, 0, 2, 2, 100 + h)
            for h in range(6, 13)]
    load(ts_conn, late)
    rollups.refresh_rollups(ts_conn, ts_seeded.start + DAY, ts_seeded.start + 2 * DAY)
    assert_rollups_match_raw(ts_conn)


@pytest.mark.parametrize(
    ("step", "start_offset", "span"),
    [
        (timedelta(minutes=15), timedelta(hours=30, minutes=7), timedelta(hours=10)),
        (HOUR, timedelta(hours=1, minutes=30), timedelta(days=3)),
        (timedelta(hours=6), timedelta(0), timedelta(days=4)),
        (DAY, timedelta(hours=12), timedelta(days=6)),
    ],
)
def test_series_give_the_same_answers_as_raw_rows(ts_conn, ts_seeded, ts_app, step, start_offset, span) -> None:
    mid = ts_seeded.metric_ids["soil_moisture"]
    start = ts_seeded.start + start_offset
    end = start + span
    for device in ("dev-2", "dev-3", "dev-4"):
        points = series.series(ts_app, device, "soil_moisture", start, end, step)
        assert_series_matches(points, direct_series(ts_conn, [device], mid, start, end, step), start, end, step)
    farm = series.farm_series(ts_app, "farm-a", "soil_moisture", start, end, step)
    assert_series_matches(farm, direct_series(ts_conn, FARMS["farm-a"], mid, start, end, step), start, end, step)


def test_compressed_chunks_answer_the_same(ts_conn, ts_seeded, ts_app) -> None:
    before = series.series(ts_app, "dev-1", "ec", ts_seeded.start, ts_seeded.end, timedelta(minutes=30))
    ts_conn.execute("SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('ft.readings') c")
    ts_conn.commit()
    compressed = ts_conn.execute(
        "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'readings' AND is_compressed"
    ).fetchone()
    assert compressed is not None and compressed[0] >= 4
    assert series.series(ts_app, "dev-1", "ec", ts_seeded.start, ts_seeded.end, timedelta(minutes=30)) == before
    assert_rollups_match_raw(ts_conn)


def test_latest_and_upkeep_on_timescale(ts_conn, ts_seeded, ts_app, ts_db: str) -> None:
    expected = ts_conn.execute(
        "SELECT DISTINCT ON (m.name) m.name, r.ts, r.value FROM ft.readings r JOIN ft.metrics m ON m.id = r.metric_id"
        " WHERE r.device_id = 'dev-1' ORDER BY m.name, r.ts DESC"
    ).fetchall()
    assert [(x.metric, x.ts, x.value) for x in series.latest(ts_app, "dev-1")] == expected

    policy = retention.RetentionPolicy(raw_days=400, hourly_days=500, daily_days=None)
    loop = Maintenance(ts_db, partitions_ahead_days=3, policy=policy, max_past_days=30, interval_s=60)
    with db.connect(ts_db, autocommit=True) as own:
        loop.cycle(own)
    assert (loop.status.role, loop.status.backend, loop.status.errors) == ("owner", "timescale", 0)
    drop_after = ts_conn.execute(
        "SELECT config->>'drop_after' FROM timescaledb_information.jobs"
        " WHERE proc_name = 'policy_retention' AND hypertable_name = 'readings'"
    ).fetchone()
    assert drop_after is not None and drop_after[0].startswith("400 days")
