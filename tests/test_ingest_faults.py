"""Faults: a worker killed mid-batch, a broker killed with batches queued, a stopped worker flooded, two workers.

The gateway side is the edge agent's own outbox and uplink (re-sending every batch until a receipt
confirms it), so "counts match exactly" means: every captured reading is in ft.readings once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from support.ingest import (
    KEK,
    GatewayLink,
    Site,
    batch_frame,
    fill_outbox,
    make_uplink,
    register_site,
    running_worker,
    scalar,
    soil_body,
    wait_until,
)

from edge_agent.outbox import Outbox
from fieldtrust import processes
from fieldtrust.services.amqtt_broker import AmqttBroker
from fieldtrust.services.mosquitto import PrivateMosquitto

REPO = Path(__file__).resolve().parents[1]
#: a cloud broker takes gateway batches of up to 1 MiB (the gateway broker's settings stop at 16 KiB)
CLOUD_BROKER = {"max_packet_size": str(2 * 1024 * 1024)}


def readings(url: str) -> int:
    return scalar(url, "SELECT count(*) FROM ft.readings")  # type: ignore[return-value]


def dead_letters_of(site: Site) -> int:
    return scalar(site.url, "SELECT count(*) FROM ft.dead_letters WHERE gateway_id = %s", site.gw)  # type: ignore


def spawn_worker(url: str, mqtt_url: str, worker_id: str, group: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "FIELDTRUST_DATABASE_URL": url, "FIELDTRUST_MQTT_URL": mqtt_url, "FIELDTRUST_KEK": KEK.hex(),
           "FIELDTRUST_INGEST_GROUP": group, "FIELDTRUST_INGEST_BATCH_WAIT_S": "0.2"}
    with log.open("ab") as out:
        return processes.spawn([sys.executable, "-m", "fieldtrust.cli.main", "cloud", "ingest", "--worker-id",
                                worker_id, "--session-expiry", "60", "--no-migrate"],
                               stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def subscribed(log: Path, times: int) -> bool:
    return log.exists() and log.read_text(errors="replace").count("subscribed to") >= times


def test_a_worker_killed_mid_batch_then_restarted_stores_every_reading_once(shared_broker, fresh_db, tmp_path):
    site = register_site(fresh_db)
    host, port = shared_broker
    box = Outbox(tmp_path / "outbox.db", 64 << 20)
    total = fill_outbox(box, site, 400)
    worker_id, group, log = f"ingest-kill-{site.gw}", f"ingest-{uuid.uuid4().hex[:8]}", tmp_path / "worker.log"
    up = make_uplink(site, box, host, port, batch_max_items=10, max_in_flight=20)
    worker = spawn_worker(site.url, f"mqtt://{host}:{port}", worker_id, group, log)
    try:
        assert wait_until(lambda: subscribed(log, 1), 20), log.read_text()
        up.start()
        assert wait_until(lambda: readings(site.url) >= 100, 20, step=0.01), log.read_text()
        processes.kill9(worker)  # groups are committed every 0.2 s: it dies holding messages it has not committed
        at_kill = readings(site.url)
        assert at_kill < total, "the worker finished before it could be killed"
        worker = spawn_worker(site.url, f"mqtt://{host}:{port}", worker_id, group, log)
        assert wait_until(lambda: box.stats().depth == 0, 40), (box.stats(), log.read_text()[-3000:])
    finally:
        up.stop()
        assert processes.stop(worker) == 0, log.read_text()[-3000:]  # SIGTERM: a clean stop
        box.close()
    assert readings(site.url) == total
    assert scalar(site.url, "SELECT count(*) FROM ft.messages") == total // 2
    assert scalar(site.url, "SELECT count(*) FROM ft.batches") == 40 and dead_letters_of(site) == 0


def test_a_broker_killed_with_batches_queued_loses_nothing(fresh_db, tmp_path):
    site = register_site(fresh_db)
    box = Outbox(tmp_path / "outbox.db", 64 << 20)
    total = fill_outbox(box, site, 300)
    worker_id, group = f"ingest-{site.gw}", f"ingest-{uuid.uuid4().hex[:8]}"
    with PrivateMosquitto(tmp_path / "broker", overrides=CLOUD_BROKER) as broker:
        mqtt_url = f"mqtt://{broker.host}:{broker.port}"
        with running_worker(site.url, mqtt_url, worker_id, ingest_group=group):
            pass  # the worker's session and subscription now wait in the broker for it
        up = make_uplink(site, box, broker.host, broker.port, batch_max_items=10, max_in_flight=100,
                         receipt_timeout_s=1.5)
        up.start()
        try:
            assert wait_until(lambda: up.counters["batches_sent"] >= 30), up.counters
            broker.kill()  # kill -9: the queued batches are gone with it
            broker.start()
            with running_worker(site.url, mqtt_url, worker_id, ingest_group=group) as worker:
                assert wait_until(lambda: box.stats().depth == 0, 30), (box.stats(), worker.counters.snapshot())
        finally:
            up.stop()
            box.close()
    assert readings(site.url) == total and scalar(site.url, "SELECT count(*) FROM ft.messages") == total // 2
    assert up.counters["batches_resent"] >= 30  # what no receipt confirmed came again
    assert dead_letters_of(site) == 0


def test_a_stopped_worker_flooded_with_1200_messages_catches_up_exactly(fresh_db, tmp_path):
    sites = [register_site(fresh_db), register_site(fresh_db)]
    boxes = [Outbox(tmp_path / f"outbox-{i}.db", 64 << 20) for i in range(2)]
    total = sum(fill_outbox(box, site, 600) for box, site in zip(boxes, sites, strict=True))
    worker_id, group = f"ingest-{sites[0].gw}", f"ingest-{uuid.uuid4().hex[:8]}"
    # Mosquitto's default queue for an offline client: 1000 messages; the rest it drops, the gateways re-send.
    with PrivateMosquitto(tmp_path / "broker", overrides={**CLOUD_BROKER, "max_queued_messages": "1000"}) as broker:
        mqtt_url = f"mqtt://{broker.host}:{broker.port}"
        with running_worker(site_url := sites[0].url, mqtt_url, worker_id, ingest_group=group):
            pass
        ups = [make_uplink(site, box, broker.host, broker.port, batch_max_items=1, max_in_flight=600,
                           receipt_timeout_s=2.0) for site, box in zip(sites, boxes, strict=True)]
        for up in ups:
            up.start()
        try:
            assert wait_until(lambda: sum(up.counters["batches_sent"] for up in ups) == 1200, 20)
            with running_worker(site_url, mqtt_url, worker_id, ingest_group=group) as worker:
                assert wait_until(lambda: all(box.stats().depth == 0 for box in boxes), 40), worker.counters.snapshot()
        finally:
            for up in ups:
                up.stop()
            for box in boxes:
                box.close()
    assert readings(site_url) == total == 2400
    assert scalar(site_url, "SELECT count(*) FROM ft.batches") == 1200
    assert sum(up.counters["batches_resent"] for up in ups) > 0  # the broker dropped what exceeded its queue
    assert worker.counters.get("conflicts") == 0 and worker.counters.rejected() == 0


def test_two_workers_on_a_shared_subscription_split_the_load(shared_broker, fresh_db):
    site = register_site(fresh_db)
    group = f"ingest-{uuid.uuid4().hex[:8]}"
    with running_worker(site.url, ingest_group=group) as a, running_worker(site.url, ingest_group=group) as b:
        link = GatewayLink(site, *shared_broker)
        try:
            link.publish(*[batch_frame(site, [soil_body(site.bus[seq % 2], seq)]) for seq in range(40)])
            assert wait_until(lambda: len(link.receipted) == 40), (a.counters.snapshot(), b.counters.snapshot())
        finally:
            link.close()
    assert readings(site.url) == 80 and sorted(link.receipted) == sorted(f"{site.gw}:1:{s}" for s in range(40))
    assert a.counters.get("batches") > 0 and b.counters.get("batches") > 0
    assert a.counters.get("batches") + b.counters.get("batches") == 40


def test_mqtt_3_1_1_with_a_plain_subscription_on_amqtt(fresh_db, tmp_path):
    site = register_site(fresh_db)
    try:
        broker = AmqttBroker(tmp_path / "amqtt").start()
    except RuntimeError as exc:
        pytest.fail(f"amqtt does not start here: {exc}")
    try:
        mqtt_url = f"mqtt://{broker.host}:{broker.port}?protocol=3.1.1"
        with running_worker(site.url, mqtt_url) as worker:
            link = GatewayLink(site, broker.host, broker.port, protocol="3.1.1")
            try:
                frame = batch_frame(site, [soil_body(site.bus[0], s) for s in range(3)])
                link.publish(frame, frame)
                assert wait_until(lambda: worker.counters.get("duplicates") == 1), worker.counters.snapshot()
                assert wait_until(lambda: link.receipted and set(link.receipted) == {f"{site.gw}:1:0"})
            finally:
                link.close()
    finally:
        broker.stop()
    assert readings(site.url) == 6 and worker.counters.get("messages_acked") == 2
