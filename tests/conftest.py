"""Shared fixtures: the machine's real broker, PostgreSQL databases, and checks that tests leave nothing running.

Databases: ``fresh_db`` is the owner's URL of a new migrated database (migrations, seeding and
checking rows as a test sees fit); services under test connect as ``ft_app`` (``app_url``), never
as a superuser, which would bypass row-level security.  ``app_db`` gives both.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from typing import NamedTuple

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


@contextlib.contextmanager
def _migrated_database(pg_server_url: str) -> Iterator[str]:
    """A new, migrated database on the test server, dropped at the end of the block.  Yields its URL."""
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


@pytest.fixture
def fresh_db(pg_server_url: str):
    """A new, migrated database on the test server; dropped afterwards.  Yields its URL."""
    with _migrated_database(pg_server_url) as url:
        yield url


@pytest.fixture
def app_url(fresh_db: str) -> str:
    """The ft_app URL of :func:`fresh_db`: how services (API, ingest, downlink) log in, under row-level security."""
    from cloud.config import app_url as derive

    return derive(fresh_db)


class AppDatabase(NamedTuple):
    """A fresh migrated database: the owner's URL (migrations, test setup) and the services' (ft_app)."""

    owner_url: str
    app_url: str


@pytest.fixture
def app_db(fresh_db: str, app_url: str) -> AppDatabase:
    return AppDatabase(fresh_db, app_url)


@pytest.fixture(scope="module")
def module_app_db(pg_server_url: str) -> Iterator[AppDatabase]:
    """Like :func:`app_db`, shared by the tests of one module (each test uses its own tenants, so they do not
    meet): creating and migrating a database costs seconds."""
    from cloud.config import app_url as derive

    with _migrated_database(pg_server_url) as url:
        yield AppDatabase(url, derive(url))


# -- stages: `make test` runs unit, integration and browser tests as separate, timed stages (.ci/test-stages) --
#: fixtures that reach PostgreSQL or an MQTT broker: a test using any of them (directly or through another
#: fixture) is an integration test
_INTEGRATION_FIXTURES = {"shared_broker", "private_broker", "pg_server_url", "fresh_db", "app_url", "app_db",
                         "module_app_db"}
#: test files that start brokers, databases or whole services themselves
_INTEGRATION_FILES = ("test_resilience_", "test_services_", "test_local_broker", "test_demo", "test_agent",
                      "test_provisioning_e2e", "test_virtual_board", "test_ingest_", "test_fleet_")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if "chromium" in names:
            item.add_marker(pytest.mark.browser)
        elif names & _INTEGRATION_FIXTURES or item.path.name.startswith(_INTEGRATION_FILES):
            item.add_marker(pytest.mark.integration)
