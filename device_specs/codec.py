"""Raw Modbus registers <-> physical values, for every data type and byte/word order.

Both sides use this one codec: the edge agent decodes what a device answers, the simulators
encode what a device would hold.  Values are ``raw * scale + offset``.
"""

from __future__ import annotations

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


def _to_wire(big_endian: bytes, order: ByteOrder) -> bytes:
    """Rearrange a big-endian (ABCD) byte string into ``order``; the mapping is its own inverse."""
    words = [big_endian[i : i + 2] for i in range(0, len(big_endian), 2)]
    if order.swap_words:
        words.reverse()
    if order.swap_bytes:
        words = [w[::-1] for w in words]
    return b"".join(words)


def registers_to_bytes(registers: list[int]) -> bytes:
    return b"".join(struct.pack(">H", r & 0xFFFF) for r in registers)


def bytes_to_registers(data: bytes) -> list[int]:
    if len(data) % 2:
        data += b"\x00"
    return [struct.unpack(">H", data[i : i + 2])[0] for i in range(0, len(data), 2)]


def decode_raw(point: Point, registers: list[int]) -> int | float | str | bool:
    """The raw value (before scale/offset) held in ``registers`` for ``point``."""
    need = max(point.register_count, 1)
    if len(registers) != need:
        raise DecodeError(f"{point.metric}: expected {need} registers, got {len(registers)}")
    if point.type == DataType.BITS:
        if point.table is not None and point.table.is_bits:
            return bool(registers[0])
        return bool((registers[0] >> (point.bit or 0)) & 1)
    wire = registers_to_bytes(registers)
    if point.type == DataType.STRING:
        data = _to_wire(wire, ByteOrder.BADC) if point.order.swap_bytes else wire
        return data.split(b"\x00", 1)[0].decode("ascii", errors="replace").strip()
    value = struct.unpack(">" + _STRUCT[point.type], _to_wire(wire, point.order))[0]
    if point.type in (DataType.FLOAT32, DataType.FLOAT64) and (value != value or abs(value) == float("inf")):
        raise DecodeError(f"{point.metric}: not a finite number")
    return value


def decode(point: Point, registers: list[int]) -> float | str | bool:
    """The physical value of ``point`` held in ``registers``."""
    raw = decode_raw(point, registers)
    if isinstance(raw, (str, bool)):
        return raw
    value = raw * point.scale + point.offset
    # keep integers exact where scaling allows, and drop float noise such as 23.400000000000002
    if isinstance(value, float):
        value = round(value, 10)
    return value


def encode_raw(point: Point, raw: int | float | str | bool) -> list[int]:
    """Registers holding raw value ``raw`` for ``point`` (used by simulators and writes)."""
    if point.type == DataType.BITS:
        return [1 if raw else 0] if point.table is not None and point.table.is_bits else [
            (1 << (point.bit or 0)) if raw else 0
        ]
    if point.type == DataType.STRING:
        data = str(raw).encode("ascii")[: 2 * (point.length or 0)].ljust(2 * (point.length or 0), b"\x00")
        if point.order.swap_bytes:
            data = _to_wire(data, ByteOrder.BADC)
        return bytes_to_registers(data)
    code = _STRUCT[point.type]
    packed = struct.pack(">" + code, float(raw)) if code in "fd" else struct.pack(">" + code, int(raw))
    return bytes_to_registers(_to_wire(packed, point.order))


def encode(point: Point, value: float | str | bool) -> list[int]:
    """Registers for physical ``value`` (inverse of :func:`decode`, rounding integer types)."""
    if isinstance(value, (str, bool)) or point.type in (DataType.BITS, DataType.STRING):
        return encode_raw(point, value)
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
