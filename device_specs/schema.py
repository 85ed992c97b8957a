"""The device spec schema: a sensor model described as data (see docs/device-spec-format.md).

A spec names a model and its version, how it is reached (interface and line defaults) and its
points: where each value lives, how its bytes are ordered, how raw becomes physical, and which
physical range is plausible.  Errors name the file, the point and the key at fault.
"""

from __future__ import annotations

import builtins  # Point has a field named range
import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

SCHEMA_ID = "fieldtrust.device-spec/1"


class FieldIssue(ValueError):
    """A consistency error raised by a validator, located relative to the model that raised it.

    ``loc`` is a path such as ``("points", 3, "metric")``; the registry appends it to pydantic's
    own location so a message names the point (index and metric) and the key at fault even
    when the check runs at spec level.
    """

    def __init__(self, loc: tuple[int | str, ...], message: str) -> None:
        self.loc = loc
        self.message = message
        where = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in loc).lstrip(".")
        super().__init__(f"{where}: {message}" if where else message)

ModelId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9\-]{1,63}$")]
MetricName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
SemVer = Annotated[str, StringConstraints(pattern=r"^\d+\.\d+\.\d+$")]
Finite = Annotated[float, Field(allow_inf_nan=False)]  # a NaN scale would turn every reading into NaN


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
    # node-side location: adc input, i2c register or word of the answer, onewire family code
    channel: int | None = Field(default=None, ge=0, le=255)
    # raw -> physical: value = raw * scale + offset
    scale: Finite = 1.0
    offset: Finite = 0.0
    range: tuple[Finite, Finite] | None = None  # valid physical range, inclusive
    poll_interval_s: float = Field(default=60.0, ge=0.1, le=86_400)
    #: this many polls in a row with an identical value mean a frozen sensor: the value is flagged stale
    stuck_after: int | None = Field(default=None, ge=2, le=100_000)
    writable: bool = False
    verified: bool = False  # checked against real hardware (not only the datasheet)
    note: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Point:
        if self.range is not None and self.range[0] > self.range[1]:
            raise FieldIssue(("range",), f"low {self.range[0]:g} is above high {self.range[1]:g}")
        if self.scale == 0:
            raise FieldIssue(("scale",), "must not be 0 (raw values would all read as the offset)")
        if self.stuck_after is not None and self.type in (DataType.BITS, DataType.STRING):
            raise FieldIssue(("stuck_after",), f"only for numbers, not {self.type.value} (a steady state is normal)")
        if self.type == DataType.STRING and self.length is None:
            raise FieldIssue(("length",), "required for type string (in registers, two characters each)")
        if self.type != DataType.STRING and self.length is not None:
            raise FieldIssue(("length",), f"only for type string, not {self.type.value}")
        if self.table is not None and self.table.is_bits and self.type != DataType.BITS:
            raise FieldIssue(("type",), f"a {self.table.value} point must be of type bits, not {self.type.value}")
        if self.bit is not None and self.type != DataType.BITS:
            raise FieldIssue(("bit",), f"only for type bits, not {self.type.value}")
        if self.bit is not None and self.table is not None and self.table.is_bits:
            raise FieldIssue(("bit",), f"a {self.table.value} is one bit already; bit selects a bit of a register")
        if self.type.registers == 1 and self.order.swap_words:
            raise FieldIssue(("order",), f"{self.order.value} swaps words but {self.type.value} has one word")
        if self.type == DataType.STRING and self.order.swap_words:
            raise FieldIssue(("order",), f"{self.order.value}: strings are ABCD or BADC (bytes swapped per word)")
        return self

    @property
    def register_count(self) -> int:
        if self.type == DataType.STRING:
            return self.length or 0
        return self.type.registers

    def in_range(self, value: float) -> bool:
        return self.range is None or self.range[0] <= value <= self.range[1]

    def span(self) -> builtins.range:
        """The Modbus addresses this point occupies (empty for non-Modbus points)."""
        if self.address is None:
            return builtins.range(0)
        return builtins.range(self.address, self.address + max(self.register_count, 1))

    def shares_register_with(self, other: Point) -> bool:
        """Whether two overlapping points may legitimately read the same registers.

        Allowed: different bits of one register, or the same value read twice (same span,
        type and order) with a different scale, e.g. pressure in bar and water level in m.
        """
        if self.span() != other.span():
            return False
        if self.type == DataType.BITS and other.type == DataType.BITS:
            one_bit_each = self.table is not None and self.table.is_bits
            return one_bit_each or (self.bit or 0) != (other.bit or 0)
        return (self.type, self.order, self.length) == (other.type, other.order, other.length)


