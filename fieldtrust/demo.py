"""The main job on one machine: field devices -> gateway agent -> broker -> cloud, and an account.

What runs (all on loopback, all ended when the demo ends):

* a Modbus RTU bus on a virtual serial port with a 7-in-1 soil probe, a weather station and a
  rain gauge (9600 baud, paced like a real line), and a Modbus TCP pump-house with an energy
  meter and a water-level transmitter (``hardware`` simulators, driven by the device specs);
* a broker: the local Mosquitto when one listens on 127.0.0.1:1883, else a private one
  (``fieldtrust.services.broker``: Mosquitto when installed, else the pure-Python amqtt);
* sensor nodes that sign each message with their own key (``contract.telemetry``, the module
  the MicroPython firmware runs) and publish it to the gateway's broker;
* the gateway agent (``edge_agent``) with its outbox, uplink and health;
* the cloud side: until ``cloud.ingest`` lands, ``hardware.cloud_peer`` verifies signatures,
  stores each reading once and sends the signed commit receipts.

At the end every reading produced is accounted for: stored once, or the demo fails.
"""

from __future__ import annotations

import secrets
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from contract import models, topics
from contract.telemetry import encode_body, record, sign, telemetry
from device_specs.registry import get_spec
from edge_agent.agent import Agent
from edge_agent.config import parse_config
from fieldtrust.services.broker import LocalBroker, start_local_broker
from hardware.cloud_peer import CloudPeer
from hardware.rtu_bus import RtuBusSimulator
from hardware.signals import SignalModel
from hardware.sim_device import SimulatedDevice
from hardware.tcp_server import TcpSimulator

RTU_DEVICES = [("soil-north", "jxct-soil-7in1", 1), ("weather-mast", "renke-weather-fsxcs-n01", 2),
               ("rain-gauge", "dfrobot-sen0575-rain", 3)]
TCP_DEVICES = [("pump-meter", "eastron-sdm120-modbus", 1), ("well-level", "keller-series30-level", 2)]
NODES = ["node-field-1", "node-field-2", "node-field-3"]
LOCAL_BROKER = ("127.0.0.1", 1883)
#: auto: the local broker when one listens, else a private one; local: only the local one;
#: mosquitto, amqtt: a private broker of that kind, whether or not a local one listens
DemoBroker = Literal["auto", "local", "mosquitto", "amqtt"]


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class VirtualNode:
    """A sensor node's message path in CPython: sample, sign with its own key, publish QoS 1."""

    def __init__(self, node_id: str, key: bytes, host: str, port: int, signals: SignalModel) -> None:
        self.node_id, self.key, self.signals = node_id, key, signals
        self.seq = 0
        self.sent = 0
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"demo-{node_id}-{uuid.uuid4().hex[:6]}")
        self._client.connect(host, port)
        self._client.loop_start()

    def publish(self) -> None:
        now = time.time()
        recs = [
            record("soil_moisture", "%", round(self.signals.soil_moisture(now), 1)),
            record("soil_temperature", "Cel", round(self.signals.soil_temperature(now), 2)),
            record("battery_voltage", "V", 3.9),
        ]
        body = encode_body(telemetry(self.node_id, 1, self.seq, int(now * 1000), recs, "fw/0.1.0", sync_age_s=120))
        info = self._client.publish(topics.node(self.node_id, "up"), sign(self.key, body), qos=1)
        info.wait_for_publish(5)
        self.seq += 1
        self.sent += 1

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@dataclass
class DemoResult:
    produced_gateway: int
    produced_nodes: int
    stored_gateway: int
    stored_nodes: int
    duplicates: int
    conflicts: int

    @property
    def ok(self) -> bool:
        return self.produced_gateway == self.stored_gateway and self.produced_nodes == self.stored_nodes


