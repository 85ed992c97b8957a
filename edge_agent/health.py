"""The gateway's heartbeat: what every part reports about itself, signed and sent on a timer.

A gateway in a village is visited rarely; its heartbeat is how anyone learns that a sensor went
quiet, a node's battery is running down or its firmware refused an update, the disk is filling,
the outbox is backing up (and since when), or readings were dropped because it overflowed.
Each part keeps its own counters; this module only collects them into a
``contract.models.Health`` body and signs it with the gateway key.

After each heartbeat it has handed to the cloud link, the reporter touches its heartbeat file (the
agent's ``health.heartbeat_file``): the agent updater (edge_agent.updater) judges a newly switched
release healthy by that file's time, so only an agent that runs *and* reaches its broker passes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from contract import models
from contract.telemetry import sign
from edge_agent.intake import NodeState
from edge_agent.outbox import Outbox

log = logging.getLogger(__name__)

_PRESENCE_STATE = {"birth": "ok", "will": "down"}


@dataclass
class HealthSources:
    """Where the numbers come from; each callable is cheap and safe to call from another thread."""

    device_health: list[Callable[[], Mapping[str, models.DeviceHealth]]] = field(default_factory=list)
    counters: dict[str, Callable[[], Mapping[str, int]]] = field(default_factory=dict)  # prefix -> counters
    node_states: Callable[[], Mapping[str, NodeState]] | None = None


class HealthReporter:
    """Builds and signs heartbeats; with :meth:`start`, publishes one every ``interval_s``."""

    def __init__(
        self,
        gw: str,
        key: bytes,
        sw: str,
        outbox: Outbox,
        sources: HealthSources,
        *,
        interval_s: float,
        publish: Callable[[bytes], bool],
        clock_synced: Callable[[], bool],
        heartbeat_file: Path | None = None,
        time_fn: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gw = gw
        self.heartbeat_file = heartbeat_file
        self._key = key
        self._sw = sw
        self._outbox = outbox
        self._sources = sources
        self.interval_s = interval_s
        self._publish = publish
        self._clock_synced = clock_synced
        self._time = time_fn
        self._monotonic = monotonic
        self._started = monotonic()
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first call only sets the reference point
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.heartbeat_file_errors = 0

    def body(self) -> models.Health:
        now_ms = int(self._time() * 1000)
        stats = self._outbox.stats()
        counters = {
            "outbox.captured": stats.captured,
            "outbox.confirmed": stats.confirmed,
            "outbox.dropped": stats.dropped,
            "outbox.batches": stats.batches,
        }
        for prefix, source in self._sources.counters.items():
            counters.update({f"{prefix}.{name}": int(value) for name, value in source().items()})
        devices: dict[str, models.DeviceHealth] = {}
        for source in self._sources.device_health:
            devices.update(source())
        if self._sources.node_states is not None:
            for node, state in self._sources.node_states().items():
                devices[node] = models.DeviceHealth(
                    last_good_ms=state.last_good_ms,
                    errors=state.rejected,
                    state=_PRESENCE_STATE.get(state.presence, "unknown"),  # type: ignore[arg-type]
                    battery=state.battery,
                    battery_unit=state.battery_unit,
                    rssi=state.rssi,
                    fw=state.fw,
                    build=state.build,
                    last_seq=None if state.last_key is None else state.last_key[1],
                    refused=state.refused,
                )
        return models.Health(
            k="health",
            gw=self.gw,
            at=now_ms,
            sw=self._sw,
            uptime_s=round(self._monotonic() - self._started, 1),
            cpu_pct=self._process.cpu_percent(None),
            rss_mb=round(self._process.memory_info().rss / 2**20, 1),
            disk_free_mb=self._disk_free_mb(self._outbox.path.parent),
            clock_synced=self._clock_synced(),
            outbox=models.OutboxHealth(
                depth=stats.depth,
                oldest_age_s=None if stats.oldest_ms is None else max(0.0, (now_ms - stats.oldest_ms) / 1000),
                dropped=stats.dropped,
                bytes=stats.bytes,
            ),
            counters=counters,
            devices=devices,
        )

    def frame(self) -> bytes:
        return sign(self._key, self.body().model_dump_json(exclude_none=True).encode())

    @staticmethod
    def _disk_free_mb(path: Path) -> float | None:
        try:
            return round(psutil.disk_usage(str(path)).free / 2**20, 1)
        except OSError:
            return None

    # -- the heartbeat thread --------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("health reporter already started")
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if self._publish(self.frame()):
                    self.sent += 1
                    self.touch_heartbeat_file()
            except Exception:  # a heartbeat that fails must not end the heartbeats
                log.exception("cannot build or send the heartbeat")

    def touch_heartbeat_file(self) -> None:
        """Say "a heartbeat went out" to the updater: the file's time is the signal, its text the software."""
        if self.heartbeat_file is None:
            return
        try:
            self.heartbeat_file.write_text(f"{self._sw}\n")
        except OSError as exc:  # a full disk, say: the heartbeats go on, the updater will judge us unhealthy
            self.heartbeat_file_errors += 1
            if self.heartbeat_file_errors == 1:
                log.error("cannot touch the heartbeat file %s: %s", self.heartbeat_file, exc)
