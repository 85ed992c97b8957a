"""One virtual farm: Modbus sensors, sensor nodes, the farm's own broker and its gateway agent.

* an RS485 bus on a virtual serial port (a pty, 9600 8N1, paced like a real line) with a 7-in-1
  soil probe, a weather station and a rain gauge, and a Modbus TCP pump house with an energy
  meter and a well-level transmitter (``hardware`` simulators, driven by the device specs, all
  seeing one farm's weather);
* the gateway's local broker (private, on a free port) and sensor nodes that run the node
  firmware itself (``hardware.virtual_node``: ``firmware.cycle.Node`` on a simulated board whose
  probes read the farm's weather), each signing with its own key and publishing there;
* the gateway agent (``edge_agent``): bus schedulers, node intake, outbox, signed batches to the
  cloud broker, deleting from its outbox only on the cloud's signed receipts.

Everything the farm writes lives in its folder (outbox, broker sessions, each node's flash with
its sequence numbers, config and unsent frames), so a second run carries on where the first stopped.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import yaml

from device_specs.registry import get_spec
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, parse_config
from edge_agent.sample import Sample
from fieldtrust.demo.plan import NODE_INTERVAL_S, NODE_WAKE_S, FarmPlan
from fieldtrust.demo.registration import DemoError, FarmIdentity
from fieldtrust.services.broker import BrokerKind, LocalBroker, start_local_broker
from firmware.main import FW
from hardware.rtu_bus import RtuBusSimulator
from hardware.signals import SignalModel
from hardware.sim_device import SimulatedDevice
from hardware.tcp_server import TcpSimulator
from hardware.virtual_node import NodeSettings, VirtualNode

POLL_INTERVAL_S = 1.0
#: where an earlier version of the demo kept its nodes' sequence reservations (read once, for a floor)
LEGACY_SEQUENCES = "node-sequences.json"

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


def legacy_sequence_floors(workdir: Path) -> dict[str, int]:
    """Node id -> first sequence number not reserved by the demo's old node publisher (none: {}).

    A data folder from before the nodes ran the firmware has messages under the nodes' keys but no
    node flash; the firmware must start above what was used, or the cloud sees conflicts.
    """
    path = workdir / LEGACY_SEQUENCES
    if not path.exists():
        return {}
    try:
        floors = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable ({exc}); remove it only if its farm's node flash files exist") from None
    if not isinstance(floors, dict) or not all(isinstance(v, int) and v >= 0 for v in floors.values()):
        raise ValueError(f"{path}: expected {{node id: next sequence number}}; got {floors!r:.200}")
    return floors


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
    """Start with :meth:`start`; :meth:`stop_producers`, :meth:`drained`, then :meth:`stop`."""

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
        self._stopped = False

    def _simulated(self, entries: list[tuple[str, str, int]]) -> list[SimulatedDevice]:
        return [SimulatedDevice(get_spec(spec), unit, seed=self.plan.index, signals=self.signals)
                for _, spec, unit in entries]

    def _virtual_nodes(self, broker: LocalBroker) -> list[VirtualNode]:
        try:
            floors = legacy_sequence_floors(self.workdir)
        except ValueError as exc:
            raise DemoError(str(exc)) from None
        nodes = []
        for node_id in self.plan.node_ids:
            epoch, key = self.identity.node_keys[node_id]
            settings = NodeSettings(node_id, key, broker.host, broker.port, epoch=epoch, interval_s=NODE_INTERVAL_S)
            nodes.append(VirtualNode(settings, self.signals, self.workdir / "nodes" / f"{node_id}.flash",
                                     wake_every_s=NODE_WAKE_S, seq_floor=floors.get(node_id, 0)))
        return nodes

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
        for node in self._virtual_nodes(self.broker):
            self.nodes.append(node.start())  # listed as started, so that stop() stops it
        return self

    def describe(self) -> str:
        assert self.rtu is not None and self.tcp is not None and self.broker is not None
        return (f"{self.plan.farm_id} ({self.plan.crop}): gateway {self.plan.gateway_id}; RS485 on {self.rtu.port} "
                f"({len(self.plan.rtu_devices)} devices), Modbus TCP on 127.0.0.1:{self.tcp.port} "
                f"({len(self.plan.tcp_devices)} devices), {len(self.nodes)} sensor nodes running the firmware "
                f"({FW}, woken every {NODE_WAKE_S:g} s) via its broker on {self.broker.host}:{self.broker.port}")

    # -- what it produced, what is left -------------------------------------------------------------

    @property
    def produced_gateway(self) -> int:
        return self.agent.readings_captured if self.agent is not None else 0

    @property
    def produced_nodes(self) -> int:
        """Readings in the frames the nodes' firmware put into their outboxes in this run."""
        return sum(node.tally.readings_enqueued for node in self.nodes)

    @property
    def queued_nodes(self) -> int:
        """Readings of this run still in the nodes' outboxes (on their flash: sent at a later wake)."""
        return sum(node.tally.readings_queued for node in self.nodes)

    @property
    def dropped_nodes(self) -> int:
        """Readings of this run the nodes' full outboxes dropped (the firmware counts them)."""
        return sum(node.tally.readings_dropped for node in self.nodes)

    @property
    def node_frames_delivered(self) -> int:
        """Frames the local broker acknowledged to the nodes, an earlier run's leftovers included."""
        return sum(node.tally.frames_delivered + node.tally.carried_delivered for node in self.nodes)

    def outbox_depth(self) -> int:
        return self.agent.outbox.stats().depth if self.agent is not None else 0

    def receipts(self) -> int:
        return self.agent.uplink.counters["receipts"] if self.agent is not None else 0

    # -- wind down ----------------------------------------------------------------------------------

    def stop_producers(self) -> None:
        """No more readings: each node ends the wake it is in and stays off, the buses stop (a poll in
        progress is captured first)."""
        for node in self.nodes:
            node.stop()
        if self.agent is not None:
            for scheduler in self.agent.schedulers:
                scheduler.stop()

    def drained(self) -> bool:
        """The gateway handled every node frame the broker acknowledged, and the cloud receipted every batch."""
        if self.agent is None:
            return True
        intake = self.agent.intake
        handled = 0
        if intake is not None:  # captured (accepted, or forwarded as a conflict), dropped as a repeat, or refused
            handled = sum(n for name, n in intake.counters.items()
                          if name in ("accepted", "duplicates", "conflicts")
                          or (name.startswith("rejected.") and not name.startswith("rejected.state_")))
        return handled >= self.node_frames_delivered and self.agent.outbox.stats().depth == 0

    def stop(self) -> None:
        """Stop everything the farm started (safe to call twice, and after a failed start); counts stay readable."""
        if self._stopped:
            return
        self._stopped = True
        for node in self.nodes:
            node.stop()
        if self.agent is not None:
            self.agent.stop()
        for sim in (self.tcp, self.rtu):
            if sim is not None:
                sim.stop()
        if self.broker is not None:
            self.broker.stop()
