"""Serial line-protocol sensors for the bus scheduler: one sensor per port, read through LineTransport.

A line carries every field of the sensor at once, so a poll cycle is one reading from which the
due points are taken; points are still grouped by poll interval, so health, breaker and stamping
work exactly as for a Modbus device.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from device_specs.line_codec import LineCodec, Value
from device_specs.schema import DeviceSpec, Point
from edge_agent.bus.line import LineTransport
from edge_agent.bus.planner import Decoded, poll_groups
from edge_agent.bus.transport import ExceptionResponse, with_retries
from edge_agent.config import BusConfig, DeviceConfig


@dataclass(frozen=True, slots=True)
class LineRead:
    """The points one reading of a line sensor hands on."""

    points: tuple[Point, ...]


class LineLink:
    """The port of a ``kind: serial`` bus."""

    def __init__(self, bus: BusConfig) -> None:
        assert bus.port is not None
        self.transport = LineTransport(bus.port, bus.baud, bus.parity.value, bus.stop_bits, bus.data_bits)
        self.counters: Counter[str] = self.transport.counters
        self.description = self.transport.description
        self.timeout_s = bus.timeout_ms / 1000
        self.retries = bus.retries

    def reader(self, device: DeviceConfig, spec: DeviceSpec) -> LineReader:
        return LineReader(self, device, spec)

    def reading(self, codec: LineCodec, retries: int | None = None) -> dict[str, Value | None]:
        """One reading of the sensor, by metric, with the bus's retries (or ``retries``)."""
        attempts = 1 + (self.retries if retries is None else retries)
        values, _elapsed = with_retries(self.counters, attempts, lambda: self.transport.read_line(
            codec.request, codec.terminator, codec.values, self.timeout_s))
        return values

    def close(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        self.transport.abort()


class LineReader:
    """One line sensor's poll groups and readings."""

    def __init__(self, link: LineLink, device: DeviceConfig, spec: DeviceSpec) -> None:
        self._link = link
        self.codec = LineCodec(spec)
        self.groups = poll_groups((p for p in spec.points if p.field), device.poll_interval_s)
        self.intervals = tuple(g.interval_s for g in self.groups)
        self.where = link.transport.port

    def reads(self, due: frozenset[float]) -> tuple[LineRead, ...]:
        return (LineRead(tuple(p for g in self.groups if g.interval_s in due for p in g.points)),)

    def read(self, step: LineRead, retries: int | None) -> list[Decoded]:
        values = self._link.reading(self.codec, retries)
        out = []
        for p in step.points:
            value = values.get(p.metric)
            out.append(Decoded(p, value, None if value is not None else f"{p.field}: not in the line"))
        return out

    def refused(self, step: LineRead, exc: ExceptionResponse) -> list[LineRead] | None:
        return None  # line sensors send no exception responses

    def writer(self, point: Point, value: Value) -> Callable[[], None]:
        raise ValueError(f"{self.codec.spec.model}.{point.metric}: a serial-line sensor takes no writes")
