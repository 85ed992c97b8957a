"""Modbus RTU over a serial port (pyserial), paced to the line.

Why not pymodbus's sync client: it detects the end of a response by waiting for silence, which
costs a timeout-sized pause per transaction on a pty or USB adapter.  Here the response length is
known from its first three bytes (unit, function, byte count: exception responses are 5 bytes,
reads 5+N), so a transaction ends the moment its last byte arrives.  The CRC and the response
frame sizes come from pymodbus (``FramerRTU.compute_CRC``, the PDU classes' frame-size rules).

Line discipline: before each request the line must have been silent for 3.5 characters since the
last byte seen (1.75 ms above 19200 baud, per the Modbus serial line spec); stale bytes (late
answers to an earlier request) are discarded first.  After a CRC or framing error the input is
drained until the line is quiet, so the next transaction starts on a frame boundary.
"""

from __future__ import annotations

import time

import serial
from pymodbus.exceptions import NotImplementedException
from pymodbus.framer.rtu import FramerRTU
from pymodbus.pdu import DecodePDU

from edge_agent.bus.serial_port import SerialPort
from edge_agent.bus.transport import CrcError, FrameError, LinkError, Reply, Timeout

_EXCEPTION_FRAME = 5  # unit, function|0x80, code, crc(2)
_HEAD = 3  # unit, function, byte count (or exception code)
#: a frame of unknown length ends after this much silence (USB adapters deliver in bursts)
_UNKNOWN_END_SILENCE_S = 0.02

_RESPONSES = DecodePDU(is_server=False)


def crc16(data: bytes) -> bytes:
    """The Modbus CRC of ``data`` as it goes on the wire (low byte first)."""
    return FramerRTU.compute_CRC(data).to_bytes(2, "big")


def encode_frame(unit: int, pdu: bytes) -> bytes:
    """An RTU frame: unit id, PDU, CRC."""
    body = bytes((unit,)) + pdu
    return body + crc16(body)


def crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and FramerRTU.check_CRC(frame[:-2], int.from_bytes(frame[-2:], "big"))


def bits_per_char(parity: str, stop_bits: int) -> int:
    """Start bit, 8 data bits, parity bit if any, stop bits."""
    return 1 + 8 + (0 if parity == "N" else 1) + stop_bits


def silent_interval_s(baud: int, parity: str = "N", stop_bits: int = 1) -> float:
    """The 3.5-character inter-frame gap; fixed at 1.75 ms above 19200 baud (Modbus over serial line, 2.5.1.1)."""
    if baud > 19200:
        return 0.00175
    return 3.5 * bits_per_char(parity, stop_bits) / baud


