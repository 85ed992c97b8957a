"""``fieldtrust edge check``: is this configuration right, and does every device answer?

The file is validated exactly as the agent validates it at start (``load_config``), then each
enabled device gets one full read cycle with the agent's merged reads, on its bus's settings.
Buses are visited one at a time, each through its own transport, so a check never competes with
itself for a port.  (Run it with the agent stopped: the agent owns its ports exclusively.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contract.telemetry import Q_OUT_OF_RANGE
from edge_agent.bus.master import Master
from edge_agent.bus.planner import ReadPlan, decode_read
from edge_agent.bus.scheduler import open_transport
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
        master = Master(open_transport(bus), bus.timeout_ms / 1000, bus.retries)
        try:
            for dev in bus.devices:
                spec = dev.load_spec()
                row = DeviceCheck(dev.id, bus.id, dev.unit, spec.key, "disabled" if not dev.enabled else "ok")
                rows.append(row)
                if not dev.enabled:
                    continue
                elapsed = 0.0
                try:
                    for read in ReadPlan(spec, dev.poll_interval_s).full_cycle():
                        result = master.read(dev.unit, read.table, read.address, read.count)
                        elapsed += result.reply.elapsed_s
                        for d in decode_read(read, result.values):
                            p = d.point
                            bad = d.value is None or (not isinstance(d.value, str | bool) and not p.in_range(d.value))
                            row.readings.append(Reading(p.metric, d.value, p.unit, Q_OUT_OF_RANGE if bad else 0))
                except BusError as exc:
                    row.status, row.error = "error", str(exc)
                row.response_ms = round(elapsed * 1000, 1)
        finally:
            master.close()
    return rows
