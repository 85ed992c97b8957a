"""What a BusScheduler needs from the protocol its bus speaks, so one scheduler serves every kind of bus.

A *link* owns the bus's port or connection and its counters; for each device it makes a *reader*
that knows the device's poll groups, turns the groups due now into steps (Modbus: merged register
reads; serial line: one reading) and carries them out.  Scheduling, the breaker, stamping, stale
flags and health stay in the scheduler, written once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from device_specs.schema import DeviceSpec, Point
from edge_agent.bus.line_link import LineLink
from edge_agent.bus.modbus_link import ModbusLink
from edge_agent.bus.planner import Decoded
from edge_agent.bus.transport import ExceptionResponse
from edge_agent.config import BusConfig, DeviceConfig


class DeviceReader(Protocol):
    """One device on a link.  Steps are protocol objects with a ``points`` tuple."""

    #: the device's poll intervals, shortest first
    intervals: tuple[float, ...]
    #: where the device is, for people: ``unit 3`` or ``/dev/ttyUSB1``
    where: str

    def reads(self, due: frozenset[float]) -> Sequence[Any]:
        """The steps that read the points of the groups due now."""
        ...

    def read(self, step: Any, retries: int | None) -> list[Decoded]:
        """Each point's value from one step; raises BusError."""
        ...

    def refused(self, step: Any, exc: ExceptionResponse) -> Sequence[Any] | None:
        """Smaller steps to try instead of one the device refused, or None."""
        ...

    def writer(self, point: Point, value: float | str | bool) -> Callable[[], None]:
        """A write to run on the bus thread; ValueError at once if the point cannot be written."""
        ...


class BusLink(Protocol):
    counters: Counter[str]
    description: str

    def reader(self, device: DeviceConfig, spec: DeviceSpec) -> DeviceReader: ...

    def close(self) -> None:
        """Release the port or connection (a later step reopens it)."""
        ...

    def abort(self) -> None:
        """From any thread: end a waiting step with Cancelled and refuse new ones (shutdown)."""
        ...


def open_link(bus: BusConfig) -> BusLink:
    """The link a bus config describes; its port opens lazily, on the first step."""
    if bus.kind == "serial":
        return LineLink(bus)
    return ModbusLink(bus)
