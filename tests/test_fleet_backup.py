"""Backup and restore round trip on the shared server: dump a database with data, restore it into an empty one, and
compare every table's row count and a checksum of a few tables; a non-empty target is refused unless forced."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cloud.fleet import backup, rules
from cloud.store import db
from tests.support.app_db import app_connect
from tests.support.ingest import register_site

pytestmark = pytest.mark.skipif(shutil.which("pg_dump") is None, reason="the PostgreSQL client tools are not installed")

CHECKED = ("tenants", "gateways", "devices", "keys", "alert_rules")


@pytest.fixture
def empty_db(pg_server_url: str) -> Iterator[str]:
    name = f"ft_restore_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(**(conninfo_to_dict(pg_server_url) | {"dbname": name}))
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'ft' ORDER BY 1")]
        return {t: conn.execute(sql.SQL("SELECT count(*) FROM ft.{}").format(sql.Identifier(t))).fetchone()[0]
                for t in tables}  # type: ignore[index]


def checksum(url: str, table: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql.SQL("SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM ft.{} t").format(
            sql.Identifier(table))).fetchone()
    return row[0]  # type: ignore[index]


def test_round_trip_into_an_empty_database(fresh_db: str, empty_db: str, tmp_path: Path) -> None:
    site = register_site(fresh_db, bus_devices=3)
    with app_connect(fresh_db, tenant=site.tenant) as conn:
        rules.create_rule(conn, site.tenant, rules.RuleCreate(name="b", kind="battery_low", threshold=3.3), "ops")
        conn.commit()
    before = counts(fresh_db)
    assert before["devices"] == 4 and before["alert_rules"] == 1

    info = backup.backup(fresh_db, tmp_path / "ft.dump")
    assert info.bytes > 0 and info.tables >= len(CHECKED)
    backup.restore(empty_db, info.path)

    assert counts(empty_db) == before
    for table in CHECKED:
        assert checksum(empty_db, table) == checksum(fresh_db, table), table
    # the restored database works for the services: ft_app's grants and the tenants' policies came along
    with app_connect(empty_db, tenant=site.tenant) as conn:
        assert [r.name for r in rules.list_rules(conn, site.tenant)] == ["b"]
    with db.connect(backup_app_url(empty_db)) as conn:  # no scope: row-level security hides every tenant row
        assert conn.execute("SELECT count(*) FROM ft.devices").fetchone() == (0,)

    with pytest.raises(backup.BackupError, match="already has a schema 'ft'"):
        backup.restore(empty_db, info.path)
    backup.restore(empty_db, info.path, force=True)
    assert counts(empty_db) == before


def backup_app_url(owner_url: str) -> str:
    from cloud.config import app_url

    return app_url(owner_url)


def test_missing_file_is_refused(empty_db: str, tmp_path: Path) -> None:
    with pytest.raises(backup.BackupError, match="no such backup file"):
        backup.restore(empty_db, tmp_path / "nothing.dump")
