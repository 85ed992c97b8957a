"""A Modbus field device simulated from its spec: registers hold what the signal model says now.

The register image is never stored: each read encodes the points it covers, at one instant,
with ``device_specs.codec.encode`` (the same codec the gateway decodes with).  Registers that
no point covers but that sit between mapped ones read as 0; anything outside the mapped span of
a table is an illegal address, as is a read longer than the spec's ``max_registers_per_read``.
Tests pin values; writable points keep what a master writes (function 6/16), which also
replaces a pin on that point.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from device_specs.codec import decode, encode
from device_specs.schema import DataType, DeviceSpec, Point, Table
from hardware.signals import SignalModel
from hardware.sim_points import SimulatedPoints, Value

MAX_READ_BITS = 2000  # Modbus limit for functions 1/2
MAX_READ_REGISTERS = 125  # Modbus limit for functions 3/4


class ModbusError(Exception):
    """A request the device refuses; ``code`` is the Modbus exception code it answers with."""

    code = 4


class IllegalFunction(ModbusError):
    code = 1


class IllegalAddress(ModbusError):
    code = 2


class IllegalValue(ModbusError):
    code = 3


class SimulatedDevice(SimulatedPoints):
    """One Modbus device of model ``spec`` at ``unit_id``; its weather comes from ``SignalModel(seed)``.

    Devices built with the same seed see the same weather (one farm); each has its own sensor
    noise and its own :class:`FaultSet` (``faults``), seeded from ``seed`` and ``unit_id``.
    """

    def __init__(self, spec: DeviceSpec, unit_id: int = 1, seed: int = 0,
                 clock: Callable[[], float] = time.time, signals: SignalModel | None = None) -> None:
        if not spec.interface.is_modbus:
            raise ValueError(f"{spec.key}: interface {spec.interface.value} is not Modbus; cannot simulate it here")
        if not 1 <= unit_id <= 247:
            raise ValueError(f"unit_id must be within 1..247; got {unit_id}")
        super().__init__(spec, seed, clock, signals, fault_seed=seed * 1000 + unit_id, noise_scope=str(unit_id))
        self.unit_id = unit_id
        self._written: dict[int, int] = {}  # holding address -> register written by a master
        self._points: dict[Table, list[Point]] = {}
        for p in sorted(spec.points, key=lambda p: p.address or 0):
            if p.table is not None:
                self._points.setdefault(p.table, []).append(p)
        self._span = {t: (ps[0].address or 0, max((p.address or 0) + max(p.register_count, 1) for p in ps))
                      for t, ps in self._points.items()}

    def __repr__(self) -> str:
        return f"SimulatedDevice({self.spec.key}, unit {self.unit_id})"

    # -- values ---------------------------------------------------------------------------------
    def _value(self, p: Point, t: float) -> Value:
        """What a master decodes: a pin or a master's write round-trips through the registers too."""
        return decode(p, self._registers(p, t))

    def _registers(self, p: Point, t: float) -> list[int]:
        addresses = range(p.address or 0, (p.address or 0) + p.register_count)
        with self._lock:
            pinned = self._pins.get(p.metric)
            held = [self._written[a] for a in addresses] if p.writable and all(
                a in self._written for a in addresses) else None
        if pinned is not None:
            return encode(p, pinned)
        if held is not None:
            return held
        return self._encode_in_range(p, self._measured(p, t))

    def _encode_in_range(self, p: Point, value: Value) -> list[int]:
        """Registers for ``value``; a value rounded out of the range by the register's step is stepped back in."""
        regs = encode(p, value)
        if p.range is None or isinstance(value, (str, bool)):
            return regs
        decoded = decode(p, regs)
        if isinstance(decoded, float | int) and not p.in_range(decoded):
            if p.type in (DataType.FLOAT32, DataType.FLOAT64):  # two units in the last place of the raw value
                step = abs(value - p.offset) * (2**-22 if p.type == DataType.FLOAT32 else 2**-51)
            else:
                step = abs(p.scale)
            regs = encode(p, value - step if decoded > p.range[1] else value + step)
        return regs

    def _text(self, p: Point) -> str:
        """A serial number unique to seed and unit, the spec's version, or the model; cut to the point's length."""
        name = p.metric
        if "serial" in name:
            text = f"SIM{self.seed:04d}{self.unit_id:03d}"
        elif "firmware" in name or "version" in name:
            text = self.spec.version
        else:
            text = self.spec.model
        return text[: 2 * (p.length or 0)]

    # -- Modbus access --------------------------------------------------------------------------
    def read(self, table: Table | str, address: int, count: int) -> list[int]:
        """Registers (or bits, as 0/1) ``address .. address+count-1`` of ``table``, all at one instant."""
        table = Table(table)
        limit = MAX_READ_BITS if table.is_bits else MAX_READ_REGISTERS
        if not 1 <= count <= limit:
            raise IllegalValue(f"count {count} outside 1..{limit}")
        if not table.is_bits and count > self.spec.timing.max_registers_per_read:
            raise IllegalAddress(f"count {count} above max_registers_per_read "
                                 f"{self.spec.timing.max_registers_per_read}")
        lo, hi = self._span.get(table, (0, 0))
        if address < lo or address + count > hi:
            raise IllegalAddress(f"{table.value} {address}..{address + count - 1} outside mapped {lo}..{hi - 1}")
        t = self._instant()
        out = [0] * count
        for p in self._points[table]:
            start = p.address or 0
            if start >= address + count or start + max(p.register_count, 1) <= address:
                continue
            for i, reg in enumerate(self._registers(p, t)):
                k = start + i - address
                if 0 <= k < count:
                    out[k] |= reg  # bit points may share one register
        return out

    def write(self, table: Table | str, address: int, registers: list[int]) -> None:
        """Write holding ``registers`` from ``address`` (functions 6 and 16); only writable points take them."""
        table = Table(table)
        if table != Table.HOLDING:
            raise IllegalFunction(f"writes to {table.value} are not supported")
        if not 1 <= len(registers) <= 123:
            raise IllegalValue(f"{len(registers)} registers outside 1..123")
        touched: set[str] = set()
        for i in range(len(registers)):
            owner = next((p for p in self._points.get(Table.HOLDING, []) if p.writable
                          and (p.address or 0) <= address + i < (p.address or 0) + p.register_count), None)
            if owner is None:
                raise IllegalAddress(f"holding {address + i} is not a writable point")
            touched.add(owner.metric)
        with self._lock:
            for i, reg in enumerate(registers):
                self._written[address + i] = reg & 0xFFFF
            for metric in touched:  # what a master writes replaces a pin
                self._pins.pop(metric, None)

