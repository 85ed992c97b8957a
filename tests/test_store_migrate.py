"""Schema migrations on the real PostgreSQL: order, ledger, idempotence, tampering, concurrency, CLI."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest
from support.store_data import database
from typer.testing import CliRunner

from cloud.store import db
from cloud.store.migrate import MigrationError, available, migrate
from fieldtrust.cli.main import app


@pytest.fixture
def empty_db(pg_server_url: str) -> Iterator[str]:
    """A new database with nothing in it (fresh_db comes migrated already)."""
    with database(pg_server_url, None) as url:
        yield url


def _ledger(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        query = "SELECT version, name, checksum, backend FROM ft.schema_migrations ORDER BY version"
        return conn.execute(query).fetchall()


def test_a_fresh_database_gets_every_migration_once(empty_db: str) -> None:
    with psycopg.connect(empty_db) as conn:
        expected_backend = "timescale" if db.timescale_available(conn) else "postgres"
    wanted = [m.file for m in available(expected_backend)]

    assert migrate(empty_db) == wanted
    assert wanted[:2] == ["001_core.sql", f"002_readings.{expected_backend}.sql"]
    assert migrate(empty_db) == []  # the second run finds nothing to do

    ledger = _ledger(empty_db)
    assert [name for _, name, _, _ in ledger] == wanted
    assert [v for v, _, _, _ in ledger] == sorted(v for v, _, _, _ in ledger)
    assert {b for *_, b in ledger} == {expected_backend}
    assert all(len(checksum) == 64 for _, _, checksum, _ in ledger)
    with psycopg.connect(empty_db) as conn:
        assert db.backend(conn) == expected_backend
        assert conn.execute("SELECT to_regclass('ft.readings') IS NOT NULL").fetchone() == (True,)


def test_a_changed_migration_is_an_error_naming_the_file(fresh_db: str) -> None:
    with psycopg.connect(fresh_db) as conn:
        conn.execute("UPDATE ft.schema_migrations SET checksum = repeat('0', 64) WHERE version = 1")
    with pytest.raises(MigrationError, match=r"001_core\.sql: changed after it was applied"):
        migrate(fresh_db)


def test_an_applied_migration_missing_from_the_code_is_an_error(fresh_db: str) -> None:
    with psycopg.connect(fresh_db) as conn:
        conn.execute(
            "INSERT INTO ft.schema_migrations (version, name, checksum, backend)"
            " SELECT 999, '999_from_the_future.sql', repeat('0', 64), backend FROM ft.schema_migrations LIMIT 1"
        )
    with pytest.raises(MigrationError, match=r"999_from_the_future\.sql: applied to the database but not found"):
        migrate(fresh_db)


def test_the_backend_of_a_database_cannot_be_switched(fresh_db: str) -> None:
    with psycopg.connect(fresh_db) as conn:
        built = db.backend(conn)
    other = "postgres" if built == "timescale" else "timescale"
    with pytest.raises(MigrationError, match=f"built for {built}; cannot migrate it as {other}"):
        migrate(fresh_db, backend=other)


def test_concurrent_migrators_apply_each_migration_once(empty_db: str) -> None:
    barrier = threading.Barrier(3)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def starter() -> None:
        barrier.wait()
        try:
            results.append(migrate(empty_db))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=starter) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert sorted(map(len, results))[:2] == [0, 0]  # two found the work done
    applied = max(results, key=len)
    assert applied and [name for _, name, _, _ in _ledger(empty_db)] == applied


def test_cli_migrate(empty_db: str) -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["cloud", "migrate", "--database-url", empty_db])
    assert first.exit_code == 0, first.output
    assert "applied 001_core.sql" in first.output
    second = runner.invoke(app, ["cloud", "migrate", "--database-url", empty_db])
    assert second.exit_code == 0 and "schema is up to date" in second.output
    bad = runner.invoke(app, ["cloud", "migrate", "--database-url", empty_db + "_missing"])
    assert bad.exit_code == 1 and "migration failed" in bad.output


def test_connections_and_pooled_connections_run_in_utc(fresh_db: str) -> None:
    with db.connect(fresh_db) as conn:
        assert conn.execute("SHOW TimeZone").fetchone() == ("UTC",)
    with db.pool(fresh_db, min_size=1, max_size=2, application="ft-test-pool") as pool, pool.connection() as conn:
        row = conn.execute("SELECT current_setting('TimeZone'), current_setting('application_name')").fetchone()
        assert row == ("UTC", "ft-test-pool")
