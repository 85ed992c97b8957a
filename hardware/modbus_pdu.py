"""Modbus PDUs a simulated device answers (functions 1-4 read, 6 and 16 write), shared by RTU and TCP.

Why not pymodbus's server-side PDU classes: they execute against pymodbus datastores inside its
asyncio server, while the simulators need to answer from a :class:`SimulatedDevice` at one
instant and then decide, per answer, to delay, corrupt or drop it.  The PDU layouts are a few
``struct`` lines each, checked in the tests against two independent masters (pymodbus, mbpoll).
The RTU CRC is pymodbus's own (:func:`crc16`), the same one the gateway uses.
"""

from __future__ import annotations

import struct

from pymodbus.framer.rtu import FramerRTU

from device_specs.schema import Table
from hardware.sim_device import IllegalFunction, IllegalValue, ModbusError, SimulatedDevice

READ_TABLES = {1: Table.COIL, 2: Table.DISCRETE, 3: Table.HOLDING, 4: Table.INPUT}
WRITE_FUNCTIONS = (6, 16)
GATEWAY_TARGET_FAILED = 0x0B


def crc16(frame: bytes) -> bytes:
    """The two CRC bytes closing an RTU frame over ``frame`` (pymodbus's implementation)."""
    return FramerRTU.compute_CRC(frame).to_bytes(2, "big")


def rtu_request_length(frame: bytes) -> int | None:
    """Length of an RTU request ADU starting ``frame`` (unit .. CRC), None if not known (yet).

    Known for the functions the simulators serve and for 5/15, so a request can be checked by
    length; other functions are delimited by line silence alone.
    """
    if len(frame) < 2:
        return None
    fn = frame[1]
    if fn in (1, 2, 3, 4, 5, 6):
        return 8
    if fn in (15, 16):
        return 9 + frame[6] if len(frame) >= 7 else None
    return None


def exception_pdu(function: int, code: int) -> bytes:
    return bytes((function | 0x80, code))


def answer(device: SimulatedDevice, pdu: bytes) -> bytes:
    """The response PDU of ``device`` to request ``pdu`` (an exception PDU when it refuses)."""
    if not pdu:
        return exception_pdu(0, IllegalFunction.code)
    fn = pdu[0]
    try:
        if fn in READ_TABLES:
            address, count = _unpack(">HH", pdu)
            table = READ_TABLES[fn]
            values = device.read(table, address, count)
            data = _pack_bits(values) if table.is_bits else struct.pack(f">{count}H", *values)
            return bytes((fn, len(data))) + data
        if fn == 6:
            address, register = _unpack(">HH", pdu)
            device.write(Table.HOLDING, address, [register])
            return pdu[:5]
        if fn == 16:
            if len(pdu) < 6:
                raise IllegalValue("short write request")
            address, count, size = struct.unpack(">HHB", pdu[1:6])
            if size != 2 * count or len(pdu) != 6 + size:
                raise IllegalValue(f"byte count {size} does not match {count} registers")
            device.write(Table.HOLDING, address, list(struct.unpack(f">{count}H", pdu[6:])))
            return pdu[:5]
        raise IllegalFunction(f"function {fn}")
    except ModbusError as exc:
        return exception_pdu(fn, exc.code)


def broadcast(devices: list[SimulatedDevice], pdu: bytes) -> None:
    """Apply a broadcast (unit 0) write to every device; nobody answers a broadcast."""
    if pdu and pdu[0] in WRITE_FUNCTIONS:
        for device in devices:
            answer(device, pdu)


def _unpack(fmt: str, pdu: bytes) -> tuple[int, ...]:
    if len(pdu) != 1 + struct.calcsize(fmt):
        raise IllegalValue(f"function {pdu[0]}: {len(pdu)} byte request")
    return struct.unpack(fmt, pdu[1:])


def _pack_bits(bits: list[int]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)
