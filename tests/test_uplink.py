"""The uplink against a real broker and a cloud peer: batches, receipts, re-sends, limits, outages."""

from __future__ import annotations

import math
import os
import threading
import time

import pytest
from support.readings import SW, capture_reading, node_frame

from contract import models, topics
from contract.telemetry import sign
from edge_agent.config import BrokerConfig, GatewayIdentity, UplinkConfig
from edge_agent.outbox import Outbox
from edge_agent.uplink import Uplink
from fieldtrust.services.mosquitto import PrivateMosquitto
from hardware.cloud_peer import CloudPeer

FAST = {"batch_max_wait_s": 0.05, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "session_expiry_s": 60}


def make_uplink(ids, box: Outbox, host: str, port: int, **cfg) -> Uplink:
    gateway = GatewayIdentity(id=ids["gw"], tenant=ids["tenant"], key_hex=ids["key"].hex())
    ucfg = UplinkConfig(broker=BrokerConfig(host=host, port=port), **{**FAST, **cfg})
    return Uplink(gateway, ids["key"], ucfg, box, sw=SW)


@pytest.fixture
def box(tmp_path):
    outbox = Outbox(tmp_path / "outbox.db", 64 << 20)
    yield outbox
    outbox.close()


def peer_for(ids, broker, **kw) -> CloudPeer:
    return CloudPeer(broker[0], broker[1], ids["tenant"], ids["gw"], ids["key"], **kw)


def drained(box: Outbox):
    return lambda _peer: box.stats().depth == 0


def test_readings_and_node_frames_reach_the_cloud_and_are_receipted(shared_broker, ids, box):
    node_key = os.urandom(32)
    node = f"node-{ids['gw']}"
    for i in range(30):
        capture_reading(box, "soil-1", 20.0 + i / 10)
    frames = [node_frame(node_key, node, seq) for seq in range(5)]
    for frame in frames:
        box.capture_frame(frame)
    up = make_uplink(ids, box, *shared_broker, batch_max_items=8)
    with peer_for(ids, shared_broker, node_keys={node: node_key}) as peer:
        up.start()
        try:
            assert peer.wait_for(drained(box)), (peer.counts, box.stats())
        finally:
            up.stop()
    assert peer.values("soil-1", "soil_moisture") == [pytest.approx(20.0 + i / 10) for i in range(30)]
    assert {k for k in peer.stored.node_signed} == {(node, 1, s) for s in range(5)}  # node signatures verified
    assert peer.counts["batches"] == 5 and peer.counts["duplicates"] == 0
    assert up.counters["items_confirmed"] == 35 and box.stats().confirmed == 35
    assert any(p.k == "birth" and p.gw == ids["gw"] for p in peer.presence)


def test_unreceipted_batch_is_resent_with_the_same_bytes(shared_broker, ids, box):
    for i in range(3):
        capture_reading(box, "soil-1", float(i))
    up = make_uplink(ids, box, *shared_broker, receipt_timeout_s=0.5)
    with peer_for(ids, shared_broker, withhold=True) as peer:
        up.start()
        try:
            assert peer.wait_for(lambda p: p.counts["batch_redelivered"] >= 2)
            assert box.stats().depth == 3  # stored at the cloud, but not receipted: still here
            assert peer.counts["duplicates"] == 6 and peer.counts["conflicts"] == 0  # same bytes each time
            peer.withhold = False
            assert peer.wait_for(drained(box))
        finally:
            up.stop()
    assert up.counters["batches_resent"] >= 2 and up.counters["batches_sent"] == 1


