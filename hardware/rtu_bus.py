"""One RS485 multi-drop line of simulated Modbus RTU devices, reached through a pseudo-terminal.

The master opens :attr:`RtuBusSimulator.port` (the slave end of a pty pair) like a USB-RS485
adapter.  The simulator keeps both ends of the pair open for its whole life, so the master may
close and reopen the port, and keeps the line in raw mode so bytes pass unchanged (see
:mod:`hardware.pty_port` for why masters using pymodbus's serial client open it with parity N).

A pty delivers bytes instantly, so the line's timing is modelled: each byte occupies the line
for one character time (``bits_per_char / baud``); a request counts as complete only after the
line has been silent for 3.5 characters (1.75 ms above 19200 baud) past its last byte; the
device then waits ``turnaround_ms`` (plus any ``late_ms`` fault) and its answer is written when
its last character would reach the master.  Answers are scheduled, not slept on, so a late
device does not hold up the others: the line stays free while it thinks.  Frames are delimited
by that silence, so the line resynchronises after noise as a real slave does.

Waiting uses ``select`` on the pty and a wake pipe with exact timeouts: no polling, and
:meth:`stop` interrupts any wait.  The bus thread asks the kernel for 1 µs timer slack and aims
each write early by the oversleep it has measured, so at 115200 baud the line runs within a few
percent of its theoretical rate.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import itertools
import logging
import os
import time

from device_specs.schema import Parity
from hardware.modbus_pdu import answer, broadcast, crc16, rtu_request_length
from hardware.sim_device import SimulatedDevice
from hardware.sim_stats import SimStats
from hardware.sim_thread import PtySimulator

log = logging.getLogger(__name__)


def char_time(baud: int, parity: str = "E", stop_bits: int = 1, data_bits: int = 8) -> float:
    """Seconds one character occupies the line (start + data + parity + stop bits)."""
    return (1 + data_bits + (0 if Parity(parity) == Parity.NONE else 1) + stop_bits) / baud


def frame_gap(baud: int, parity: str = "E", stop_bits: int = 1) -> float:
    """The 3.5-character silence that ends a frame; fixed at 1.75 ms above 19200 baud (Modbus spec)."""
    return 0.00175 if baud > 19200 else 3.5 * char_time(baud, parity, stop_bits)


class RtuBusSimulator(PtySimulator):
    """Devices sharing one serial line; see the module docstring for the timing model."""

    kind = "bus simulator"

    def __init__(self, devices: list[SimulatedDevice], baud: int = 9600, parity: str = "E", stop_bits: int = 1,
                 turnaround_ms: float = 0.0) -> None:
        super().__init__()
        units = [d.unit_id for d in devices]
        if len(set(units)) != len(units):
            raise ValueError(f"unit ids must differ on one line; got {units}")
        if baud <= 0:
            raise ValueError(f"baud must be positive; got {baud}")
        if stop_bits not in (1, 2):
            raise ValueError(f"stop_bits must be 1 or 2; got {stop_bits}")
        if turnaround_ms < 0:
            raise ValueError(f"turnaround_ms must be >= 0; got {turnaround_ms}")
        self.devices = {d.unit_id: d for d in devices}
        self.baud = baud
        self.parity = Parity(parity.upper()[:1]).value
        self.stop_bits = stop_bits
        self.turnaround_s = turnaround_ms / 1000.0
        self.char_s = char_time(baud, self.parity, stop_bits)
        self.gap_s = frame_gap(baud, self.parity, stop_bits)
        self.stats = SimStats()
        self._oversleep_s = 0.0  # how early to aim a timed write so that it lands on time
        self._pending: list[tuple[float, int, bytes]] = []  # responses by arrival time
        self._sequence = itertools.count()

    @property
    def line(self) -> str:
        """The line settings as usually written, e.g. ``9600 8E1``."""
        return f"{self.baud} 8{self.parity}{self.stop_bits}"

    def _open(self) -> None:
        super()._open()
        self._pending.clear()

    def _thread_name(self) -> str:
        return f"rtu-bus {self.port}"

    # -- the line -------------------------------------------------------------------------------
    def _run(self) -> None:
        _tight_timer_slack()
        buf = bytearray()
        line_free = 0.0  # when the last byte seen so far finished crossing the line
        while not self._stopping.is_set():
            deadlines = [line_free + self.gap_s] if buf else []
            if self._pending:
                deadlines.append(self._pending[0][0] - self._oversleep_s)
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            data = self._wait_input(timeout)
            if data is None:
                return
            if data:
                line_free = max(line_free, time.monotonic()) + len(data) * self.char_s
                buf += data
            self._send_due()
            if buf and time.monotonic() >= line_free + self.gap_s:
                frame = bytes(buf)
                buf.clear()
                try:
                    self._serve(frame, line_free + self.gap_s)
                except Exception:  # a simulator bug must not take the line down
                    log.exception("rtu bus %s: failed to serve %s", self.port, frame.hex())

    def _serve(self, frame: bytes, complete_at: float) -> None:
        """Answer one frame: schedule the response for when its last byte would reach the master."""
        count = self.stats.count
        count("requests")
        expected = rtu_request_length(frame)
        if len(frame) < 4 or crc16(frame[:-2]) != frame[-2:] or (expected is not None and expected != len(frame)):
            count("ignored")
            return
        unit, pdu = frame[0], frame[1:-2]
        if unit == 0:
            count("broadcasts")
            broadcast(list(self.devices.values()), pdu)
            return
        device = self.devices.get(unit)
        if device is None:
            count("ignored")
            return
        faults = device.faults
        if faults.no_answer or not faults.online():
            count("silenced")
            return
        response = bytes((unit,)) + answer(device, pdu)
        response += crc16(response)
        count("answered")
        if response[1] & 0x80:
            count("exceptions")
        if faults.roll(faults.crc_error_rate):
            count("crc_errors_sent")
            response = response[:-2] + bytes(b ^ 0x5A for b in response[-2:])
        if faults.roll(faults.garbage_rate):
            count("garbage_sent")
            response = faults.noise(response)
        arrives = complete_at + self.turnaround_s + faults.late_ms / 1000.0 + len(response) * self.char_s
        heapq.heappush(self._pending, (arrives, next(self._sequence), response))

    def _send_due(self) -> None:
        """Write every scheduled response whose time has come (aimed early by the usual oversleep)."""
        assert self._pty is not None
        while self._pending and self._pending[0][0] - self._oversleep_s <= time.monotonic():
            arrives, _, response = heapq.heappop(self._pending)
            try:
                os.write(self._pty.fd, response)
            except OSError as exc:  # the master stopped reading and the pty is full: the answer is lost
                log.warning("rtu bus %s: answer dropped: %s", self.port, exc)
            late = time.monotonic() - arrives
            if abs(late) < 0.002:  # learn from timer wake-ups, not from a slow request
                self._oversleep_s = max(0.0, min(0.001, self._oversleep_s + 0.2 * late))


def _tight_timer_slack() -> None:
    """Ask Linux to wake this thread within 1 µs of its timeouts (default slack is 50 µs)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK, in ns
