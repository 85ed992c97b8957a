"""One virtual farm: Modbus sensors, sensor nodes, the farm's own broker and its gateway agent.

* an RS485 bus on a virtual serial port (a pty, 9600 8N1, paced like a real line) with a 7-in-1
  soil probe, a weather station and a rain gauge, and a Modbus TCP pump house with an energy
  meter and a well-level transmitter (``hardware`` simulators, driven by the device specs, all
  seeing one farm's weather);
* the gateway's local broker (private, on a free port) and sensor nodes that sign each message
  with their own key through ``contract.telemetry`` (the module the MicroPython firmware runs)
  and publish it there, as the firmware does;
* the gateway agent (``edge_agent``): bus schedulers, node intake, outbox, signed batches to the
  cloud broker, deleting from its outbox only on the cloud's signed receipts.

Everything the farm writes lives in its folder (outbox, broker sessions, node sequence numbers),
so a second run carries on where the first stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from contract import topics
from contract.telemetry import encode_body, record, sign, telemetry
from device_specs.registry import get_spec
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, parse_config
from edge_agent.sample import Sample
from fieldtrust.demo.plan import FarmPlan
from fieldtrust.demo.registration import FarmIdentity
from fieldtrust.services.broker import BrokerKind, LocalBroker, start_local_broker
from hardware.rtu_bus import RtuBusSimulator
from hardware.signals import SignalModel
from hardware.sim_device import SimulatedDevice
from hardware.tcp_server import TcpSimulator

POLL_INTERVAL_S = 1.0
#: a node wakes, samples, signs and publishes this often (real nodes: minutes; the demo is in a hurry)
NODE_INTERVAL_S = 2.0
NODE_READINGS = 3  # records per node message

log = logging.getLogger(__name__)


class CountingAgent(Agent):
    """The gateway agent, also counting the readings (records) of the samples it captured.

    The account compares this with the rows in the database; the agent itself counts samples.
    """

    def __init__(self, cfg: AgentConfig) -> None:
        self._count_lock = threading.Lock()  # the bus threads capture concurrently
        self.readings_captured = 0
        super().__init__(cfg, clock_synced=lambda: True)

    def _on_sample(self, sample: Sample) -> None:
        with self._count_lock:
            before = self.counters["samples_captured"]
            super()._on_sample(sample)
            if self.counters["samples_captured"] > before:
                self.readings_captured += len(sample.records)


class SequenceStore:
    """Node sequence numbers that survive restarts, reserved in blocks and written before use.

    A node that reused a sequence number after a restart would send the same message identity
    with other bytes — a conflict, rightly refused.  Firmware keeps its counter in flash the same
    way: write the end of a block, then count within it; after a restart start at the block's end.
    """

    BLOCK = 1000

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reserved: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
        self._next = dict(self._reserved)

    def take(self, node: str) -> int:
        seq = self._next.get(node, 0)
        if seq >= self._reserved.get(node, 0):
            self._reserved[node] = seq + self.BLOCK
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._reserved))
            os.replace(tmp, self.path)
        self._next[node] = seq + 1
        return seq


class VirtualNode:
    """A sensor node's message path in CPython: sample, sign with its own key, publish QoS 1 (MQTT 3.1.1)."""

    def __init__(self, node_id: str, epoch: int, key: bytes, broker: LocalBroker, signals: SignalModel,
                 seqs: SequenceStore) -> None:
        self.node_id, self.epoch, self.key, self.signals, self.seqs = node_id, epoch, key, signals, seqs
        self.sent = 0
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"demo-{node_id}-{uuid.uuid4().hex[:6]}",
                                   protocol=paho.MQTTv311)
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()

    def publish(self) -> None:
        now = time.time()
        recs = [
            record("soil_moisture", "%", round(self.signals.soil_moisture(now), 1)),
            record("soil_temperature", "Cel", round(self.signals.soil_temperature(now), 2)),
            record("battery_voltage", "V", 3.9),
        ]
        body = encode_body(telemetry(self.node_id, self.epoch, self.seqs.take(self.node_id), int(now * 1000), recs,
                                     "fw/0.1.0", sync_age_s=120))
        info = self._client.publish(topics.node(self.node_id, "up"), sign(self.key, body), qos=1)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):  # NO_CONN: queued until it reconnects
            log.warning("node %s: message %s not queued: %s", self.node_id, info.mid, paho.error_string(info.rc))
            return
        self.sent += 1  # handed to the client at QoS 1: it goes, now or after a reconnect
        with contextlib.suppress(RuntimeError, ValueError):  # the wait only paces the node; a slow ack is no loss
            info.wait_for_publish(2)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def _gateway_config(plan: FarmPlan, identity: FarmIdentity, tenant: str, workdir: Path, uplink: dict, intake: dict,
                    rtu_port: str, tcp_port: int) -> dict:
    def devices(entries: list[tuple[str, str, int]]) -> list[dict]:
        return [{"id": d, "spec": s, "unit": u, "poll_interval_s": POLL_INTERVAL_S} for d, s, u in entries]

    return {
        "gateway": {"id": plan.gateway_id, "tenant": tenant, "key_hex": identity.gateway_key.hex(),
                    "key_epoch": identity.gateway_epoch, "data_dir": str(workdir / "gateway")},
        "buses": [
            {"id": "field-rs485", "kind": "rtu", "port": rtu_port, "baud": 9600, "parity": "N",
             "devices": devices(plan.rtu_devices)},
            {"id": "pump-house", "kind": "tcp", "host": "127.0.0.1", "tcp_port": tcp_port,
             "devices": devices(plan.tcp_devices)},
        ],
        "intake": {"broker": intake, "session_expiry_s": 3600},
        "uplink": {"broker": uplink, "batch_max_wait_s": 0.5, "receipt_timeout_s": 10, "session_expiry_s": 3600},
        "health": {"interval_s": 5},
    }


