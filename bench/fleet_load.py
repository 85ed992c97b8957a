"""Fleet load: thousands of gateways' devices at field intervals through the real ingest, every message accounted for.

``python -m bench.fleet_load [--devices 10000] [--duration 300] [--burst] [--json]``
(also ``fieldtrust bench load``)

What runs: a private Mosquitto with the project's configuration on a spare port, a bench database on
the shared PostgreSQL server (dropped afterwards), ``--workers`` ``fieldtrust cloud ingest``
processes, and in this process a simulated fleet:

* **devices**: 72 % bus devices read by their gateway every 1, 2, 3, 4 or 5 minutes, 28 % battery
  nodes waking every 15 minutes (25 devices per gateway: 10,000 devices are 400 gateways), each
  with a random phase so the load is spread as in a field — about 58 messages/s at 10,000 devices;
* **gateways**: a sample (``--real-gateways``) runs the real ``edge_agent`` outbox and uplink (SQLite
  outbox, signed batches, re-sent until the cloud's receipt); the rest are a cheaper publisher that
  batches like the agent (up to 200 items, after 1 s) and signs the same frames
  (``bench.ingest.signed_batch``), on MQTT connections shared by several gateways (``--connections``:
  paho cannot watch more than ~320 in one process); nodes' frames are signed by the node's own key;
* **faults**: a few devices (``--faulty``) send what the cloud must refuse — nodes signing with a
  wrong key, bus devices nobody registered — so the "rejected" column is exercised;
* ``--burst``: after the steady phase every gateway goes offline, the fleet produces
  ``--backlog-min`` minutes of readings (timestamps in the past), then every gateway reconnects at
  the same moment and drains its backlog at once.

The account, by (device, sequence number): every message produced is **stored** (its rows are in
``ft.readings``), **rejected** (a dead letter names it and says why) or **not sent** (the publisher
never got it to the broker: no PUBACK, or still in a real gateway's outbox) — anything else is
**unknown**, and so is a stored message nobody produced.  The table is printed; the exit status is 1
if anything is unknown.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import heapq
import json
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as paho
import psutil
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from bench import Figure
from bench import ingest as base
from cloud.store import db, partitions, registry
from cloud.store.migrate import migrate
from contract import topics
from contract.telemetry import ContractError, encode_body, sign, telemetry, unframe
from edge_agent.config import BrokerConfig, GatewayIdentity, UplinkConfig
from edge_agent.outbox import Outbox
from edge_agent.uplink import Uplink
from fieldtrust import processes
from fieldtrust.services.mosquitto import PrivateMosquitto

TENANT, FARM = "fleet", "fleet-farm"
DEVICES_PER_GATEWAY, NODES_PER_GATEWAY = 25, 7
BUS_INTERVALS_S = (60, 120, 180, 240, 300)
NODE_INTERVAL_S = 900
BATCH_ITEMS, BATCH_WAIT_S = 200, 1.0  # edge_agent.config.UplinkConfig's defaults
KEK = base.KEK
Key = tuple[str, int]  # (device, sequence number)


def gateway_key(gw: str) -> bytes:
    return hashlib.sha256(f"fleet gateway {gw}".encode()).digest()


def node_key(dev: str) -> bytes:
    return hashlib.sha256(f"fleet node {dev}".encode()).digest()


@dataclass
class Device:
    id: str
    kind: str  # "bus" or "node"
    gateway: int
    interval_s: float
    fault: str | None = None  # "bad_signature" (a node signing with a wrong key), "unregistered" (a bus device)
    seq: int = 0  # the next sequence number (nodes, and bus devices of the cheap gateways)


@dataclass
class Ledger:
    """What the fleet produced, and what its publishers know they did not deliver."""

    produced: set[Key] = field(default_factory=set)
    not_sent: dict[Key, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, key: Key) -> None:
        with self.lock:
            self.produced.add(key)


# -- gateways -------------------------------------------------------------------------------------


class Link:
    """One MQTT connection of the cheap publisher, shared by several cheap gateways.

    paho's network loop uses ``select()``, which cannot watch file descriptors above 1023, and each paho
    client holds three: one connection per gateway stops at ~320 gateways in one process (the rest never
    connect).  The cheap gateways therefore share ``--connections`` links, each publishing on its gateways'
    own topics; the real gateways keep a connection each, as the agent has.
    """

    def __init__(self, name: str, host: str, port: int) -> None:
        self.unacked: dict[int, list[Key]] = {}  # mid -> the batch's items, until the broker's PUBACK
        self.acked_early: set[int] = set()  # PUBACKs that came before publish() returned their mid
        self.lock = threading.Lock()  # never held while calling paho: its thread takes its own locks, then ours
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=paho.MQTTv5)
        self.client.max_inflight_messages_set(20)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.host, self.port = host, port

    def connect(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=60)
        self.client.loop_start()

    def disconnect(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_publish(self, _c: paho.Client, _u: object, mid: int, reason: object, _p: object) -> None:
        with self.lock:
            if self.unacked.pop(mid, None) is None:
                self.acked_early.add(mid)

    def publish(self, topic: str, frame: bytes, keys: list[Key], ledger: Ledger) -> bool:
        info = self.client.publish(topic, frame, qos=1)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):  # NO_CONN: queued, sent on connect
            for k in keys:
                ledger.not_sent[k] = f"publish refused ({paho.error_string(info.rc)})"
            return False
        with self.lock:
            if info.mid in self.acked_early:
                self.acked_early.discard(info.mid)
            else:
                self.unacked[info.mid] = keys
        return True

    def give_up(self, ledger: Ledger) -> None:
        """At the end: what the broker never acknowledged was not sent, as far as this publisher knows."""
        with self.lock:
            for keys in self.unacked.values():
                for k in keys:
                    ledger.not_sent[k] = "no PUBACK from the broker"
            self.unacked.clear()


class CheapGateway:
    """Batches its devices' bodies like the agent (200 items or 1 s), signs, publishes QoS 1 on a shared link."""

    def __init__(self, gw: str, link: Link, ledger: Ledger) -> None:
        self.gw, self.key, self.link, self.ledger = gw, gateway_key(gw), link, ledger
        self.topic = topics.gateway(TENANT, gw, "up")
        self.pending: list[tuple[Key, bytes, bool]] = []  # (key, body or frame, is a node frame)
        self.pending_since = 0.0
        self.batch_seq = 0
        self.batches = 0

    def add(self, key: Key, data: bytes, node: bool, now: float) -> None:
        if not self.pending:
            self.pending_since = now
        self.pending.append((key, data, node))

    def due(self, now: float) -> bool:
        return bool(self.pending) and (len(self.pending) >= BATCH_ITEMS or now - self.pending_since >= BATCH_WAIT_S)

    def flush(self) -> None:
        """Publish every pending item, in batches of up to 200."""
        while self.pending:
            items, self.pending = self.pending[:BATCH_ITEMS], self.pending[BATCH_ITEMS:]
            tel = [d for _, d, node in items if not node]
            nodes = [d for _, d, node in items if node]
            frame = base.signed_batch(self.batch_seq, tel, nodes, self.gw, self.key, TENANT)
            self.batch_seq += 1
            if self.link.publish(self.topic, frame, [k for k, _, _ in items], self.ledger):
                self.batches += 1

    def give_up(self) -> None:
        for k, _, _ in self.pending:
            self.ledger.not_sent[k] = "never published"


