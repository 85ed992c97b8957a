"""One RS485 multi-drop line of simulated Modbus RTU devices, reached through a pseudo-terminal.

The master opens :attr:`RtuBusSimulator.port` (the slave end of a pty pair) like a USB-RS485
adapter.  The simulator keeps both ends of the pair open for its whole life, so the master may
close and reopen the port, and keeps the line in raw mode so bytes pass unchanged (see
:mod:`hardware.pty_port` for why masters using pymodbus's serial client open it with parity N).

A pty delivers bytes instantly, so the line's timing is modelled: each byte occupies the line
for one character time (``bits_per_char / baud``); a request counts as complete only after the
line has been silent for 3.5 characters (1.75 ms above 19200 baud) past its last byte; the
device then waits ``turnaround_ms`` (plus any ``late_ms`` fault) and its answer is written when
its last character would reach the master.  Frames are delimited by that silence, so the line
resynchronises after noise as a real slave does.  Waiting uses ``select`` on the pty and a wake
pipe with exact timeouts: no polling, and :meth:`stop` interrupts any wait.  The bus thread asks
the kernel for 1 µs timer slack and aims each answer early by the oversleep it has measured, so
at 115200 baud the line runs within a few percent of its theoretical rate.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import threading
import time

from device_specs.schema import Parity
from hardware.modbus_pdu import answer, broadcast, crc16, rtu_request_length
from hardware.pty_port import PtyPort
from hardware.sim_device import SimulatedDevice
from hardware.sim_stats import SimStats

log = logging.getLogger(__name__)


def char_time(baud: int, parity: str = "E", stop_bits: int = 1, data_bits: int = 8) -> float:
    """Seconds one character occupies the line (start + data + parity + stop bits)."""
    return (1 + data_bits + (0 if Parity(parity) == Parity.NONE else 1) + stop_bits) / baud


def frame_gap(baud: int, parity: str = "E", stop_bits: int = 1) -> float:
    """The 3.5-character silence that ends a frame; fixed at 1.75 ms above 19200 baud (Modbus spec)."""
    return 0.00175 if baud > 19200 else 3.5 * char_time(baud, parity, stop_bits)


class RtuBusSimulator:
    """Devices sharing one serial line; see the module docstring for the timing model."""

    def __init__(self, devices: list[SimulatedDevice], baud: int = 9600, parity: str = "E", stop_bits: int = 1,
                 turnaround_ms: float = 0.0) -> None:
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
        self.port = ""
        self._pty: PtyPort | None = None
        self._wake: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._oversleep_s = 0.0  # running mean of how late a timed wait wakes up

    @property
    def line(self) -> str:
        """The line settings as usually written, e.g. ``9600 8E1``."""
        return f"{self.baud} 8{self.parity}{self.stop_bits}"

    def start(self) -> RtuBusSimulator:
        if self._thread is not None:
            raise RuntimeError("bus simulator already started")
        self._pty = PtyPort()
        self._wake = os.pipe()
        self.port = self._pty.path
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"rtu-bus {self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping = True
        assert self._wake is not None and self._pty is not None
        os.write(self._wake[1], b"x")
        self._thread.join(5.0)
        self._pty.close()
        for fd in self._wake:
            os.close(fd)
        self._thread = self._pty = self._wake = None

    def __enter__(self) -> RtuBusSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the line -------------------------------------------------------------------------------
    def _run(self) -> None:
        assert self._pty is not None and self._wake is not None
        _tight_timer_slack()
        pty, wake = self._pty, self._wake[0]
        master = pty.fd
        watched = [master, wake] + ([pty.watch_fd] if pty.watch_fd is not None else [])
        buf = bytearray()
        line_free = 0.0  # when the last byte seen so far finished crossing the line
        while not self._stopping:
            timeout = None if not buf else max(0.0, line_free + self.gap_s - time.monotonic())
            ready, _, _ = select.select(watched, [], [], timeout)
            if wake in ready:
                return
            if pty.watch_fd in ready:
                pty.handle_watch_events()
            now = time.monotonic()
            if master in ready:
                try:
                    data = os.read(master, 4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:  # cannot happen while we hold the slave end; never spin on it
                    log.error("rtu bus %s: read failed: %s", self.port, exc)
                    select.select([wake], [], [], 0.1)
                    continue
                line_free = max(line_free, now) + len(data) * self.char_s
                buf += data
                continue
            if buf and now >= line_free + self.gap_s:
                frame = bytes(buf)
                buf.clear()
                try:
                    line_free = max(line_free, self._serve(frame, line_free + self.gap_s))
                except Exception:  # a simulator bug must not take the line down
                    log.exception("rtu bus %s: failed to serve %s", self.port, frame.hex())

    def _serve(self, frame: bytes, complete_at: float) -> float:
        """Answer one frame; returns when the line is free again."""
        count = self.stats.count
        count("requests")
        expected = rtu_request_length(frame)
        if len(frame) < 4 or crc16(frame[:-2]) != frame[-2:] or (expected is not None and expected != len(frame)):
            count("ignored")
            return complete_at
        unit, pdu = frame[0], frame[1:-2]
        if unit == 0:
            count("broadcasts")
            broadcast(list(self.devices.values()), pdu)
            return complete_at
        device = self.devices.get(unit)
        if device is None:
            count("ignored")
            return complete_at
        faults = device.faults
        if faults.no_answer or not faults.online():
            count("silenced")
            return complete_at
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
        self._wait_until(arrives)
        if not self._stopping:
            assert self._pty is not None
            os.write(self._pty.fd, response)
        return arrives

    def _wait_until(self, deadline: float) -> None:
        """Sleep until ``deadline`` (monotonic), less the usual oversleep; only :meth:`stop` wakes it early."""
        assert self._wake is not None
        aim = deadline - self._oversleep_s
        while (left := aim - time.monotonic()) > 0 and not self._stopping:
            select.select([self._wake[0]], [], [], left)
        late = time.monotonic() - deadline
        self._oversleep_s = max(0.0, min(0.001, self._oversleep_s + 0.2 * late))


def _tight_timer_slack() -> None:
    """Ask Linux to wake this thread within 1 µs of its timeouts (default slack is 50 µs)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK, in ns