def _open_broker(choice: DemoBroker, workdir: Path, console: Console) -> tuple[str, int, str, LocalBroker | None]:
    """(host, port, MQTT version, the private broker we started or None) for the ``choice``."""
    host, port = LOCAL_BROKER
    if choice in ("auto", "local") and _listening(host, port):
        console.print(f"broker: the local Mosquitto at {host}:{port}")
        return host, port, "5", None
    if choice == "local":
        raise RuntimeError(f"no broker listens on {host}:{port} (--broker local)")
    broker = start_local_broker(workdir, "auto" if choice == "auto" else choice)
    name = "amqtt (MQTT 3.1.1)" if broker.protocol == "3.1.1" else "Mosquitto"
    console.print(f"broker: a private {name} at {broker.host}:{broker.port}")
    return broker.host, broker.port, broker.protocol, broker


def _gateway_config(workdir: Path, broker: dict, rtu_port: str, tcp_port: int, key_hex: str,
                    tenant: str, gw: str, poll_s: float) -> dict:
    return {
        "gateway": {"id": gw, "tenant": tenant, "key_hex": key_hex, "data_dir": str(workdir)},
        "buses": [
            {"id": "field-rs485", "kind": "rtu", "port": rtu_port, "baud": 9600, "parity": "N",
             "devices": [{"id": d, "spec": s, "unit": u, "poll_interval_s": poll_s} for d, s, u in RTU_DEVICES]},
            {"id": "pump-house", "kind": "tcp", "host": "127.0.0.1", "tcp_port": tcp_port,
             "devices": [{"id": d, "spec": s, "unit": u, "poll_interval_s": poll_s} for d, s, u in TCP_DEVICES]},
        ],
        "intake": {"broker": broker, "session_expiry_s": 60},
        "uplink": {"broker": broker, "batch_max_wait_s": 0.5, "receipt_timeout_s": 10,
                   "session_expiry_s": 60},
        "health": {"interval_s": 2},
        "logging": {"file": str(workdir / "agent.log")},
    }


def _table(peer: CloudPeer, agent: Agent) -> Group:
    t = Table(title="Readings stored in the cloud (verified, each once)", expand=False)
    for col in ("device", "via", "trust", "messages", "latest values"):
        t.add_column(col)
    devices = [(d, "RS485 RTU", "gateway") for d, _, _ in RTU_DEVICES]
    devices += [(d, "Modbus TCP", "gateway") for d, _, _ in TCP_DEVICES]
    devices += [(n, "node MQTT", "node-signed") for n in NODES]
    with peer._cond:
        bodies = dict(peer.stored.bodies)
    for dev, via, trust in devices:
        keys = sorted(k for k in bodies if k[0] == dev)
        latest = ""
        if keys:
            tel = models.parse(bodies[keys[-1]], expect="tel")
            assert isinstance(tel, models.Telemetry)
            latest = "  ".join(
                f"{r.n}={r.value:.4g}{r.u}" if isinstance(r.value, float | int) and not isinstance(r.value, bool)
                else f"{r.n}={r.value}" for r in tel.r[:2]
            )
        t.add_row(dev, via, trust, str(len(keys)), latest)
    stats = agent.outbox.stats()
    foot = Table.grid(padding=(0, 2))
    foot.add_row(
        f"batches received {peer.counts['batches']}", f"receipts {len(peer.receipted)}",
        f"duplicates {peer.counts['duplicates']}", f"outbox depth {stats.depth}",
        f"heartbeats {len(peer.health)}",
    )
    return Group(t, foot)