class RealGateway:
    """The agent's own outbox and uplink (edge_agent): captured durably, re-sent until receipted."""

    def __init__(self, gw: str, host: str, port: int, workdir: Path) -> None:
        self.gw, self.key = gw, gateway_key(gw)
        self.identity = GatewayIdentity(id=gw, tenant=TENANT, key_hex=self.key.hex())
        self.cfg = UplinkConfig(broker=BrokerConfig(host=host, port=port))
        self.path = workdir / f"outbox-{gw}.db"
        self.outbox = Outbox(self.path, 1 << 30)
        self.uplink: Uplink | None = None

    def connect(self) -> None:
        self.uplink = Uplink(self.identity, self.key, self.cfg, self.outbox, sw="edge/fleet")
        self.uplink.start()

    def disconnect(self) -> None:
        if self.uplink is not None:
            self.uplink.stop()
            self.uplink = None

    def capture_bus(self, dev: str, bt_ms: int, records: list[dict]) -> int:
        return self.outbox.capture_attested(dev, 1, lambda seq: encode_body(
            telemetry(dev, 1, seq, bt_ms, records, "edge/fleet", 0)))

    def leftovers(self) -> list[Key]:
        """(device, seq) of what is still in the outbox (not receipted): read from its SQLite file."""
        out = []
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            for kind, data in conn.execute("SELECT kind, data FROM item"):
                key = item_key(bytes(data), kind == "node")
                if key is not None:
                    out.append(key)
        return out


