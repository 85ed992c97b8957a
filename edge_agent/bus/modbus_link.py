"""Modbus devices (RTU or TCP) for the bus scheduler: merged reads through the Master, writes, split fallback."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from device_specs.codec import encode
from device_specs.schema import DeviceSpec, Point, Table
from edge_agent.bus.master import Master
from edge_agent.bus.planner import Decoded, Read, ReadPlan, decode_read, split
from edge_agent.bus.rtu import RtuTransport
from edge_agent.bus.tcp import TcpTransport
from edge_agent.bus.transport import ExceptionResponse, Transport
from edge_agent.config import BusConfig, DeviceConfig

log = logging.getLogger(__name__)


def modbus_transport(bus: BusConfig) -> Transport:
    """The transport an ``rtu`` or ``tcp`` bus config describes (opened lazily, on its first transaction)."""
    if bus.kind == "rtu":
        assert bus.port is not None
        return RtuTransport(bus.port, bus.baud, bus.parity.value, bus.stop_bits)
    assert bus.host is not None and bus.tcp_port is not None
    return TcpTransport(bus.host, bus.tcp_port)


class ModbusLink:
    """The Modbus master of an ``rtu`` or ``tcp`` bus."""

    def __init__(self, bus: BusConfig) -> None:
        self.bus_id = bus.id
        self.master = Master(modbus_transport(bus), bus.timeout_ms / 1000, bus.retries)
        self.counters: Counter[str] = self.master.counters
        self.description = self.master.transport.description

    def reader(self, device: DeviceConfig, spec: DeviceSpec) -> ModbusReader:
        return ModbusReader(self, device, spec)

    def close(self) -> None:
        self.master.close()

    def abort(self) -> None:
        self.master.abort()


class ModbusReader:
    """One Modbus device's merged reads, with the reads it refused as merged split into one per point."""

    def __init__(self, link: ModbusLink, device: DeviceConfig, spec: DeviceSpec) -> None:
        self._link = link
        self._master = link.master
        self.device = device
        self.spec = spec
        self.plan = ReadPlan(spec, device.poll_interval_s)
        self.intervals = self.plan.intervals
        self.where = f"unit {device.unit}"
        self._split: set[tuple[Table, int, int]] = set()  # merged reads the device refused

    def reads(self, due: frozenset[float]) -> list[Read]:
        out: list[Read] = []
        for r in self.plan.reads(due):
            out.extend(split(r) if (r.table, r.address, r.count) in self._split else (r,))
        return out

    def read(self, step: Read, retries: int | None) -> list[Decoded]:
        values = self._master.read(self.device.unit, step.table, step.address, step.count, retries).values
        return decode_read(step, values)

    def refused(self, step: Read, exc: ExceptionResponse) -> list[Read] | None:
        """A merged read refused as an illegal address/value: the spec's gap or size limit is wrong for this
        device.  Read those points one by one from now on (and say so once); None if that cannot help."""
        if exc.code not in (2, 3) or len(step.points) < 2:
            return None
        self._split.add((step.table, step.address, step.count))
        log.warning("bus %s: device %s refuses the merged read %s %d+%d (%s); reading its %d points one by one "
                    "(check the spec's timing.max_gap and max_registers_per_read)", self._link.bus_id,
                    self.device.id, step.table.value, step.address, step.count, exc, len(step.points))
        return split(step)

    def writer(self, point: Point, value: float | str | bool) -> Callable[[], None]:
        """The write of ``value`` to a writable holding point, to run on the bus thread; ValueError if it cannot be."""
        if not point.writable or point.table != Table.HOLDING or point.address is None:
            raise ValueError(f"{self.spec.model}.{point.metric}: not a writable holding register")
        address, registers, unit = point.address, encode(point, value), self.device.unit

        def send() -> None:
            if len(registers) == 1:
                self._master.write_register(unit, address, registers[0])
            else:
                self._master.write_registers(unit, address, registers)

        return send
