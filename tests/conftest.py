"""Shared fixtures: the machine's real broker, and checks that tests leave nothing running."""

from __future__ import annotations

import os
import socket

import pytest

SHARED_MQTT_HOST = os.environ.get("FIELDTRUST_TEST_MQTT_HOST", "127.0.0.1")
SHARED_MQTT_PORT = int(os.environ.get("FIELDTRUST_TEST_MQTT_PORT", "1883"))


@pytest.fixture(scope="session")
def shared_broker() -> tuple[str, int]:
    """The machine's shared Mosquitto (never stopped or reconfigured by a test)."""
    try:
        with socket.create_connection((SHARED_MQTT_HOST, SHARED_MQTT_PORT), timeout=2):
            pass
    except OSError as exc:
        pytest.fail(f"the shared MQTT broker {SHARED_MQTT_HOST}:{SHARED_MQTT_PORT} is not running: {exc}")
    return SHARED_MQTT_HOST, SHARED_MQTT_PORT


# -- PostgreSQL --------------------------------------------------------------------------------

TEST_DATABASE_URL = os.environ.get("FIELDTRUST_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """A PostgreSQL server for tests: FIELDTRUST_TEST_DATABASE_URL, else the local one.

    Tests never write into that database itself: :func:`fresh_db` makes a database per test.
    """
    import psycopg

    try:
        with psycopg.connect(TEST_DATABASE_URL, connect_timeout=3):
            pass
    except psycopg.OperationalError as exc:
        from fieldtrust.services import postgres

        if not postgres.available():
            pytest.fail(f"no PostgreSQL for tests at {TEST_DATABASE_URL} ({exc}) and no embedded one")
        return postgres.shared_test_server().url
    return TEST_DATABASE_URL


@pytest.fixture
def fresh_db(pg_server_url: str):
    """A new, migrated database on the test server; dropped afterwards.  Yields its URL."""
    import uuid

    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"ft_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(pg_server_url)
    params["dbname"] = name
    url = make_conninfo(**params)
    try:
        from cloud.store.migrate import migrate

        migrate(url)
        yield url
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