def item_key(data: bytes, node: bool) -> Key | None:
    """(device, seq) of a telemetry body, or of a node frame's body."""
    try:
        body = unframe(data)[1] if node else data
        obj = json.loads(body)
        return str(obj["dev"]), int(obj["seq"])
    except (ContractError, ValueError, KeyError, TypeError):
        return None


# -- the fleet ------------------------------------------------------------------------------------


@dataclass
class Fleet:
    devices: list[Device]
    gateway_ids: list[str]
    real: int  # the first ``real`` gateways run the agent's outbox and uplink

    @classmethod
    def build(cls, n_devices: int, real: int, faulty: float, seed: int = 1) -> Fleet:
        rng = random.Random(seed)
        gateways = max(1, -(-n_devices // DEVICES_PER_GATEWAY))
        gateway_ids = [f"gw-{g:05d}" for g in range(gateways)]
        devices = []
        for i in range(n_devices):
            g = i // DEVICES_PER_GATEWAY
            node = i % DEVICES_PER_GATEWAY >= DEVICES_PER_GATEWAY - NODES_PER_GATEWAY
            kind = "node" if node else "bus"
            interval = NODE_INTERVAL_S if node else rng.choice(BUS_INTERVALS_S)
            devices.append(Device(f"{kind}-{i:06d}", kind, g, interval))
        n_faulty = round(n_devices * faulty)
        for d in rng.sample([d for d in devices if d.gateway >= real], min(n_faulty, n_devices)):
            d.fault = "bad_signature" if d.kind == "node" else "unregistered"
        return cls(devices, gateway_ids, min(real, gateways))

    def register(self, url: str) -> None:
        with db.connect(url) as conn:
            registry.register_tenant(conn, TENANT, "Fleet load")
            registry.register_farm(conn, TENANT, FARM, "Fleet farm")
            for gw in self.gateway_ids:
                registry.register_gateway(conn, TENANT, gw, FARM, gateway_key(gw), KEK, None, None)
            for d in self.devices:
                if d.fault == "unregistered":
                    continue
                registry.register_device(conn, TENANT, d.id, d.kind, None, self.gateway_ids[d.gateway], base.SPEC,
                                         node_key(d.id) if d.kind == "node" else None, KEK)
            conn.commit()


class Simulation:
    """Produces every device's readings at its due times and hands them to its gateway."""

    def __init__(self, fleet: Fleet, host: str, port: int, workdir: Path, connections: int) -> None:
        self.fleet, self.ledger = fleet, Ledger()
        self.real = [RealGateway(gw, host, port, workdir) for gw in fleet.gateway_ids[: fleet.real]]
        cheap = fleet.gateway_ids[fleet.real:]
        self.links = [Link(f"fleet-link-{i}", host, port) for i in range(max(1, min(connections, len(cheap))))]
        self.cheap = [CheapGateway(gw, self.links[i % len(self.links)], self.ledger) for i, gw in enumerate(cheap)]
        self.rng = random.Random(2)

    def gateway(self, d: Device) -> RealGateway | CheapGateway:
        return self.real[d.gateway] if d.gateway < len(self.real) else self.cheap[d.gateway - len(self.real)]

    def connect_all(self) -> None:
        for g in [*self.real, *self.links]:
            g.connect()

    def disconnect_all(self) -> None:
        for g in [*self.real, *self.links]:
            g.disconnect()

    def produce(self, d: Device, bt_ms: int, now: float) -> None:
        records = base._records(d.seq + bt_ms // 1000)
        gw = self.gateway(d)
        if d.kind == "bus" and isinstance(gw, RealGateway):
            self.ledger.add((d.id, gw.capture_bus(d.id, bt_ms, records)))
            return
        seq, d.seq = d.seq, d.seq + 1
        if d.kind == "bus":
            body = encode_body(telemetry(d.id, 1, seq, bt_ms, records, "edge/fleet", 0))
            data, node = body, False
        else:
            body = encode_body(telemetry(d.id, 1, seq, bt_ms, records, "fw/fleet", 5))
            key = node_key(d.id) if d.fault != "bad_signature" else node_key("someone else")
            data, node = sign(key, body), True
        self.ledger.add((d.id, seq))
        if isinstance(gw, RealGateway):
            gw.outbox.capture_frame(data, "node")
        else:
            gw.add((d.id, seq), data, node, now)

    def steady(self, seconds: float) -> int:
        """Every device at its interval, random phases, for ``seconds``; cheap gateways batch as the agent does."""
        start = time.monotonic()
        heap = [(start + self.rng.uniform(0, d.interval_s), i) for i, d in enumerate(self.fleet.devices)]
        heapq.heapify(heap)
        waiting: set[int] = set()
        produced = 0
        while True:
            now = time.monotonic()
            if now - start >= seconds:
                break
            while heap and heap[0][0] <= now:
                _, i = heapq.heappop(heap)
                d = self.fleet.devices[i]
                self.produce(d, int(time.time() * 1000), now)
                produced += 1
                heapq.heappush(heap, (now + d.interval_s, i))
                if d.gateway >= len(self.real):
                    waiting.add(d.gateway - len(self.real))
            for g in [g for g in waiting if self.cheap[g].due(now)]:
                self.cheap[g].flush()
                waiting.discard(g)
            time.sleep(0.02)
        for g in waiting:
            self.cheap[g].flush()
        return produced

    def backlog(self, minutes: float) -> int:
        """``minutes`` of every device's readings, timestamps in the past, held by the (offline) gateways."""
        end_ms = int(time.time() * 1000)
        start_ms = end_ms - int(minutes * 60_000)
        produced = 0
        for d in self.fleet.devices:
            t = start_ms + self.rng.uniform(0, d.interval_s * 1000)
            while t < end_ms:
                self.produce(d, int(t), time.monotonic())
                produced += 1
                t += d.interval_s * 1000
        return produced

    def drain_cheap(self) -> None:
        for g in self.cheap:
            g.flush()

    def wait_published(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(not link.unacked for link in self.links):
                return
            time.sleep(0.2)

    def wait_outboxes(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(g.outbox.stats().depth for g in self.real):
            time.sleep(0.5)

    def close(self) -> None:
        for g in self.cheap:
            g.give_up()
        for link in self.links:
            link.give_up(self.ledger)
        for g in self.real:
            for key in g.leftovers():
                self.ledger.not_sent.setdefault(key, "still in the gateway's outbox (not receipted)")
        self.disconnect_all()
        for g in self.real:
            g.outbox.close()


# -- the account ----------------------------------------------------------------------------------


@dataclass
class Account:
    produced: int
    stored: int
    rejected: dict[str, int]
    not_sent: dict[str, int]
    unknown: int
    stored_not_produced: int
    rows: int  # reading rows of the stored messages
    duplicates: int
    unknown_sample: list[str]

    @property
    def ok(self) -> bool:
        return self.unknown == 0 and self.stored_not_produced == 0

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()} | {"ok": self.ok}


def dead_letter_keys(reason: str, device: str | None, payload: bytes) -> list[Key]:
    """The (device, seq) a dead letter stands for: one item's body or frame, a refused record, or a whole batch."""
    for node in (False, True):
        key = item_key(payload, node)
        if key is not None:
            return [key]
    try:
        obj = json.loads(payload)
        if "record" in obj:  # one refused record of a message (cloud.ingest.handler._row_letter)
            return [(str(obj["dev"]), int(obj["seq"]))]
    except (ValueError, KeyError, TypeError):
        pass
    try:  # a whole batch refused: every item in it
        batch = json.loads(unframe(payload, len(payload))[1])
        keys = [(str(t["dev"]), int(t["seq"])) for t in batch.get("tel", [])]
        keys += [k for f in batch.get("nodes", []) if (k := item_key(f.encode(), True)) is not None]
        return keys
    except (ContractError, ValueError, KeyError, TypeError, AttributeError):
        return []


def account(conn: psycopg.Connection, ledger: Ledger, worker_ids: list[str]) -> Account:
    stored: dict[Key, int] = {(d, int(s)): int(n) for d, s, n in conn.execute(
        "SELECT device_id, seq, count(*) FROM ft.readings WHERE tenant_id = %s GROUP BY device_id, seq",
        (TENANT,)).fetchall()}
    rejected: dict[Key, str] = {}
    for reason, device, payload in conn.execute("SELECT reason, device_id, payload FROM ft.dead_letters"):
        for key in dead_letter_keys(reason, device, bytes(payload)):
            rejected.setdefault(key, reason)
    row = conn.execute("SELECT coalesce(sum((counters->>'duplicates')::bigint), 0) FROM ft.ingest_workers "
                       "WHERE worker_id = ANY(%s)", (worker_ids,)).fetchone()
    rejected_by: Counter[str] = Counter()
    not_sent_by: Counter[str] = Counter()
    stored_n = 0
    unknown = []
    for key in ledger.produced:
        if key in stored:
            stored_n += 1
        elif key in rejected:
            rejected_by[rejected[key]] += 1
        elif key in ledger.not_sent:
            not_sent_by[ledger.not_sent[key]] += 1
        else:
            unknown.append(key)
    extra = [k for k in stored if k not in ledger.produced]
    return Account(produced=len(ledger.produced), stored=stored_n, rejected=dict(rejected_by),
                   not_sent=dict(not_sent_by), unknown=len(unknown), stored_not_produced=len(extra),
                   rows=sum(n for k, n in stored.items() if k in ledger.produced), duplicates=int(row[0]) if row else 0,
                   unknown_sample=[f"{d}#{s}" for d, s in sorted(unknown)[:10]])


def wait_settled(conn: psycopg.Connection, expected: int, timeout: float) -> float:
    """Wait until the stored and dead-lettered messages reach ``expected`` or stop changing; seconds waited."""
    t0 = time.monotonic()
    last, last_change = -1, t0
    while time.monotonic() - t0 < timeout:
        row = conn.execute("SELECT (SELECT count(*) FROM ft.messages WHERE tenant_id = %s) + "
                           "(SELECT count(*) FROM ft.dead_letters)", (TENANT,)).fetchone()
        n = int(row[0]) if row else 0
        if n >= expected:
            break
        if n != last:
            last, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > 20:
            break
        time.sleep(0.5)
    return time.monotonic() - t0


def storage_latency_p95(conn: psycopg.Connection, since: datetime, until: datetime) -> float | None:
    """p95 seconds from a message's sample time to its commit, for messages sampled in [since, until)."""
    row = conn.execute(
        "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM m.received_at - r.ts)) "
        "FROM ft.messages m JOIN (SELECT device_id, epoch, seq, min(ts) AS ts FROM ft.readings WHERE tenant_id = %s "
        "AND ts >= %s AND ts < %s GROUP BY 1, 2, 3) r USING (device_id, epoch, seq)", (TENANT, since, until)).fetchone()
    return float(row[0]) if row and row[0] is not None else None


# -- the run --------------------------------------------------------------------------------------


@contextlib.contextmanager
def workers_running(url: str, broker: PrivateMosquitto, n: int, workdir: Path) -> Iterator[list[str]]:
    group = f"fleet-{uuid.uuid4().hex[:6]}"
    ids = [f"fleet-{group}-{i}" for i in range(n)]
    logs = [workdir / f"{i}.log" for i in ids]
    procs = [base.spawn_worker(url, f"mqtt://{broker.host}:{broker.port}", wid, group, log)
             for wid, log in zip(ids, logs, strict=True)]
    try:
        deadline = time.monotonic() + 120
        while not all(log.exists() and "subscribed to" in log.read_text(errors="replace") for log in logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("a worker did not start: " + " | ".join(log.read_text()[-500:] for log in logs))
            time.sleep(0.1)
        yield ids
    finally:
        for p in procs:
            processes.stop(p, timeout=30)  # SIGTERM: the worker commits what it prepared and saves its counters


def say(text: str) -> None:
    print(f"... {datetime.now(UTC):%H:%M:%S} {text}", file=sys.stderr, flush=True)


def cpu_of(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def measure(args: argparse.Namespace) -> dict:
    fleet = Fleet.build(args.devices, args.real_gateways, args.faulty)
    result: dict = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "nproc": os.cpu_count(),
                    "load_average_start": [round(x, 2) for x in os.getloadavg()], "devices": args.devices,
                    "gateways": len(fleet.gateway_ids), "real_gateways": fleet.real,
                    "bus_devices": sum(d.kind == "bus" for d in fleet.devices),
                    "nodes": sum(d.kind == "node" for d in fleet.devices),
                    "faulty_devices": sum(d.fault is not None for d in fleet.devices),
                    "duration_s": args.duration, "workers": args.workers, "burst": args.burst,
                    "connections": args.connections}
    with base.private_database(args.server) as url, tempfile.TemporaryDirectory(prefix="ft-bench-fleet-") as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        migrate(url)
        fleet.register(url)
        say(f"registered {len(fleet.gateway_ids)} gateways and their devices in {time.monotonic() - t0:.0f} s")
        result["setup_s"] = round(time.monotonic() - t0, 1)
        with db.connect(url, autocommit=True) as conn, \
                PrivateMosquitto(work / "broker", overrides=base.BROKER) as broker, \
                workers_running(url, broker, args.workers, work) as worker_ids:
            partitions.ensure_ahead(conn, 1)
            sim = Simulation(fleet, broker.host, broker.port, work, args.connections)
            me = psutil.Process()
            workers = [c for c in me.children(recursive=True) if "ingest" in " ".join(c.cmdline())]
            mosquitto = [c for c in me.children(recursive=True) if str(broker.conf) in " ".join(c.cmdline())]
            try:
                sim.connect_all()
                time.sleep(2)  # connections up
                cpu0 = (cpu_of(workers), cpu_of(mosquitto), cpu_of([me]))
                start_wall, t_steady = datetime.now(UTC), time.monotonic()
                say(f"steady load for {args.duration:g} s")
                steady = sim.steady(args.duration)
                steady_s = time.monotonic() - t_steady
                cpu1 = (cpu_of(workers), cpu_of(mosquitto), cpu_of([me]))
                end_wall = datetime.now(UTC)
                batches = sum(g.batches for g in sim.cheap)
                result["steady"] = {
                    "messages_produced": steady, "seconds": round(steady_s, 1),
                    "messages_per_s": round(steady / steady_s, 1), "readings_per_s": round(steady * 5 / steady_s, 1),
                    "cheap_batches_per_s": round(batches / steady_s, 1),
                    "cpu_share": {"workers": round((cpu1[0] - cpu0[0]) / steady_s, 3),
                                  "broker": round((cpu1[1] - cpu0[1]) / steady_s, 3),
                                  "fleet_simulator": round((cpu1[2] - cpu0[2]) / steady_s, 3)}}
                sim.wait_published(60)
                sim.wait_outboxes(60)
                wait_settled(conn, len(sim.ledger.produced), 120)
                latency = storage_latency_p95(conn, start_wall, end_wall)
                result["steady"]["latency_p95_s"] = round(latency, 2) if latency is not None else None
                say(f"steady phase settled: {len(sim.ledger.produced):,} messages produced")
                if args.burst:
                    sim.disconnect_all()
                    say(f"every gateway offline; producing a {args.backlog_min:g}-minute backlog")
                    backlog = sim.backlog(args.backlog_min)
                    t_burst = time.monotonic()
                    say(f"{backlog:,} messages held; every gateway reconnects")
                    sim.connect_all()
                    sim.drain_cheap()
                    sim.wait_published(600)
                    sim.wait_outboxes(600)
                    waited = wait_settled(conn, len(sim.ledger.produced), 600)
                    burst_s = time.monotonic() - t_burst
                    result["burst"] = {"backlog_min": args.backlog_min, "messages": backlog,
                                       "drain_s": round(burst_s, 1), "messages_per_s": round(backlog / burst_s),
                                       "readings_per_s": round(backlog * 5 / burst_s),
                                       "settle_wait_s": round(waited, 1)}
            finally:
                sim.close()
        # the workers have stopped and saved their counters
        with db.connect(url, autocommit=True) as conn:
            acct = account(conn, sim.ledger, worker_ids)
    result["account"] = acct.as_dict()
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def figures(result: dict) -> list[Figure]:
    acct, steady = result["account"], result["steady"]
    out = [
        Figure("fleet_messages_stored", acct["stored"], "messages", "messages produced", acct["produced"],
               note=f"{result['devices']:,} devices, {result['duration_s']:g} s"),
        Figure("fleet_messages_unknown", acct["unknown"] + acct["stored_not_produced"], "messages", target=0,
               higher_is_better=False),
        Figure("fleet_steady_messages_per_s", steady["messages_per_s"], "messages/s",
               note=f"{steady['cheap_batches_per_s']} gateway batches/s"),
        Figure("fleet_worker_cpu", round(100 * steady["cpu_share"]["workers"], 1), "% of a core",
               higher_is_better=False),
    ]
    if steady.get("latency_p95_s") is not None:
        out.append(Figure("fleet_sample_to_stored_p95", round(steady["latency_p95_s"], 2), "s",
                          higher_is_better=False))
    if "burst" in result:
        b = result["burst"]
        out.append(Figure("fleet_burst_drain", b["readings_per_s"], "readings/s",
                          note=f"{b['messages']:,} messages ({b['backlog_min']:g} min backlog) in {b['drain_s']} s"))
    return out


def table(result: dict) -> str:
    acct, steady = result["account"], result["steady"]
    lines = [f"fleet load {result['date']}, nproc {result['nproc']}, load {result['load_average_start']} -> "
             f"{result['load_average_end']}",
             f"  {result['devices']:,} devices ({result['bus_devices']:,} bus, {result['nodes']:,} nodes, "
             f"{result['faulty_devices']} faulty) behind {result['gateways']} gateways ({result['real_gateways']} "
             f"running the agent's outbox and uplink), {result['workers']} ingest worker(s); "
             f"setup {result['setup_s']} s",
             f"  steady {steady['seconds']} s: {steady['messages_produced']:,} messages, {steady['messages_per_s']}/s "
             f"({steady['readings_per_s']} readings/s, {steady['cheap_batches_per_s']} gateway batches/s); "
             f"sample-to-stored p95 {steady.get('latency_p95_s')} s",
             f"  CPU (cores): workers {steady['cpu_share']['workers']}, broker {steady['cpu_share']['broker']}, "
             f"fleet simulator {steady['cpu_share']['fleet_simulator']}"]
    if "burst" in result:
        b = result["burst"]
        lines.append(f"  burst: {b['messages']:,} messages ({b['backlog_min']:g} min backlog of every device) drained "
                     f"in {b['drain_s']} s: {b['messages_per_s']:,} messages/s, {b['readings_per_s']:,} readings/s")
    lines += ["", f"  {'account (by device and sequence number)':44} {'messages':>10}",
              f"  {'produced':44} {acct['produced']:>10,}", f"  {'stored':44} {acct['stored']:>10,}"]
    lines += [f"  {'rejected: ' + reason:44} {n:>10,}" for reason, n in sorted(acct["rejected"].items())]
    lines += [f"  {'not sent: ' + reason:44} {n:>10,}" for reason, n in sorted(acct["not_sent"].items())]
    lines += [f"  {'UNKNOWN':44} {acct['unknown']:>10,}",
              f"  {'stored but never produced':44} {acct['stored_not_produced']:>10,}",
              f"  reading rows of the stored messages {acct['rows']:,}; duplicates counted by the workers "
              f"{acct['duplicates']:,}"]
    if acct["unknown_sample"]:
        lines.append(f"  unknown, first ones: {', '.join(acct['unknown_sample'])}")
    lines.append("  every message accounted for" if acct["ok"] else "  SOME MESSAGES ARE UNACCOUNTED FOR")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.fleet_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000, help="bus devices and nodes in all (default 10,000)")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of steady load (default 300)")
    parser.add_argument("--burst", action="store_true", help="then every gateway drains a backlog at once")
    parser.add_argument("--backlog-min", type=float, default=30.0, help="minutes of backlog in burst mode")
    parser.add_argument("--real-gateways", type=int, default=10, help="gateways running the agent's outbox/uplink")
    parser.add_argument("--faulty", type=float, default=0.001, help="fraction of devices sending refused messages")
    parser.add_argument("--workers", type=int, default=1, help="ingest worker processes")
    parser.add_argument("--connections", type=int, default=100, help="MQTT connections the cheap gateways share")
    parser.add_argument("--server", default=base.DEFAULT_SERVER, help="PostgreSQL server for the bench database")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.devices < 10 or args.duration <= 0 or args.workers < 1 or not 0 <= args.faulty < 1:
        parser.error("--devices >= 10, --duration > 0, --workers >= 1, 0 <= --faulty < 1")
    return args


def run(quick: bool) -> list[Figure]:
    sizes = ["--devices", "500", "--duration", "20", "--real-gateways", "2", "--faulty", "0.01", "--burst",
             "--backlog-min", "10"] if quick else ["--burst"]
    result = measure(parse_args(sizes))
    if not result["account"]["ok"]:
        raise RuntimeError("fleet load: messages unaccounted for\n" + table(result))
    return figures(result)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure(args)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0 if result["account"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
