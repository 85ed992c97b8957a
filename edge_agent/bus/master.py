"""Modbus functions 0x01-0x04 (reads), 0x06 and 0x10 (writes) over any transport.

Requests are pymodbus PDU classes (their ``encode``), responses are decoded by pymodbus's
``DecodePDU``; this module adds what a field bus needs around them: retries, typed errors and
counters of every attempt, so a bus owner can report what its line is doing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from pymodbus.pdu import DecodePDU, ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsRequest, ReadDiscreteInputsRequest
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

from device_specs.schema import Table
from edge_agent.bus.transport import ExceptionResponse, FrameError, Reply, Transport, with_retries

_READS: dict[Table, type[ModbusPDU]] = {
    Table.COIL: ReadCoilsRequest,
    Table.DISCRETE: ReadDiscreteInputsRequest,
    Table.HOLDING: ReadHoldingRegistersRequest,
    Table.INPUT: ReadInputRegistersRequest,
}
_RESPONSES = DecodePDU(is_server=False)


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Registers (or bits as 0/1) of one read, and the reply's timing."""

    values: list[int]
    reply: Reply


def request_pdu(request: ModbusPDU) -> bytes:
    """Function code followed by the request's data, as pymodbus encodes it."""
    return bytes((request.function_code,)) + request.encode()


def read_reply_len(table: Table, count: int) -> int:
    """Length of the normal response PDU to a read: function, byte count, data."""
    return 2 + ((count + 7) // 8 if table.is_bits else 2 * count)


class Master:
    """A Modbus client over one transport.  One owner thread; no locking of its own."""

    def __init__(self, transport: Transport, timeout_s: float, retries: int = 0) -> None:
        self.transport = transport
        self.timeout_s = timeout_s
        self.retries = retries
        #: every attempt: transactions, timeouts, crc_errors, frame_errors, link_errors, exceptions, retries
        self.counters: Counter[str] = Counter()

    def request(self, unit: int, pdu: bytes, reply_len: int | None, retries: int | None = None) -> Reply:
        """One request with retries on line errors (an exception response is an answer: no retry)."""
        def attempt() -> Reply:
            reply = self.transport.transact(unit, pdu, reply_len, self.timeout_s)
            if reply.pdu[0] == pdu[0] | 0x80:
                raise ExceptionResponse(pdu[0], reply.pdu[1] if len(reply.pdu) > 1 else 0)
            return reply

        return with_retries(self.counters, 1 + (self.retries if retries is None else retries), attempt)

    def read(self, unit: int, table: Table, address: int, count: int, retries: int | None = None) -> ReadResult:
        """Read ``count`` registers (or bits) of ``table`` from ``address``."""
        req = _READS[table](address=address, count=count, dev_id=unit)
        reply = self.request(unit, request_pdu(req), read_reply_len(table, count), retries)
        response = self._decode(reply)
        values = [int(b) for b in response.bits[:count]] if table.is_bits else list(response.registers)
        if len(values) != count:
            self.counters["frame_errors"] += 1
            raise FrameError(f"unit {unit}: asked {count} values, got {len(values)}")
        return ReadResult(values, reply)

    def write_register(self, unit: int, address: int, value: int) -> Reply:
        """Function 0x06; the device echoes the request."""
        pdu = request_pdu(WriteSingleRegisterRequest(address=address, registers=[value], dev_id=unit))
        reply = self.request(unit, pdu, len(pdu))
        if reply.pdu != pdu:
            self.counters["frame_errors"] += 1
            raise FrameError(f"unit {unit}: write echo {reply.pdu.hex(' ')} differs from {pdu.hex(' ')}")
        return reply

    def write_registers(self, unit: int, address: int, values: list[int]) -> Reply:
        """Function 0x10; the device answers with the address and count written."""
        pdu = request_pdu(WriteMultipleRegistersRequest(address=address, registers=values, dev_id=unit))
        reply = self.request(unit, pdu, 5)
        if reply.pdu != pdu[:5]:
            self.counters["frame_errors"] += 1
            raise FrameError(f"unit {unit}: write answer {reply.pdu.hex(' ')} does not confirm {pdu[:5].hex(' ')}")
        return reply

    def _decode(self, reply: Reply) -> ModbusPDU:
        response = _RESPONSES.decode(reply.pdu)
        if response is None:
            self.counters["frame_errors"] += 1
            raise FrameError(f"undecodable response {reply.pdu.hex(' ')}")
        return response

    def close(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        """From any thread: cut short the transaction in progress (shutdown)."""
        self.transport.abort()