def run_demo(seconds: float = 20.0, console: Console | None = None, broker: DemoBroker = "auto") -> DemoResult:
    """Run the edge path for ``seconds`` and account for every reading.  Raises on set-up errors.

    ``broker`` says which broker carries it (see :data:`DemoBroker`).
    """
    console = console or Console()
    tenant, gw = "demo-coop", f"gw-demo-{uuid.uuid4().hex[:6]}"
    gw_key = secrets.token_bytes(32)
    node_keys = {n: secrets.token_bytes(32) for n in NODES}
    with tempfile.TemporaryDirectory(prefix="fieldtrust-demo-") as tmp:
        workdir = Path(tmp)
        signals = SignalModel(seed=7)
        rtu = RtuBusSimulator([SimulatedDevice(get_spec(s), u, seed=7, signals=signals) for _, s, u in RTU_DEVICES],
                              baud=9600, parity="N", stop_bits=1)
        tcp = TcpSimulator([SimulatedDevice(get_spec(s), u, seed=7, signals=signals) for _, s, u in TCP_DEVICES],
                           host="127.0.0.1", port=0)
        nodes: list[VirtualNode] = []
        agent: Agent | None = None
        host, port, protocol, private = _open_broker(broker, workdir / "broker", console)
        try:
            rtu.start()
            tcp.start()
            console.print(f"field: RS485 bus on {rtu.port} (9600 8N1, units 1-3); Modbus TCP on 127.0.0.1:{tcp.port}")
            broker_cfg = {"host": host, "port": port, "protocol": protocol}
            cfg = parse_config(yaml.safe_dump(_gateway_config(
                workdir, broker_cfg, rtu.port, tcp.port, gw_key.hex(), tenant, gw, poll_s=2.0)), "demo gateway.yaml")
            with CloudPeer(host, port, tenant, gw, gw_key, node_keys, protocol=protocol) as peer:
                agent = Agent(cfg, clock_synced=lambda: True)
                agent.start()
                nodes = [VirtualNode(n, node_keys[n], host, port, signals) for n in NODES]
                console.print(f"gateway {gw}: polling 5 devices every 2 s, taking frames from {len(nodes)} nodes")
                deadline = time.monotonic() + seconds
                with Live(_table(peer, agent), console=console, refresh_per_second=2) as live:
                    next_node = time.monotonic()
                    while time.monotonic() < deadline:
                        if time.monotonic() >= next_node:
                            for node in nodes:
                                node.publish()
                            next_node += 2.0
                        time.sleep(0.25)
                        live.update(_table(peer, agent))
                    # wind down: producers first, then let the outbox drain to the cloud
                    for scheduler in agent.schedulers:
                        scheduler.stop()
                    sent_nodes = sum(n.sent for n in nodes)
                    peer.wait_for(lambda p: len(p.stored.node_signed) >= sent_nodes, 15)
                    drain_deadline = time.monotonic() + 30
                    while time.monotonic() < drain_deadline:
                        s = agent.outbox.stats()
                        if s.depth == 0 and agent.outbox.in_flight == 0:
                            break
                        time.sleep(0.2)
                    live.update(_table(peer, agent))
                console.print()
                produced_gateway = agent.counters["samples_captured"]
                with peer._cond:
                    stored_nodes = len(peer.stored.node_signed)
                    stored_gateway = len(peer.stored.bodies) - stored_nodes
                result = DemoResult(produced_gateway, sent_nodes, stored_gateway, stored_nodes,
                                    peer.counts["duplicates"], peer.counts["conflicts"])
        finally:
            for node in nodes:
                node.close()
            if agent is not None:
                agent.stop()
            tcp.stop()
            rtu.stop()
            if private is not None:
                private.stop()
    summary = Table(title="Account of every reading")
    for col in ("source", "produced", "stored once in the cloud"):
        summary.add_column(col)
    summary.add_row("gateway-attested (Modbus)", str(result.produced_gateway), str(result.stored_gateway))
    summary.add_row("node-signed (MQTT nodes)", str(result.produced_nodes), str(result.stored_nodes))
    console.print(summary)
    console.print(f"duplicates recognised and stored once: {result.duplicates}; conflicts: {result.conflicts}")
    console.print("[green]nothing lost[/green]" if result.ok else "[red]readings unaccounted for[/red]")
    return result