def test_forged_and_malformed_receipts_are_ignored_and_counted(shared_broker, ids, box):
    capture_reading(box, "soil-1", 1.0)
    up = make_uplink(ids, box, *shared_broker, receipt_timeout_s=60)
    with peer_for(ids, shared_broker, withhold=True) as peer:
        up.start()
        try:
            assert peer.wait_for(lambda p: p.counts["batches"] == 1)
            bid = models.batch_id(ids["gw"], 1, 0)
            body = models.Receipt(k="receipt", gw=ids["gw"], at=1, bids=[bid]).model_dump_json().encode()
            other = models.Receipt(k="receipt", gw="gw-other", at=1, bids=[bid]).model_dump_json().encode()
            receipt_topic = topics.gateway(ids["tenant"], ids["gw"], "receipt")
            for payload in (sign(os.urandom(32), body), b"not a frame", sign(ids["key"], other), body):
                peer._client.publish(receipt_topic, payload, qos=1).wait_for_publish(5)
            deadline = time.monotonic() + 5
            while up.counters["receipts_rejected"] < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert up.counters["receipts_rejected"] == 4 and up.counters["receipts"] == 0
            assert box.in_flight == 1 and box.stats().depth == 1  # nothing deleted
            peer._client.publish(receipt_topic, sign(ids["key"], body), qos=1)
            assert peer.wait_for(drained(box))
        finally:
            up.stop()


def test_in_flight_and_batch_size_limits(shared_broker, ids, box):
    for i in range(100):
        capture_reading(box, "soil-1", float(i))
    up = make_uplink(ids, box, *shared_broker, batch_max_items=10, max_in_flight=2, receipt_timeout_s=60)
    with peer_for(ids, shared_broker, withhold=True) as peer:
        up.start()
        try:
            assert peer.wait_for(lambda p: p.counts["batches"] >= 2)
            time.sleep(0.5)  # room for a wrong third batch to show up
            assert peer.counts["batches"] == 2 and len(peer.stored.batches) == 2
            assert (box.in_flight, box.pending) == (2, 80)
        finally:
            up.stop()


def test_batch_bytes_limit_splits_batches(shared_broker, ids, box):
    node_key = os.urandom(32)
    for seq in range(40):
        box.capture_frame(node_frame(node_key, "node-big", seq))
    up = make_uplink(ids, box, *shared_broker, batch_max_bytes=4096)
    with peer_for(ids, shared_broker, node_keys={"node-big": node_key}) as peer:
        up.start()
        try:
            assert peer.wait_for(drained(box))
        finally:
            up.stop()
    assert len(peer.stored.node_signed) == 40
    assert peer.counts["batches"] >= 40 * len(node_frame(node_key, "node-big", 0)) // 4096


def test_fresh_data_is_not_starved_by_a_backlog(shared_broker, ids, box):
    for i in range(400):
        capture_reading(box, "old-dev", float(i))
    capture_reading(box, "fresh-dev", 99.0)
    order: list[set] = []
    up = make_uplink(ids, box, *shared_broker, batch_max_items=20, max_in_flight=1)
    with peer_for(ids, shared_broker) as peer:
        seen: set = set()

        def note_batches(p: CloudPeer) -> bool:
            new = set(p.stored.bodies) - seen
            if new:
                order.append(new)
                seen.update(new)
            return box.stats().depth == 0

        up.start()
        try:
            assert peer.wait_for(note_batches, timeout=20)
        finally:
            up.stop()
    fresh_at = next(i for i, keys in enumerate(order) if ("fresh-dev", 1, 0) in keys)
    assert fresh_at <= 2, f"fresh reading came in batch {fresh_at} of {len(order)}"
    assert len(seen) == 401


def test_unreceipted_batches_are_resent_after_a_restart(shared_broker, ids, tmp_path):
    path = tmp_path / "restart.db"
    box = Outbox(path, 1 << 20)
    for i in range(12):
        capture_reading(box, "soil-1", float(i))
    with peer_for(ids, shared_broker, withhold=True) as peer:
        up = make_uplink(ids, box, *shared_broker, batch_max_items=5, receipt_timeout_s=60)
        up.start()
        assert peer.wait_for(lambda p: p.counts["batches"] == 3)
        up.stop()
        box.close()

        peer.withhold = False
        box = Outbox(path, 1 << 20)
        assert box.in_flight == 3
        up = make_uplink(ids, box, *shared_broker, receipt_timeout_s=60)
        up.start()
        try:
            assert peer.wait_for(drained(box))
        finally:
            up.stop()
            box.close()
    assert len(peer.stored.bodies) == 12 and peer.counts["duplicates"] >= 12


