"""The ingest worker on the machine's Mosquitto and PostgreSQL: end to end, duplicates, bad rows, dead letters."""

from __future__ import annotations

import time

import pytest
import yaml
from support.ingest import (
    GatewayLink,
    Site,
    batch_frame,
    now_ms,
    register_site,
    running_worker,
    scalar,
    soil_body,
    wait_until,
)

from contract.telemetry import record
from device_specs.registry import get_spec
from edge_agent.agent import Agent
from edge_agent.config import parse_config
from hardware.sim_device import SimulatedDevice
from hardware.tcp_server import TcpSimulator


@pytest.fixture
def site(fresh_db: str) -> Site:
    return register_site(fresh_db)


def readings(url: str, dev: str | None = None) -> int:
    if dev is None:
        return scalar(url, "SELECT count(*) FROM ft.readings")  # type: ignore[return-value]
    return scalar(url, "SELECT count(*) FROM ft.readings WHERE device_id = %s", dev)  # type: ignore[return-value]


def reasons(site: Site) -> list[str]:
    """Dead letters of this test's gateway (a worker also sees other tests' traffic on the shared broker)."""
    import psycopg

    with psycopg.connect(site.url) as conn:
        rows = conn.execute("SELECT reason FROM ft.dead_letters WHERE gateway_id = %s ORDER BY id", (site.gw,))
        return [r[0] for r in rows.fetchall()]


def test_simulated_sensors_through_the_edge_agent_land_exactly_once(shared_broker, site: Site, tmp_path) -> None:
    host, port = shared_broker
    spec = get_spec("jxct-soil-7in1")
    devices = [SimulatedDevice(spec, unit_id=unit, seed=unit) for unit in (1, 2)]
    with TcpSimulator(devices) as tcp, running_worker(site.url) as worker:
        cfg = parse_config(yaml.safe_dump({
            "gateway": {"id": site.gw, "tenant": site.tenant, "key_hex": site.gw_key.hex(), "data_dir": str(tmp_path)},
            "intake": {"enabled": False},
            "uplink": {"broker": {"host": host, "port": port}, "batch_max_wait_s": 0.1, "batch_max_items": 4,
                       "receipt_timeout_s": 5, "session_expiry_s": 30, "reconnect_min_s": 0.1},
            "health": {"interval_s": 60},
            "buses": [{"id": "tcp", "kind": "tcp", "host": "127.0.0.1", "tcp_port": tcp.port, "devices": [
                {"id": dev, "spec": "jxct-soil-7in1", "unit": unit, "poll_interval_s": 0.2}
                for dev, unit in zip(site.bus, (1, 2), strict=True)]}],
        }))
        agent = Agent(cfg, clock_synced=lambda: True)
        agent.start()
        try:
            enough = wait_until(lambda: all(readings(site.url, d) >= 35 for d in site.bus), 20)
            assert enough, worker.counters.snapshot()
            for scheduler in agent.schedulers:
                scheduler.stop()
            assert wait_until(lambda: agent.outbox.stats().depth == 0, 20), agent.outbox.stats()  # all receipted
        finally:
            agent.stop()
    captured = agent.counters["samples_captured"]
    assert scalar(site.url, "SELECT count(*) FROM ft.messages") == captured
    for dev in site.bus:  # every sample of every device, in sequence, none twice
        seqs = scalar(site.url, "SELECT array_agg(seq ORDER BY seq) FROM ft.messages WHERE device_id = %s", dev)
        assert seqs == list(range(len(seqs)))  # type: ignore[arg-type]
    assert readings(site.url) == 7 * captured  # seven points per sample of this spec
    assert scalar(site.url, "SELECT count(*) FROM ft.readings WHERE trust <> 2") == 0
    snap = worker.counters.snapshot()
    assert snap["readings"] == 7 * captured and snap["conflicts"] == 0 and reasons(site) == []


def test_one_batch_three_times_gives_one_set_of_rows_and_two_duplicates(shared_broker, site: Site) -> None:
    frame = batch_frame(site, [soil_body(site.bus[0], s) for s in range(5)])
    with running_worker(site.url, ingest_batch_wait_s=0) as worker:
        link = GatewayLink(site, *shared_broker)
        try:
            for _ in range(3):  # one at a time: each in its own transaction
                link.publish(frame)
                time.sleep(0.2)
            assert wait_until(lambda: len(link.receipted) == 3), (link.receipted, worker.counters.snapshot())
        finally:
            link.close()
    assert readings(site.url) == 10 and link.receipted == [f"{site.gw}:1:0"] * 3
    snap = worker.counters.snapshot()
    assert snap["duplicates"] == 2 and snap["batches_redelivered"] == 2 and snap["readings"] == 10


def test_forged_and_conflicting_messages_are_dead_lettered(shared_broker, site: Site) -> None:
    dev = site.bus[0]
    with running_worker(site.url) as worker:
        link = GatewayLink(site, *shared_broker)
        try:
            link.publish(batch_frame(site, [soil_body(dev, 0, moisture=11.0)]))
            link.publish(batch_frame(site, [soil_body(dev, 1)], key=bytes(32)))  # forged
            link.publish(batch_frame(site, [soil_body(dev, 0, moisture=66.0)]))  # same identity, other bytes
            assert wait_until(lambda: len(reasons(site)) == 2), worker.counters.snapshot()
        finally:
            link.close()
    assert sorted(reasons(site)) == ["bad_signature", "conflict"]
    assert readings(site.url) == 2 and worker.counters.get("conflicts") == 1
    assert worker.counters.rejected("bad_signature") >= 1
    assert link.receipted == [f"{site.gw}:1:0", f"{site.gw}:1:2"]  # the forged batch is not receipted