class VirtualFarm:
    """Start with :meth:`start`; :meth:`stop_producers`, :meth:`wait_drained`, then :meth:`stop`."""

    def __init__(self, plan: FarmPlan, identity: FarmIdentity, workdir: Path, tenant: str, uplink: dict,
                 broker_kind: BrokerKind) -> None:
        self.plan, self.identity, self.workdir = plan, identity, workdir
        self._tenant, self._uplink, self._broker_kind = tenant, uplink, broker_kind
        self.signals = SignalModel(seed=plan.index)
        self.broker: LocalBroker | None = None
        self.rtu: RtuBusSimulator | None = None
        self.tcp: TcpSimulator | None = None
        self.agent: CountingAgent | None = None
        self.nodes: list[VirtualNode] = []
        self._producing = False
        self._stopped = False

    def _simulated(self, entries: list[tuple[str, str, int]]) -> list[SimulatedDevice]:
        return [SimulatedDevice(get_spec(spec), unit, seed=self.plan.index, signals=self.signals)
                for _, spec, unit in entries]

    def start(self) -> VirtualFarm:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker = start_local_broker(self.workdir / "broker", self._broker_kind)
        self.rtu = RtuBusSimulator(self._simulated(self.plan.rtu_devices), baud=9600, parity="N").start()
        self.tcp = TcpSimulator(self._simulated(self.plan.tcp_devices), host="127.0.0.1", port=0).start()
        intake = {"host": self.broker.host, "port": self.broker.port, "protocol": self.broker.protocol}
        raw = _gateway_config(self.plan, self.identity, self._tenant, self.workdir, self._uplink, intake,
                              self.rtu.port, self.tcp.port)
        cfg = parse_config(yaml.safe_dump(raw), f"{self.plan.gateway_id}.yaml")
        self.agent = CountingAgent(cfg)
        self.agent.start()
        seqs = SequenceStore(self.workdir / "node-sequences.json")
        self.nodes = [VirtualNode(node, *self.identity.node_keys[node], self.broker, self.signals, seqs)
                      for node in self.plan.node_ids]
        self._producing = True
        return self

    def describe(self) -> str:
        assert self.rtu is not None and self.tcp is not None and self.broker is not None
        return (f"{self.plan.farm_id} ({self.plan.crop}): gateway {self.plan.gateway_id}; RS485 on {self.rtu.port} "
                f"({len(self.plan.rtu_devices)} devices), Modbus TCP on 127.0.0.1:{self.tcp.port} "
                f"({len(self.plan.tcp_devices)} devices), {len(self.nodes)} nodes via its broker on "
                f"{self.broker.host}:{self.broker.port}")

    def publish_nodes(self) -> None:
        if self._producing:
            for node in self.nodes:
                node.publish()

    # -- what it produced, what is left -------------------------------------------------------------

    @property
    def produced_gateway(self) -> int:
        return self.agent.readings_captured if self.agent is not None else 0

    @property
    def node_messages(self) -> int:
        return sum(node.sent for node in self.nodes)

    @property
    def produced_nodes(self) -> int:
        return self.node_messages * NODE_READINGS

    def outbox_depth(self) -> int:
        return self.agent.outbox.stats().depth if self.agent is not None else 0

    def receipts(self) -> int:
        return self.agent.uplink.counters["receipts"] if self.agent is not None else 0

    # -- wind down ----------------------------------------------------------------------------------

    def stop_producers(self) -> None:
        """No more readings: the nodes fall silent, the buses stop (a poll in progress is captured first)."""
        self._producing = False
        if self.agent is not None:
            for scheduler in self.agent.schedulers:
                scheduler.stop()

    def drained(self) -> bool:
        """The gateway took every node message sent, and the cloud receipted every batch."""
        if self.agent is None:
            return True
        intake = self.agent.intake
        taken = intake.counters["accepted"] + intake.counters["duplicates"] if intake is not None else 0
        return taken >= self.node_messages and self.agent.outbox.stats().depth == 0

    def stop(self) -> None:
        """Stop everything the farm started (safe to call twice, and after a failed start); counts stay readable."""
        if self._stopped:
            return
        self._stopped = True
        self._producing = False
        for node in self.nodes:
            node.close()
        if self.agent is not None:
            self.agent.stop()
        for sim in (self.tcp, self.rtu):
            if sim is not None:
                sim.stop()
        if self.broker is not None:
            self.broker.stop()
