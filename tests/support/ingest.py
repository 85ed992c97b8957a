"""Ingest test helpers: a registered site (tenant, gateway, bus devices, a node), signed batches, worker settings.

Batches are built the way the gateway's uplink builds them (telemetry bodies spliced verbatim,
node frames as JSON strings, the whole signed with the gateway key), from the contract's own
encoder, so the ingest is tested against the bytes a real gateway sends.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from cloud.config import CloudSettings
from cloud.ingest.worker import Worker, WorkerOptions
from cloud.store import db, registry
from contract import models, topics
from contract.telemetry import MAX_BATCH_FRAME_BYTES, encode_body, record, sign, telemetry, verify
from edge_agent.config import BrokerConfig, GatewayIdentity, UplinkConfig
from edge_agent.outbox import Outbox
from edge_agent.uplink import Uplink

KEK = bytes(range(32))
BUS_SPEC = "jxct-soil-7in1"  # soil_moisture % [0, 100], soil_temperature Cel [-40, 80], ...
NODE_SPEC = "capacitive-soil-moisture-v1-2"  # soil_moisture % [0, 100], soil_moisture_mv mV


@dataclass
class Site:
    url: str
    tenant: str
    farm: str
    gw: str
    gw_key: bytes
    bus: list[str]
    node: str
    node_key: bytes
    seq: int = 0  # the gateway's next batch sequence number
    dev_seq: dict[str, int] = field(default_factory=dict)

    def next_seq(self, dev: str) -> int:
        seq = self.dev_seq.get(dev, 0)
        self.dev_seq[dev] = seq + 1
        return seq


def register_site(url: str, bus_devices: int = 2) -> Site:
    tag = uuid.uuid4().hex[:8]
    site = Site(url, f"t-{tag}", f"farm-{tag}", f"gw-{tag}", os.urandom(32),
                [f"soil-{tag}-{i}" for i in range(bus_devices)], f"node-{tag}", os.urandom(32))
    with db.connect(url) as conn:
        registry.register_tenant(conn, site.tenant, "Test tenant")
        registry.register_farm(conn, site.tenant, site.farm, "Test farm")
        registry.register_gateway(conn, site.tenant, site.gw, site.farm, site.gw_key, KEK, None, None)
        for dev in site.bus:
            registry.register_device(conn, site.tenant, dev, "bus", None, site.gw, BUS_SPEC, None, KEK)
        registry.register_device(conn, site.tenant, site.node, "node", None, site.gw, NODE_SPEC, site.node_key, KEK)
        conn.commit()
    return site


def now_ms() -> int:
    return int(time.time() * 1000)


#: base time of generated readings: an hour ago, one second per sequence number (distinct times per device)
BASE_MS = now_ms() - 3_600_000


def soil_body(dev: str, seq: int, bt_ms: int | None = None, moisture: object = 23.5, temperature: object = 18.25,
              ep: int = 1, records: list[dict] | None = None) -> bytes:
    """A gateway-attested telemetry body of a soil probe (two records unless ``records`` are given)."""
    recs = records if records is not None else [record("soil_moisture", "%", moisture),
                                                record("soil_temperature", "Cel", temperature, 5)]
    return encode_body(telemetry(dev, ep, seq, BASE_MS + seq * 1000 if bt_ms is None else bt_ms, recs, "edge/test", 0))


def node_frame(site: Site, seq: int, moisture: float = 31.5, bt_ms: int | None = None,
               key: bytes | None = None) -> bytes:
    body = encode_body(telemetry(site.node, 1, seq, BASE_MS + seq * 1000 if bt_ms is None else bt_ms,
                                 [record("soil_moisture", "%", moisture), record("soil_moisture_mv", "mV", 1650)],
                                 "fw/test", 12))
    return sign(key or site.node_key, body)


def batch_frame(site: Site, tel: list[bytes] = (), nodes: list[bytes] = (), *, seq: int | None = None,  # type: ignore[assignment]
                key: bytes | None = None, gw: str | None = None, tenant: str | None = None, ep: int = 1) -> bytes:
    """A signed batch as ``edge_agent.uplink.Uplink.build_frame`` makes it."""
    if seq is None:
        seq, site.seq = site.seq, site.seq + 1
    header = encode_body({"v": 1, "k": "batch", "gw": gw or site.gw, "tenant": tenant or site.tenant, "ep": ep,
                          "seq": seq, "sw": "edge/test", "sent": now_ms()})
    body = (header[:-1] + b',"tel":[' + b",".join(tel) + b'],"nodes":['
            + b",".join(json.dumps(f.decode()).encode() for f in nodes) + b"]}")
    return sign(key or site.gw_key, body)


def settings(url: str, mqtt_url: str = "mqtt://127.0.0.1:1883", **overrides: object) -> CloudSettings:
    values: dict[str, object] = {"database_url": url, "mqtt_url": mqtt_url, "kek": KEK.hex(),
                                 "ingest_batch_wait_s": 0.05}
    values.update(overrides)
    return CloudSettings(**values)  # type: ignore[arg-type]


def scalar(url: str, query: str, *params: object) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def dead_letters(url: str) -> list[tuple[str, str, str | None]]:
    """(reason, detail, device) of every dead letter, oldest first."""
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT reason, detail, device_id FROM ft.dead_letters ORDER BY id").fetchall()


def wait_until(cond: Callable[[], bool], timeout: float = 15.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


@contextmanager
def running_worker(url: str, mqtt_url: str = "mqtt://127.0.0.1:1883", worker_id: str | None = None,
                   **overrides: object) -> Iterator[Worker]:
    """An in-process worker in a share group of its own (other tests' workers never take its messages).

    Its session expires 10 s after it leaves, so the shared broker does not queue for it long.
    """
    overrides.setdefault("ingest_group", f"ingest-{uuid.uuid4().hex[:8]}")
    options = WorkerOptions(worker_id or f"ingest-test-{uuid.uuid4().hex[:8]}", session_expiry_s=10,
                            counters_interval_s=0.5)
    worker = Worker(settings(url, mqtt_url, **overrides), options).start()
    try:
        yield worker
    finally:
        worker.stop()


class GatewayLink:
    """A gateway's MQTT side, for tests: publishes frames to its uplink, collects the receipts it verifies."""

    def __init__(self, site: Site, host: str, port: int, protocol: str = "5") -> None:
        self.site = site
        self.receipted: list[str] = []
        self.rejected = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"gwlink-{uuid.uuid4().hex[:8]}",
                                  protocol=paho.MQTTv5 if protocol == "5" else paho.MQTTv311)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe(topics.gateway(site.tenant, site.gw, "receipt"), qos=1)
        if not self._subscribed.wait(10):
            raise TimeoutError("no SUBACK")

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        try:
            receipt = models.parse(verify(msg.payload, self.site.gw_key, MAX_BATCH_FRAME_BYTES), expect="receipt")
            assert isinstance(receipt, models.Receipt)
        except ValueError:
            self.rejected += 1
            return
        with self._lock:
            self.receipted += receipt.bids

    def publish(self, *frames: bytes, topic: str | None = None) -> None:
        topic = topic or topics.gateway(self.site.tenant, self.site.gw, "up")
        infos = [self.client.publish(topic, f, qos=1) for f in frames]
        for info in infos:
            info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def fill_outbox(box: Outbox, site: Site, n: int) -> int:
    """Capture ``n`` soil bodies (two readings each) round-robin over the site's bus devices; returns the readings."""
    for i in range(n):
        dev = site.bus[i % len(site.bus)]
        box.capture_attested(dev, 1, lambda seq, dev=dev: soil_body(dev, seq))
    return 2 * n


def make_uplink(site: Site, box: Outbox, host: str, port: int, **cfg: object) -> Uplink:
    """The gateway agent's own uplink (re-sends until receipted), fast timings for tests."""
    gateway = GatewayIdentity(id=site.gw, tenant=site.tenant, key_hex=site.gw_key.hex())
    values: dict[str, object] = {"batch_max_wait_s": 0.05, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5,
                                 "session_expiry_s": 60, "receipt_timeout_s": 1.0}
    values.update(cfg)
    return Uplink(gateway, site.gw_key, UplinkConfig(broker=BrokerConfig(host=host, port=port), **values), box,
                  sw="edge/test")