class LineProtocol(BaseModel):
    """A serial line protocol: optional request string, and a regex with named groups (see device_specs.line_codec)."""

    model_config = ConfigDict(extra="forbid")
    request: str | None = None  # sent before each read (escapes such as \r\n allowed); none: the device talks unasked
    pattern: str  # Python regex, searched in each line; each point's ``field`` names a group
    terminator: str = Field(default="\n", min_length=1)
    #: the line as the device writes it, a Python format string over the pattern's groups (simulators use it)
    format: str | None = None
    #: xor8-hex: group ``checksum`` holds the XOR of the characters of group ``checked`` as two hex digits
    checksum: Literal["xor8-hex"] | None = None


def _addr(p: Point) -> str:
    return f"{p.address} (0x{p.address:04X})" if p.address is not None else "-"


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
    #: 7-bit bus address of an i2c device (e.g. 0x44 for an SHT3x with ADDR low); i2c only
    i2c_address: int | None = Field(default=None, ge=0x08, le=0x77)

    @model_validator(mode="after")
    def _consistent(self) -> DeviceSpec:
        self._check_interface_keys()
        seen: dict[str, int] = {}
        for i, p in enumerate(self.points):
            if p.metric in seen:
                raise FieldIssue(("points", i, "metric"), f"duplicate name (also points[{seen[p.metric]}])")
            seen[p.metric] = i
            self._check_point_location(i, p)
        if self.interface.is_modbus:
            self._check_overlaps()
        if self.interface == Interface.SERIAL_LINE:
            self._check_line_fields()
        return self

    def _check_interface_keys(self) -> None:
        iface = self.interface.value
        if self.interface == Interface.MODBUS_RTU and self.serial is None:
            raise FieldIssue(("serial",), "required for modbus-rtu (baud, parity, stop bits, unit id)")
        if self.serial is not None and self.interface not in (Interface.MODBUS_RTU, Interface.SERIAL_LINE):
            raise FieldIssue(("serial",), f"only for modbus-rtu and serial-line, not {iface}")
        if self.interface == Interface.SERIAL_LINE and self.line is None:
            raise FieldIssue(("line",), "required for serial-line (request, pattern, terminator)")
        if self.line is not None and self.interface != Interface.SERIAL_LINE:
            raise FieldIssue(("line",), f"only for serial-line, not {iface}")
        if self.interface == Interface.I2C and self.i2c_address is None:
            raise FieldIssue(("i2c_address",), "required for i2c (the 7-bit device address, e.g. 0x44)")
        if self.i2c_address is not None and self.interface != Interface.I2C:
            raise FieldIssue(("i2c_address",), f"only for i2c, not {iface}")
        if self.timing.max_response_ms > self.timing.response_timeout_ms:
            raise FieldIssue(
                ("timing", "max_response_ms"),
                f"{self.timing.max_response_ms} is above response_timeout_ms {self.timing.response_timeout_ms}",
            )

    def _check_point_location(self, i: int, p: Point) -> None:
        iface = self.interface.value
        if self.interface.is_modbus:
            for key in ("table", "address"):
                if getattr(p, key) is None:
                    raise FieldIssue(("points", i, key), f"required for {iface}")
            if p.address is not None and p.address + max(p.register_count, 1) > 65536:
                raise FieldIssue(("points", i, "address"), f"{p.register_count} registers from {p.address} pass 65535")
        else:
            for key in ("table", "address"):
                if getattr(p, key) is not None:
                    raise FieldIssue(("points", i, key), f"only for Modbus interfaces, not {iface}")
        if self.interface == Interface.SERIAL_LINE:
            if not p.field:
                raise FieldIssue(("points", i, "field"), "required for serial-line (a named group of line.pattern)")
        elif p.field is not None:
            raise FieldIssue(("points", i, "field"), f"only for serial-line, not {iface}")
        node_side = self.interface in (Interface.ADC, Interface.I2C, Interface.ONEWIRE)
        if node_side and p.channel is None:
            raise FieldIssue(("points", i, "channel"), f"required for {iface} (see docs/device-spec-format.md)")
        if not node_side and p.channel is not None:
            raise FieldIssue(("points", i, "channel"), f"only for adc, i2c and onewire, not {iface}")

    def _check_overlaps(self) -> None:
        """Two points may read the same register only as bits of it, or as the same value twice."""
        for i, p in enumerate(self.points):
            for j in range(i):
                q = self.points[j]
                if p.table != q.table or not set(p.span()) & set(q.span()) or p.shares_register_with(q):
                    continue
                raise FieldIssue(
                    ("points", i, "address"),
                    f"{p.type.value} {p.order.value} at {_addr(p)} overlaps points[{j}] ({q.metric}), "
                    f"{q.type.value} {q.order.value} at {_addr(q)} in the {q.table.value if q.table else ''} table; "
                    "registers may be shared only by different bits of one register or by the same value read "
                    "twice (same span, type and order)",
                )

    def _check_line_fields(self) -> None:
        assert self.line is not None
        try:
            groups = set(re.compile(self.line.pattern).groupindex)
        except re.error as exc:
            raise FieldIssue(("line", "pattern"), f"not a valid regular expression: {exc}") from None
        for i, p in enumerate(self.points):
            if p.field not in groups:
                raise FieldIssue(
                    ("points", i, "field"),
                    f"{p.field!r} is not a named group of line.pattern (groups: {', '.join(sorted(groups)) or 'none'})",
                )
        self._check_line_text(groups)

    def _check_line_text(self, groups: set[str]) -> None:
        """Escapes that give bytes, checksum groups that exist, and a format whose lines the pattern reads back."""
        from device_specs import line_codec  # it imports this module

        assert self.line is not None
        for key in ("request", "terminator", "format"):
            text = getattr(self.line, key)
            try:
                if text is not None:
                    line_codec.unescape(text)
            except ValueError as exc:
                raise FieldIssue(("line", key), f"not bytes: {exc}") from None
        if self.line.checksum is not None and not {"checked", "checksum"} <= groups:
            raise FieldIssue(("line", "pattern"), f"{self.line.checksum} needs the groups 'checked' and 'checksum'")
        if self.line.format is None:
            return
        try:
            unknown = set(line_codec.format_fields(self.line.format)) - groups
        except ValueError as exc:
            raise FieldIssue(("line", "format"), str(exc)) from None
        if unknown:
            raise FieldIssue(("line", "format"), f"{', '.join(sorted(unknown))}: not a named group of line.pattern")
        codec = line_codec.LineCodec(self)
        try:
            line = codec.render(codec.sample_values())
        except (ValueError, KeyError, IndexError) as exc:
            raise FieldIssue(("line", "format"), f"cannot write a line with it: {exc}") from None
        if codec.values(line.removesuffix(codec.terminator)) is None:
            raise FieldIssue(("line", "format"), f"writes {line!r}, which line.pattern does not read back")

    @property
    def key(self) -> str:
        """``model@version``: how configs and messages name a spec."""
        return f"{self.model}@{self.version}"

    def point(self, metric: str) -> Point:
        for p in self.points:
            if p.metric == metric:
                return p
        raise KeyError(f"{self.model} has no point {metric!r}")
