"""Raw Modbus registers <-> physical values, for every data type and byte/word order.

Both sides use this one codec: the edge agent decodes what a device answers, the simulators
encode what a device would hold.  Values are ``raw * scale + offset``.  The byte order names
follow docs/device-spec-format.md: A is the most significant byte of the value, and registers
are listed in address order, e.g. float32 123.456 is ``[0x42F6, 0xE979]`` in ABCD and
``[0xE979, 0x42F6]`` in CDAB.
"""

from __future__ import annotations

import math
import struct

from device_specs.schema import ByteOrder, DataType, Point

_STRUCT = {
    DataType.INT16: "h", DataType.UINT16: "H",
    DataType.INT32: "i", DataType.UINT32: "I",
    DataType.INT64: "q", DataType.UINT64: "Q",
    DataType.FLOAT32: "f", DataType.FLOAT64: "d",
}


class DecodeError(ValueError):
    """Registers cannot be turned into a value for this point."""


class EncodeError(ValueError):
    """A value cannot be held by this point's registers (not finite, out of range, not ASCII)."""


def _to_wire(big_endian: bytes, order: ByteOrder) -> bytes:
    """Rearrange a big-endian (ABCD) byte string into ``order``; the mapping is its own inverse."""
    words = [big_endian[i : i + 2] for i in range(0, len(big_endian), 2)]
    if order.swap_words:
        words.reverse()
    if order.swap_bytes:
        words = [w[::-1] for w in words]
    return b"".join(words)


def registers_to_bytes(registers: list[int]) -> bytes:
    """Registers as the bytes on the wire (each register big-endian, as Modbus sends it)."""
    return b"".join(struct.pack(">H", r) for r in registers)


def bytes_to_registers(data: bytes) -> list[int]:
    """Bytes on the wire as registers; an odd trailing byte is padded with 0x00."""
    if len(data) % 2:
        data += b"\x00"
    return [struct.unpack(">H", data[i : i + 2])[0] for i in range(0, len(data), 2)]


def decode_raw(point: Point, registers: list[int]) -> int | float | str | bool:
    """The raw value (before scale/offset) held in ``registers`` for ``point``."""
    need = max(point.register_count, 1)
    if len(registers) != need:
        raise DecodeError(f"{point.metric}: expected {need} registers, got {len(registers)}")
    for r in registers:
        if not isinstance(r, int) or isinstance(r, bool) or not 0 <= r <= 0xFFFF:
            raise DecodeError(f"{point.metric}: {r!r} is not a 16-bit register value")
    if point.type == DataType.BITS:
        if point.table is not None and point.table.is_bits:
            return bool(registers[0])
        return bool((registers[0] >> (point.bit or 0)) & 1)
    wire = registers_to_bytes(registers)
    if point.type == DataType.STRING:
        data = _to_wire(wire, ByteOrder.BADC) if point.order.swap_bytes else wire
        return data.split(b"\x00", 1)[0].decode("ascii", errors="replace").strip()
    value = struct.unpack(">" + _STRUCT[point.type], _to_wire(wire, point.order))[0]
    if isinstance(value, float) and not math.isfinite(value):
        raise DecodeError(f"{point.metric}: registers hold {value} (not a finite number)")
    return value


def decode(point: Point, registers: list[int]) -> int | float | str | bool:
    """The physical value of ``point`` held in ``registers``.

    Integer registers with an integral scale and offset stay exact ints (a uint64 energy
    counter must not lose its last digits to a float); everything else is a float rounded to
    10 decimals, which drops binary noise such as 23.400000000000002.
    """
    raw = decode_raw(point, registers)
    if isinstance(raw, (str, bool)):
        return raw
    if isinstance(raw, int) and point.scale.is_integer() and point.offset.is_integer():
        return raw * int(point.scale) + int(point.offset)
    return round(raw * point.scale + point.offset, 10)


def encode_raw(point: Point, raw: int | float | str | bool) -> list[int]:
    """Registers holding raw value ``raw`` for ``point`` (used by simulators and writes)."""
    if point.type == DataType.BITS:
        if point.table is not None and point.table.is_bits:
            return [1 if raw else 0]
        return [(1 << (point.bit or 0)) if raw else 0]
    if point.type == DataType.STRING:
        return _encode_string(point, str(raw))
    code = _STRUCT[point.type]
    if isinstance(raw, str):
        raise EncodeError(f"{point.metric}: {point.type.value} cannot hold the text {raw!r}")
    if not math.isfinite(raw):
        raise EncodeError(f"{point.metric}: {raw} is not a finite number")
    try:
        packed = struct.pack(">" + code, float(raw) if code in "fd" else int(raw))
    except (struct.error, OverflowError) as exc:
        raise EncodeError(f"{point.metric}: {raw!r} does not fit {point.type.value}: {exc}") from None
    return bytes_to_registers(_to_wire(packed, point.order))


def _encode_string(point: Point, text: str) -> list[int]:
    size = 2 * (point.length or 0)
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError:
        raise EncodeError(f"{point.metric}: {text!r} is not ASCII") from None
    if len(data) > size:
        raise EncodeError(f"{point.metric}: {text!r} is longer than {size} characters")
    data = data.ljust(size, b"\x00")
    return bytes_to_registers(_to_wire(data, ByteOrder.BADC) if point.order.swap_bytes else data)


def encode(point: Point, value: int | float | str | bool) -> list[int]:
    """Registers for physical ``value``: the inverse of :func:`decode`.

    Integer types round to the nearest raw step and saturate at the type's limits, as a real
    device clamps a reading it cannot represent; NaN and infinity raise :class:`EncodeError`.
    """
    if isinstance(value, (str, bool)) or point.type in (DataType.BITS, DataType.STRING):
        return encode_raw(point, value)
    if not math.isfinite(value):
        raise EncodeError(f"{point.metric}: {value} is not a finite number")
    if isinstance(value, int) and point.scale.is_integer() and point.offset.is_integer() and point.scale in (1, -1):
        raw: int | float = (value - int(point.offset)) * int(point.scale)  # exact for 64-bit counters
    else:
        raw = (float(value) - point.offset) / point.scale
    if point.type in (DataType.FLOAT32, DataType.FLOAT64):
        return encode_raw(point, raw)
    lo, hi = _int_bounds(point.type)
    return encode_raw(point, max(lo, min(hi, round(raw))))


def _int_bounds(dt: DataType) -> tuple[int, int]:
    bits = 16 * dt.registers
    if dt.value.startswith("u"):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
