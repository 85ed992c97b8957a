"""``fieldtrust edge check``: is this configuration right, and does every device answer?

The file is validated exactly as the agent validates it at start (``load_config``), then each
enabled device gets one full read cycle with the agent's merged reads, on its bus's settings.
Buses are visited one at a time, each through its own transport, so a check never competes with
itself for a port.  (Run it with the agent stopped: the agent owns its ports exclusively.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from contract.telemetry import Q_OUT_OF_RANGE
from edge_agent.bus.link import open_link
from edge_agent.bus.transport import BusError
from edge_agent.config import AgentConfig


@dataclass(frozen=True, slots=True)
class Reading:
    metric: str
    value: float | str | bool | None
    unit: str
    quality: int = 0


@dataclass
class DeviceCheck:
    """One device's test read."""

    device_id: str
    bus_id: str
    unit: int
    spec: str
    status: str  # "ok", "error" or "disabled"
    error: str | None = None
    readings: list[Reading] = field(default_factory=list)
    response_ms: float | None = None  # round trip of all the device's reads

    @property
    def ok(self) -> bool:
        return self.status != "error"


def check_config(cfg: AgentConfig) -> list[DeviceCheck]:
    """One test read of every configured device, bus by bus."""
    rows: list[DeviceCheck] = []
    for bus in cfg.buses:
        link = open_link(bus)
        try:
            for dev in bus.devices:
                spec = dev.load_spec()
                row = DeviceCheck(dev.id, bus.id, dev.unit, spec.key, "disabled" if not dev.enabled else "ok")
                rows.append(row)
                if not dev.enabled:
                    continue
                reader = link.reader(dev, spec)
                t0 = time.monotonic()
                try:
                    for read in reader.reads(frozenset(reader.intervals)):
                        for d in reader.read(read, None):
                            p = d.point
                            bad = d.value is None or (not isinstance(d.value, str | bool) and not p.in_range(d.value))
                            row.readings.append(Reading(p.metric, d.value, p.unit, Q_OUT_OF_RANGE if bad else 0))
                except BusError as exc:
                    row.status, row.error = "error", str(exc)
                row.response_ms = round((time.monotonic() - t0) * 1000, 1)
        finally:
            link.close()
    return rows