class RtuTransport:
    """One RS485 line.  Not thread-safe: the bus scheduler's thread is its only user."""

    def __init__(self, port: str, baud: int = 9600, parity: str = "N", stop_bits: int = 1) -> None:
        self._port = SerialPort(port, baud, parity, stop_bits)
        self.port = port
        self.baud = baud
        self.parity = parity
        self.stop_bits = stop_bits
        self.char_s = bits_per_char(parity, stop_bits) / baud
        self.silence_s = silent_interval_s(baud, parity, stop_bits)
        self.description = f"rtu {port} {baud} 8{parity}{stop_bits}"
        self.discarded_bytes = 0
        self._last_activity = 0.0  # monotonic time of the last byte seen on the line

    def abort(self) -> None:
        self._port.abort()

    # -- port -------------------------------------------------------------------------------
    def _open(self) -> serial.Serial:
        if self._port.serial is None:
            ser = self._port.open()
            self._last_activity = time.monotonic()
            return ser
        return self._port.serial

    def close(self) -> None:
        self._port.close()

    # -- reading ----------------------------------------------------------------------------
    def _read_until(self, n: int, deadline: float) -> bytes:
        """Up to ``n`` bytes, returning early only at ``deadline``."""
        ser = self._port.serial
        assert ser is not None
        buf = bytearray()
        while len(buf) < n:
            if not self._port.wait_readable(deadline - time.monotonic()):
                break
            buf += ser.read(n - len(buf))
        if buf:
            self._last_activity = time.monotonic()
        return bytes(buf)

    def _read_to_silence(self, quiet_s: float, limit_s: float) -> bytes:
        """Whatever arrives until the line has been quiet for ``quiet_s`` (at most ``limit_s``)."""
        ser = self._port.serial
        assert ser is not None
        buf = bytearray()
        end = time.monotonic() + limit_s
        while True:
            if not self._port.wait_readable(min(quiet_s, end - time.monotonic())):
                break
            buf += ser.read(max(1, ser.in_waiting))
        if buf:
            self._last_activity = time.monotonic()
        return bytes(buf)

    def _drain(self, limit_s: float) -> None:
        """Throw away input until the line is quiet: resynchronise on a frame boundary."""
        self.discarded_bytes += len(self._read_to_silence(max(self.silence_s, 0.005), limit_s))

    # -- one transaction --------------------------------------------------------------------
    def transact(self, unit: int, pdu: bytes, reply_len: int | None, timeout_s: float) -> Reply:
        try:
            return self._transact(unit, pdu, reply_len, timeout_s)
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise LinkError(f"{self.port}: {exc}") from None

    def _transact(self, unit: int, pdu: bytes, reply_len: int | None, timeout_s: float) -> Reply:
        self._port.check_aborted()
        ser = self._open()
        stale = ser.in_waiting
        if stale:  # a late answer to an earlier request: not ours, and it was line activity
            self.discarded_bytes += len(ser.read(stale))
            self._last_activity = time.monotonic()
        wait = self._last_activity + self.silence_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        frame = encode_frame(unit, pdu)
        ser.write(frame)
        t0 = time.monotonic()
        request_line_s = len(frame) * self.char_s
        expected = reply_len + 3 if reply_len is not None else None
        deadline = t0 + request_line_s + timeout_s + (expected or _EXCEPTION_FRAME) * self.char_s
        head = self._read_until(_HEAD, deadline)
        if not head:
            raise Timeout(f"unit {unit}: no answer within {timeout_s * 1000:.0f} ms")
        if len(head) < _HEAD:
            self._drain(timeout_s)
            raise FrameError(f"unit {unit}: incomplete frame {head.hex(' ')}")
        size = self._frame_size(unit, pdu[0], head, expected)
        if size is None:
            self._drain(timeout_s)
            raise FrameError(f"unit {unit}: unexpected bytes {head.hex(' ')} in answer to function 0x{pdu[0]:02X}")
        if size > 0:
            deadline = max(deadline, time.monotonic() + (size - _HEAD) * self.char_s + timeout_s)
            rest = self._read_until(size - _HEAD, deadline)
            if len(rest) < size - _HEAD:
                self._drain(timeout_s)
                raise FrameError(f"unit {unit}: frame cut short ({_HEAD + len(rest)} of {size} bytes)")
        else:  # length unknown (an unusual function): the frame ends with the silence
            rest = self._read_to_silence(max(self.silence_s, _UNKNOWN_END_SILENCE_S), timeout_s)
        response = head + rest
        elapsed = time.monotonic() - t0
        if not crc_ok(response):
            self._drain(timeout_s)
            raise CrcError(f"unit {unit}: CRC mismatch in {response.hex(' ')}")
        return Reply(response[1:-2], elapsed, request_line_s + len(response) * self.char_s)

    @staticmethod
    def _frame_size(unit: int, function: int, head: bytes, expected: int | None) -> int | None:
        """Total frame length implied by the first bytes; None if they cannot start our response; 0 if unknown."""
        if head[0] != unit:
            return None
        if head[1] == function | 0x80:
            return _EXCEPTION_FRAME
        if head[1] != function:
            return None
        pdu_class = _RESPONSES.lookupPduClass(head)
        try:
            size = pdu_class.calculateRtuFrameSize(head) if pdu_class is not None else 0
        except NotImplementedException:  # a response pymodbus cannot size: read it to its silence
            size = 0
        if expected is not None and size != expected:
            return None
        return size