def test_broker_outage_loses_nothing(tmp_path, ids, box):
    broker = PrivateMosquitto(tmp_path / "broker").start()
    try:
        up = make_uplink(ids, box, broker.host, broker.port, receipt_timeout_s=1.0)
        with peer_for(ids, (broker.host, broker.port)) as peer:
            up.start()
            stop = threading.Event()
            captured = []

            def capture_loop() -> None:
                while not stop.is_set():
                    captured.append(capture_reading(box, "soil-1", float(len(captured))))
                    time.sleep(0.01)

            writer = threading.Thread(target=capture_loop)
            writer.start()
            try:
                assert peer.wait_for(lambda p: len(p.stored.bodies) >= 20)
                broker.stop()
                time.sleep(1.5)  # capturing goes on while the broker is away
                assert not up.connected
                broker.start()
                time.sleep(0.5)
            finally:
                stop.set()
                writer.join()
            try:
                assert peer.wait_for(drained(box), timeout=20), (peer.counts, box.stats(), up.all_counters())
            finally:
                up.stop()
    finally:
        broker.stop()
    assert sorted(k[2] for k in peer.stored.bodies) == captured == list(range(len(captured)))
    assert up.link.counters["disconnects"] >= 1 and up.link.counters["connects"] >= 2


def test_clean_stop_publishes_the_will(shared_broker, ids, box):
    up = make_uplink(ids, box, *shared_broker)
    with peer_for(ids, shared_broker) as peer:
        up.start()
        assert peer.wait_for(lambda p: any(x.k == "birth" for x in p.presence))
        up.stop()
        assert peer.wait_for(lambda p: any(x.k == "will" for x in p.presence))
    assert all(p.gw == ids["gw"] and p.sw == SW for p in peer.presence)


def test_batches_fit_the_brokers_maximum_packet_size(tmp_path, ids, box):
    # the gateway broker's config refuses packets over 16 KiB and says so in its CONNACK
    for i in range(300):  # ~45 KiB of readings, under batch_max_items and batch_max_bytes (256 KiB)
        capture_reading(box, "soil-1", float(i))
    payload = box.stats().bytes
    with PrivateMosquitto(tmp_path / "broker") as broker:
        up = make_uplink(ids, box, broker.host, broker.port)
        with peer_for(ids, (broker.host, broker.port)) as peer:
            up.start()
            try:
                assert peer.wait_for(drained(box))
            finally:
                up.stop()
    assert up.link.max_packet_size == 16384 and up.link.counters["disconnects"] == 0
    # by items alone 2 batches would do (200 + 100); the byte limit the broker announced makes it 3
    assert peer.counts["batches"] >= math.ceil(payload / 16384) > 2 and len(peer.stored.bodies) == 300


def test_a_batch_sealed_too_large_for_the_broker_is_held_not_looped(tmp_path, ids, box):
    capture_reading(box, "soil-1", 1.0)
    box.seal_batch(1, 10, newest_first=False, build=lambda seq, items: (b"x" * 20_000, 1))
    capture_reading(box, "soil-1", 2.0)
    with PrivateMosquitto(tmp_path / "broker") as broker:
        up = make_uplink(ids, box, broker.host, broker.port, receipt_timeout_s=60)
        with peer_for(ids, (broker.host, broker.port)) as peer:
            up.start()
            try:
                assert peer.wait_for(lambda p: len(p.stored.bodies) == 1)  # the next batch still goes
                time.sleep(0.3)
            finally:
                up.stop()
    assert up.counters["batches_too_large"] == 1 and up.link.counters["disconnects"] == 0
    assert box.in_flight == 1
