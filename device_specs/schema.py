"""The device spec schema: a sensor model described as data (see docs/device-spec-format.md).

A spec names a model and its version, how it is reached (interface and line defaults) and its
points: where each value lives, how its bytes are ordered, how raw becomes physical, and which
physical range is plausible.  Errors name the file, the point and the key at fault.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

SCHEMA_ID = "fieldtrust.device-spec/1"

ModelId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9\-]{1,63}$")]
MetricName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
SemVer = Annotated[str, StringConstraints(pattern=r"^\d+\.\d+\.\d+$")]


class Interface(StrEnum):
    MODBUS_RTU = "modbus-rtu"
    MODBUS_TCP = "modbus-tcp"
    SERIAL_LINE = "serial-line"
    ADC = "adc"
    I2C = "i2c"
    ONEWIRE = "onewire"

    @property
    def is_modbus(self) -> bool:
        return self in (Interface.MODBUS_RTU, Interface.MODBUS_TCP)


class Table(StrEnum):
    """Modbus data tables, each with its read function code."""

    COIL = "coil"  # 0x01
    DISCRETE = "discrete"  # 0x02
    HOLDING = "holding"  # 0x03
    INPUT = "input"  # 0x04

    @property
    def function(self) -> int:
        return {"coil": 1, "discrete": 2, "holding": 3, "input": 4}[self.value]

    @property
    def is_bits(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE)


class DataType(StrEnum):
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    BITS = "bits"  # one bit of a 16-bit register (``bit``), or a coil/discrete input
    STRING = "string"  # ``length`` registers of ASCII, two characters each

    @property
    def registers(self) -> int:
        """Registers a value of this type spans (strings: see Point.register_count)."""
        return {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "int64": 4, "uint64": 4,
                "float32": 2, "float64": 4, "bits": 1, "string": 0}[self.value]


class ByteOrder(StrEnum):
    """Order of the bytes of a value on the wire, A being its most significant byte.

    ABCD: big-endian words, big-endian bytes (Modbus default).  BADC: bytes swapped in each
    word.  CDAB: words swapped (common on meters).  DCBA: fully little-endian.  For 64-bit
    values the same rule extends to four words (ABCDEFGH, ...).
    """

    ABCD = "ABCD"
    BADC = "BADC"
    CDAB = "CDAB"
    DCBA = "DCBA"

    @property
    def swap_bytes(self) -> bool:
        return self in (ByteOrder.BADC, ByteOrder.DCBA)

    @property
    def swap_words(self) -> bool:
        return self in (ByteOrder.CDAB, ByteOrder.DCBA)


class Parity(StrEnum):
    NONE = "N"
    EVEN = "E"
    ODD = "O"


class Source(BaseModel):
    """Where a register map comes from, so a reader can check it."""

    model_config = ConfigDict(extra="forbid")
    document: str = Field(min_length=3)
    revision: str = Field(min_length=1)
    publisher: str | None = None
    url: str | None = None
    notes: str | None = None


class SerialDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    baud: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Parity = Parity.NONE
    data_bits: Literal[7, 8] = 8
    stop_bits: Literal[1, 2] = 1
    unit_id: int = Field(default=1, ge=1, le=247)

    @property
    def bits_per_char(self) -> int:
        return 1 + self.data_bits + (0 if self.parity == Parity.NONE else 1) + self.stop_bits


class Timing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    response_timeout_ms: int = Field(default=300, ge=10, le=10_000)
    #: the slowest the device answers in normal operation (datasheet), used by certify
    max_response_ms: int = Field(default=200, ge=1, le=10_000)
    #: registers the device accepts in one read; reads are merged up to this
    max_registers_per_read: int = Field(default=64, ge=1, le=125)
    #: largest hole in the address space a merged read may span (unused registers read and dropped)
    max_gap: int = Field(default=8, ge=0, le=64)
    warmup_ms: int = Field(default=0, ge=0, le=60_000)


class Point(BaseModel):
    """One measured quantity of the device."""

    model_config = ConfigDict(extra="forbid")
    metric: MetricName
    description: str = ""
    unit: Annotated[str, StringConstraints(max_length=16)] = ""
    # Modbus location
    table: Table | None = None
    address: int | None = Field(default=None, ge=0, le=65535)
    type: DataType = DataType.UINT16
    order: ByteOrder = ByteOrder.ABCD
    bit: int | None = Field(default=None, ge=0, le=15)
    length: int | None = Field(default=None, ge=1, le=64)  # string registers
    # serial-line location: the named group of the spec's line pattern
    field: str | None = None
    # node-side location (adc channel, i2c register, onewire family)
    channel: int | None = Field(default=None, ge=0, le=255)
    # raw -> physical: value = raw * scale + offset
    scale: float = 1.0
    offset: float = 0.0
    range: tuple[float, float] | None = None  # valid physical range, inclusive
    poll_interval_s: float = Field(default=60.0, ge=0.1, le=86_400)
    writable: bool = False
    verified: bool = False  # checked against real hardware (not only the datasheet)
    note: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Point:
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError(f"range: low {self.range[0]} is above high {self.range[1]}")
        if self.scale == 0:
            raise ValueError("scale: must not be 0")
        if self.type == DataType.STRING and self.length is None:
            raise ValueError("length: required for type string (in registers)")
        if self.type != DataType.STRING and self.length is not None:
            raise ValueError("length: only for type string")
        if self.table is not None and self.table.is_bits and self.type != DataType.BITS:
            raise ValueError(f"type: a {self.table.value} point must be of type bits")
        if self.bit is not None and self.type != DataType.BITS:
            raise ValueError("bit: only for type bits")
        if self.type.registers == 1 and self.order in (ByteOrder.CDAB, ByteOrder.DCBA):
            raise ValueError(f"order: {self.order.value} swaps words but {self.type.value} has one word")
        return self

    @property
    def register_count(self) -> int:
        if self.type == DataType.STRING:
            return self.length or 0
        return self.type.registers

    def in_range(self, value: float) -> bool:
        return self.range is None or self.range[0] <= value <= self.range[1]


class LineProtocol(BaseModel):
    """A serial line protocol: optional request string, and a regex with named groups."""

    model_config = ConfigDict(extra="forbid")
    request: str | None = None  # sent before each read (escapes such as \r\n allowed)
    pattern: str  # Python regex; each point's ``field`` names a group
    terminator: str = "\n"


class DeviceSpec(BaseModel):
    """A sensor model."""

    model_config = ConfigDict(extra="forbid")
    schema_: Literal["fieldtrust.device-spec/1"] = Field(alias="schema")
    model: ModelId
    version: SemVer
    manufacturer: str
    name: str
    category: Literal["soil", "weather", "rain", "water", "energy", "leaf", "greenhouse", "air", "power"]
    description: str = ""
    source: Source
    interface: Interface
    serial: SerialDefaults | None = None
    timing: Timing = Timing()
    line: LineProtocol | None = None
    points: Annotated[list[Point], Field(min_length=1)]
    calibration: dict[str, str] = {}  # hints for technicians, by metric or topic

    @model_validator(mode="after")
    def _consistent(self) -> DeviceSpec:
        seen: set[str] = set()
        for i, p in enumerate(self.points):
            where = f"points.{i} ({p.metric})"
            if p.metric in seen:
                raise ValueError(f"{where}: metric: duplicate name")
            seen.add(p.metric)
            if self.interface.is_modbus:
                if p.table is None or p.address is None:
                    raise ValueError(f"{where}: table and address are required for {self.interface.value}")
                if p.address + max(p.register_count, 1) > 65536:
                    raise ValueError(f"{where}: address: value runs past register 65535")
            elif self.interface == Interface.SERIAL_LINE:
                if not p.field:
                    raise ValueError(f"{where}: field: required for serial-line (a group of line.pattern)")
            elif self.interface in (Interface.ADC, Interface.ONEWIRE, Interface.I2C) and p.table is not None:
                raise ValueError(f"{where}: table: only for Modbus interfaces")
        if self.interface == Interface.MODBUS_RTU and self.serial is None:
            raise ValueError("serial: required for modbus-rtu (baud, parity, stop bits, unit id)")
        if self.interface == Interface.SERIAL_LINE:
            if self.line is None:
                raise ValueError("line: required for serial-line")
            import re

            try:
                groups = set(re.compile(self.line.pattern).groupindex)
            except re.error as exc:
                raise ValueError(f"line.pattern: not a valid regex: {exc}") from None
            for p in self.points:
                if p.field not in groups:
                    raise ValueError(f"points ({p.metric}): field: {p.field!r} is not a group of line.pattern")
        return self

    @property
    def key(self) -> str:
        """``model@version``: how configs and messages name a spec."""
        return f"{self.model}@{self.version}"

    def point(self, metric: str) -> Point:
        for p in self.points:
            if p.metric == metric:
                return p
        raise KeyError(f"{self.model} has no point {metric!r}")
