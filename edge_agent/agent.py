"""The gateway agent: wires configuration to outbox, bus schedulers, node intake, uplink and health.

Ownership, one loop each: a thread per physical bus (``BusScheduler``), one for the local
broker (``Intake``), one for the cloud link (``Uplink``), one for heartbeats (``HealthReporter``);
the main thread only waits for SIGTERM/SIGINT and then stops them, producers first, so nothing
is captured after the outbox closes.  The outbox is the only state they share, behind its lock.

The services for sensor nodes (``nodes`` in the config) have their own: the relay of config and
OTA from the cloud (``NodeRelay``, its own local connection; the uplink hands it the downlink),
the OTA file server and the time server.  They start before the uplink, so the first downlink
finds them ready, and stop after it.

Agent updates: the uplink hands the cloud's signed update to an ``UpdateReceiver``, which leaves it
for the updater, a process of its own (``fieldtrust edge update apply``; edge_agent.updater); the
heartbeat file that the health reporter touches after each heartbeat is how the updater judges the
release it switched to.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections import Counter
from collections.abc import Callable

from contract import models
from contract.telemetry import Q_CLOCK_UNSYNCED, ContractError, encode_body, telemetry
from edge_agent import __version__, clock
from edge_agent.bus.scheduler import BusScheduler
from edge_agent.config import AgentConfig
from edge_agent.health import HealthReporter, HealthSources
from edge_agent.intake import Intake
from edge_agent.logging_setup import LogLimiter
from edge_agent.node_relay import NodeRelay
from edge_agent.ota_cache import OtaCache
from edge_agent.ota_server import OtaHttpServer
from edge_agent.outbox import Outbox
from edge_agent.sample import Sample
from edge_agent.time_server import SntpServer
from edge_agent.updater import UpdateReceiver, UpdateSpool
from edge_agent.uplink import Uplink

log = logging.getLogger(__name__)

SW = f"edge/{__version__}"


def attested_body(sample: Sample, ep: int, seq: int) -> bytes:
    """The gateway-attested telemetry body of one sample; raises ContractError if the cloud would refuse it.

    Checked before capture: one body the cloud refuses would make its whole batch fail forever.
    """
    sync = -1 if sample.quality & Q_CLOCK_UNSYNCED else 0  # synchronised now, by the kernel's account
    data = encode_body(telemetry(sample.device_id, ep, seq, sample.bt_ms, sample.records, SW, sync, sample.quality))
    models.parse(data, expect="tel")
    return data


class Agent:
    """One gateway: build with a validated config, then :meth:`run` (or :meth:`start`/:meth:`stop`)."""

    def __init__(self, cfg: AgentConfig, *, clock_synced: Callable[[], bool] = clock.clock_synced) -> None:
        self.cfg = cfg
        gateway = cfg.gateway
        self._key = gateway.key()
        self._ep = gateway.key_epoch
        self._log_limit = LogLimiter(300.0)
        self.counters: Counter[str] = Counter()
        self.outbox = Outbox(cfg.outbox_path, cfg.outbox.max_bytes)
        self.intake = (
            Intake(cfg.intake, self.outbox, f"fieldtrust-gw-{gateway.id}-intake") if cfg.intake.enabled else None
        )
        nodes = cfg.nodes
        serve_files = (nodes.relay and self.intake is not None) or nodes.ota_port is not None
        self.ota_cache = OtaCache(cfg.ota_cache_dir, int(nodes.cache_mb * 2**20)) if serve_files else None
        self.relay: NodeRelay | None = None
        if nodes.relay and self.intake is not None and self.ota_cache is not None:
            self.relay = NodeRelay(gateway.tenant, gateway.id, self.ota_cache, cfg.intake.broker,
                                   f"fieldtrust-gw-{gateway.id}-relay", known_ids=nodes.ids,
                                   heard_nodes=self.intake.heard_nodes)
        downlink = (self.relay.filters, self.relay.handle_downlink) if self.relay is not None else None
        self.updates = UpdateReceiver(gateway.id, self._key, UpdateSpool(cfg.update_dir), __version__)
        self.uplink = Uplink(gateway, self._key, cfg.uplink, self.outbox, sw=SW, downlink=downlink,
                             on_update=self.updates.handle)
        self.ota_server = (
            OtaHttpServer(self.ota_cache, nodes.ota_bind, nodes.ota_port)
            if nodes.ota_port is not None and self.ota_cache is not None else None
        )
        self.sntp_server = (
            SntpServer(nodes.sntp_bind, nodes.sntp_port, clock_synced=clock_synced)
            if nodes.sntp_port is not None else None
        )
        self.schedulers = [BusScheduler(bus, self._on_sample, clock_synced=clock_synced) for bus in cfg.buses]
        sources = HealthSources(
            device_health=[s.device_health for s in self.schedulers],
            counters={
                "agent": lambda: dict(self.counters),
                "uplink": self.uplink.all_counters,
                "update": lambda: dict(self.updates.counters),
                **{f"bus.{s.bus.id}": s.stats for s in self.schedulers},
            },
        )
        if self.intake is not None:
            sources.counters["intake"] = self.intake.all_counters
            sources.node_states = self.intake.node_states
        if self.relay is not None:
            sources.counters["nodes.relay"] = self.relay.all_counters
        if self.ota_server is not None:
            sources.counters["nodes.ota_http"] = self.ota_server.all_counters
        if self.sntp_server is not None:
            sources.counters["nodes.sntp"] = self.sntp_server.all_counters
        self.health = HealthReporter(
            gateway.id,
            self._key,
            SW,
            self.outbox,
            sources,
            interval_s=cfg.health.interval_s,
            publish=self.uplink.publish_health,
            clock_synced=clock_synced,
            heartbeat_file=cfg.heartbeat_path,
        )
        self._stop = threading.Event()

    # -- capture of bus readings -----------------------------------------------------------

    def _on_sample(self, sample: Sample) -> None:
        """Attest one device's readings: a telemetry body under the device's next sequence number."""
        try:
            self.outbox.capture_attested(sample.device_id, self._ep, lambda seq: attested_body(sample, self._ep, seq))
        except ContractError as exc:
            self.counters["samples_rejected"] += 1
            if self._log_limit.allow((sample.device_id, exc.reason)) is not None:
                log.error("device %s: a sample does not fit the contract and was not captured: %s",
                          sample.device_id, exc)
            return
        self.counters["samples_captured"] += 1

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        log.info("gateway %s (tenant %s) starting: %d bus(es), intake %s, outbox %s",
                 self.cfg.gateway.id, self.cfg.gateway.tenant, len(self.schedulers),
                 "on" if self.intake else "off", self.outbox.path)
        for service in (self.ota_server, self.sntp_server, self.relay):
            if service is not None:
                service.start()
        # made by the agent, so that it stays the agent's to write (the updater runs as root)
        self.updates.spool.dir.mkdir(parents=True, exist_ok=True)
        self.uplink.start()
        if self.intake is not None:
            self.intake.start()
        for scheduler in self.schedulers:
            scheduler.start()
        self.health.start()

    def stop(self) -> None:
        """Stop producers first (buses, intake), then heartbeats and the uplink; close the outbox last."""
        for scheduler in self.schedulers:
            scheduler.stop()
        if self.intake is not None:
            self.intake.stop()
        self.health.stop()
        self.uplink.stop()
        for service in (self.relay, self.ota_server, self.sntp_server):
            if service is not None:
                service.stop()
        self.outbox.close()
        log.info("gateway %s stopped", self.cfg.gateway.id)

    def request_stop(self, *_args: object) -> None:
        self._stop.set()

    def run(self) -> int:
        """Run until SIGTERM or SIGINT (call from the main thread).  Returns the exit status."""
        previous = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

