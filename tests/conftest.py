"""Shared fixtures: the machine's real broker, and checks that tests leave nothing running."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

TEST_MQTT_URL = os.environ.get("FIELDTRUST_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


@pytest.fixture(scope="session")
def shared_broker(tmp_path_factory: pytest.TempPathFactory):
    """The broker tests share: FIELDTRUST_TEST_MQTT_URL, else the machine's Mosquitto on 1883.

    Never stopped or reconfigured by a test (those start private brokers).  On a machine where
    nothing listens there, a private broker is started for the session (Mosquitto when the binary
    is installed, else amqtt).  Yields ``(host, port)``.
    """
    from urllib.parse import urlsplit

    url = urlsplit(TEST_MQTT_URL)
    host, port = url.hostname or "127.0.0.1", url.port or 1883
    try:
        with socket.create_connection((host, port), timeout=2):
            pass
    except OSError:
        from fieldtrust.services.broker import start_local_broker

        with start_local_broker(tmp_path_factory.mktemp("shared-broker")) as broker:
            yield broker.host, broker.port
        return
    yield host, port


@pytest.fixture
def ids() -> dict:
    """Names and keys unique to this test (tenant, gateway, node), so parallel runs never share topics."""
    tag = uuid.uuid4().hex[:8]
    return {"tenant": f"t-{tag}", "gw": f"gw-{tag}", "key": os.urandom(32), "node": f"node-{tag}",
            "node_key": os.urandom(32)}


@pytest.fixture(scope="module")
def private_broker(tmp_path_factory: pytest.TempPathFactory):
    """A private Mosquitto for one test module, playing a gateway's local broker.

    Node topics (``ft/v1/node/+/...``) are the same for every gateway, so what a test counts on
    the shared broker could include other tests' nodes.
    """
    from fieldtrust.services.mosquitto import PrivateMosquitto

    with PrivateMosquitto(tmp_path_factory.mktemp("private-broker")) as mq:
        yield mq


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