def test_a_1000_row_batch_with_1970_and_2099_stores_998_and_the_worker_carries_on(shared_broker, site: Site) -> None:
    dev = site.bus[0]
    now = now_ms()

    def body(seq: int, bt_ms: int, n: int) -> bytes:
        recs = [record("soil_moisture", "%", 20 + i / 10, i) for i in range(n)]
        return soil_body(dev, seq, bt_ms=bt_ms, records=recs)

    bodies = [body(seq, now - 600_000 + seq * 1000, 10) for seq in range(98)] + [body(98, now - 500, 18)]
    bodies.insert(40, body(99, 5_000, 1))  # 1970
    bodies.insert(70, body(100, 4_070_908_800_000, 1))  # 2099
    assert sum(b.count(b'"n":') for b in bodies) == 1000
    with running_worker(site.url) as worker:
        link = GatewayLink(site, *shared_broker)
        try:
            link.publish(batch_frame(site, bodies))
            assert wait_until(lambda: link.receipted == [f"{site.gw}:1:0"]), worker.counters.snapshot()
            assert readings(site.url, dev) == 998 and reasons(site) == ["row_time_out_of_range"] * 2
            link.publish(batch_frame(site, [soil_body(dev, 101, bt_ms=now)]))  # and it carries on
            assert wait_until(lambda: readings(site.url, dev) == 1000), worker.counters.snapshot()
        finally:
            link.close()
    assert worker.counters.rejected("row_time_out_of_range") == 2


def test_a_message_the_database_refuses_is_dead_lettered_and_the_rest_of_its_group_stored(shared_broker,
                                                                                          site: Site) -> None:
    import psycopg

    poisoned = site.bus[1]
    with psycopg.connect(site.url, autocommit=True) as conn:  # a fault of the database's, not of the message
        conn.execute(f"""
            CREATE FUNCTION ft.poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF EXISTS (SELECT 1 FROM inserted WHERE device_id = '{poisoned}') THEN
                    RAISE EXCEPTION 'device {poisoned} refused by a test trigger';
                END IF;
                RETURN NULL;
            END $$;
            CREATE TRIGGER poison AFTER INSERT ON ft.readings REFERENCING NEW TABLE AS inserted
                FOR EACH STATEMENT EXECUTE FUNCTION ft.poison();""")
    frames = [batch_frame(site, [soil_body(dev, seq)]) for seq, dev in enumerate([site.bus[0], poisoned, site.bus[0]])]
    with running_worker(site.url, ingest_batch_wait_s=0.5) as worker:  # the three in one group
        link = GatewayLink(site, *shared_broker)
        try:
            link.publish(*frames)
            assert wait_until(lambda: len(link.receipted) == 2), worker.counters.snapshot()
            link.publish(batch_frame(site, [soil_body(site.bus[0], 3)]))  # and it carries on
            assert wait_until(lambda: len(link.receipted) == 3), worker.counters.snapshot()
        finally:
            link.close()
    assert readings(site.url) == 6 and reasons(site) == ["store_error"]
    assert sorted(link.receipted) == [f"{site.gw}:1:{s}" for s in (0, 2, 3)]  # the refused one stays with the gateway


def test_acknowledgements_keep_the_order_of_arrival_when_commits_finish_out_of_order(shared_broker,
                                                                                      site: Site) -> None:
    import psycopg

    slow = site.bus[1]
    with psycopg.connect(site.url, autocommit=True) as conn:  # the first message's transaction takes a second
        conn.execute(f"""
            CREATE FUNCTION ft.slow() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF EXISTS (SELECT 1 FROM inserted WHERE device_id = '{slow}') THEN PERFORM pg_sleep(1); END IF;
                RETURN NULL;
            END $$;
            CREATE TRIGGER slow AFTER INSERT ON ft.readings REFERENCING NEW TABLE AS inserted
                FOR EACH STATEMENT EXECUTE FUNCTION ft.slow();""")
    with running_worker(site.url) as worker:
        received: list[int] = []
        acked: list[int] = []
        on_message, ack = worker._client.on_message, worker._client.ack
        worker._client.on_message = lambda c, u, m: (received.append(m.mid), on_message(c, u, m))
        worker._client.ack = lambda mid, qos: (acked.append(mid), ack(mid, qos))
        link = GatewayLink(site, *shared_broker)
        try:
            link.publish(batch_frame(site, [soil_body(slow, 0)]))
            time.sleep(0.3)  # in a group of its own, taken by the first commit thread
            link.publish(batch_frame(site, [soil_body(site.bus[0], 0)]))
            assert wait_until(lambda: len(link.receipted) == 2), worker.counters.snapshot()
        finally:
            link.close()
    assert link.receipted == [f"{site.gw}:1:1", f"{site.gw}:1:0"]  # the second one was committed first ...
    assert acked == received and len(acked) == 2  # ... and acknowledged after the first
