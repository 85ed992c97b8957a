"""A serial line-protocol sensor on its own port (pyserial): send the request if there is one, read text lines.

Waiting uses ``poll()`` on the port and looks at the abort flag every ABORT_CHECK_S (the
:class:`~edge_agent.bus.serial_port.SerialPort` the RTU transport uses too), so a stopping bus
never waits out a timeout; pyserial's ``read_until`` would block for the whole timeout and could
not tell noise from a reading.

Polled sensors: stale input is thrown away, the request goes out, and lines are read until one is
a reading or the timeout passes.  Free-running sensors talk unasked, and what waits in the input
buffer may be minutes old (the port is read once per poll, and the sensor may have died since):
every buffered line is discarded, the line in progress is skipped to its terminator, and the next
complete line is the reading, so a value stamped when read was measured then.  When several
complete lines arrive together the latest reading wins.  A line that is not a reading (noise, a
bad checksum, another format) is counted in ``garbage_lines`` and skipped: reading resumes after
its terminator, so a burst of noise costs the line it hit and no more.  Bytes that run past
MAX_LINE without a terminator are noise too, and the next terminator resynchronises.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

import serial

from edge_agent.bus.serial_port import SerialPort
from edge_agent.bus.transport import FrameError, LinkError, Timeout

T = TypeVar("T")

MAX_LINE = 512
#: a line still arriving when the timeout passes may finish while its bytes keep coming this close together
_QUIET_CHARS, _MIN_QUIET_S = 10, 0.02
#: what the transport counts, present from the start: readings taken, lines skipped as noise, lines never used
LINE_COUNTERS = ("lines", "garbage_lines", "discarded_lines")


class LineTransport:
    """One serial port with one line sensor.  Not thread-safe: the bus scheduler's thread is its only user."""

    def __init__(self, port: str, baud: int = 9600, parity: str = "N", stop_bits: int = 1, data_bits: int = 8) -> None:
        self._port = SerialPort(port, baud, parity, stop_bits, data_bits)
        self.port = port
        self.baud = baud
        self.parity = parity
        self.stop_bits = stop_bits
        self.data_bits = data_bits
        self.char_s = (1 + data_bits + (parity != "N") + stop_bits) / baud
        self.description = f"serial {port} {baud} {data_bits}{parity}{stop_bits}"
        self.counters: Counter[str] = Counter(dict.fromkeys(LINE_COUNTERS, 0))
        self._synced = False  # the last byte seen ended a line, so the next byte starts one
        self._last_byte = 0.0

    def abort(self) -> None:
        """From any thread: end a waiting read with Cancelled and refuse new ones (shutdown)."""
        self._port.abort()

    # -- port -------------------------------------------------------------------------------
    def _open(self) -> serial.Serial:
        if self._port.serial is None:
            ser = self._port.open()
            self._synced = False  # we may join the sensor in the middle of a line
            return ser
        return self._port.serial

    def close(self) -> None:
        self._port.close()

    # -- one reading --------------------------------------------------------------------------
    def read_line(self, request: bytes | None, terminator: bytes, accept: Callable[[bytes], T | None],
                  timeout_s: float) -> tuple[T, float]:
        """The next reading: ``accept(line)`` for a line without its terminator, None if it is not one.

        Returns the accepted value and the seconds from the start of the read to its line's end.
        Raises Timeout (silence), FrameError (only noise or an unfinished line), LinkError or Cancelled.
        """
        try:
            return self._read_line(request, terminator, accept, timeout_s)
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise LinkError(f"{self.port}: {exc}") from None

    def _read_line(self, request: bytes | None, terminator: bytes, accept: Callable[[bytes], T | None],
                   timeout_s: float) -> tuple[T, float]:
        self._port.check_aborted()
        ser = self._open()
        self._discard_buffered(ser, terminator)
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        synced = self._synced
        if request is not None:
            ser.write(request)
            deadline += len(request) * self.char_s
            synced = True  # the answer starts a line
        buf = bytearray()
        garbage = 0
        found: T | None = None
        quiet_s = max(_QUIET_CHARS * self.char_s, _MIN_QUIET_S)
        while found is None:
            now = time.monotonic()
            wait = max(deadline, self._last_byte + quiet_s) - now if buf else deadline - now
            if wait <= 0 or not self._port.wait_readable(wait):
                break
            buf += ser.read(max(1, ser.in_waiting))
            self._last_byte = time.monotonic()
            *lines, rest = bytes(buf).split(terminator)
            buf = bytearray(rest)
            for line in lines:
                if not synced:  # the tail of a line that began before we listened
                    synced = True
                    deadline = max(deadline, time.monotonic() + timeout_s)  # a whole line is due from here
                    continue
                value = accept(line)
                if value is None:
                    garbage += 1
                elif found is not None:
                    self.counters["discarded_lines"] += 1  # superseded by a later reading of the same burst
                    found = value
                else:
                    found = value
            if len(buf) > MAX_LINE:
                garbage += 1
                buf.clear()
                synced = False
        self.counters["garbage_lines"] += garbage
        self._synced = synced and not buf
        if found is not None:
            self.counters["lines"] += 1
            return found, self._last_byte - t0
        if buf:
            raise FrameError(f"{self.port}: unfinished line {bytes(buf[:40])!r} (terminator {terminator!r})")
        if garbage:
            raise FrameError(f"{self.port}: {garbage} line(s) of noise and no reading in {timeout_s * 1000:.0f} ms")
        raise Timeout(f"{self.port}: no {'answer' if request else 'line'} within {timeout_s * 1000:.0f} ms")

    def _discard_buffered(self, ser: serial.Serial, terminator: bytes) -> None:
        """Throw away what arrived before this read: late answers, or lines of a free-running sensor."""
        waiting = ser.in_waiting
        if not waiting:
            return
        data = ser.read(waiting)
        self._last_byte = time.monotonic()
        self.counters["discarded_lines"] += data.count(terminator)
        self._synced = data.endswith(terminator)
