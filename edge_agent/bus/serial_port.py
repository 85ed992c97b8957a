"""One serial port as the bus transports hold it: opened on demand, waited on in slices an abort can end.

The port is opened exclusively (a second agent on the same adapter would garble both) with
``timeout=0``, so reads return what has arrived and never block; waiting is ``poll()`` on its
file descriptor, ABORT_CHECK_S at a time, so :meth:`SerialPort.abort` from another thread ends
any wait at once with :class:`~edge_agent.bus.transport.Cancelled`.  A port that cannot be
opened is a :class:`~edge_agent.bus.transport.LinkError`; the transport reopens it on its next use.
"""

from __future__ import annotations

import contextlib
import select
import termios
import threading
import time

import serial

from edge_agent.bus.transport import ABORT_CHECK_S, Cancelled, LinkError

_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
_STOP = {1: serial.STOPBITS_ONE, 2: serial.STOPBITS_TWO}
_BYTESIZE = {7: serial.SEVENBITS, 8: serial.EIGHTBITS}


class SerialPort:
    """The port at ``path`` with its line settings.  Not thread-safe, but for :meth:`abort`."""

    def __init__(self, path: str, baud: int, parity: str = "N", stop_bits: int = 1, data_bits: int = 8) -> None:
        if parity not in _PARITY or stop_bits not in _STOP or data_bits not in _BYTESIZE:
            raise ValueError(f"parity must be N, E or O, stop_bits 1 or 2, data_bits 7 or 8; "
                             f"got {parity!r}, {stop_bits!r}, {data_bits!r}")
        self.path = path
        self.baud = baud
        self.parity = parity
        self.stop_bits = stop_bits
        self.data_bits = data_bits
        #: the open port, or None until :meth:`open` (and again after :meth:`close`)
        self.serial: serial.Serial | None = None
        self._poll: select.poll | None = None
        self._aborted = threading.Event()

    def open(self) -> serial.Serial:
        """The open port, opened now if it was not."""
        if self.serial is None:
            try:
                ser = serial.Serial(self.path, self.baud, bytesize=_BYTESIZE[self.data_bits],
                                    parity=_PARITY[self.parity], stopbits=_STOP[self.stop_bits], timeout=0,
                                    exclusive=True)
            except (serial.SerialException, OSError, ValueError, termios.error) as exc:
                raise LinkError(f"{self.path}: cannot open: {exc}") from None
            self._poll = select.poll()
            self._poll.register(ser.fileno(), select.POLLIN)
            self.serial = ser
        return self.serial

    def close(self) -> None:
        if self.serial is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                self.serial.close()
            self.serial = None
            self._poll = None

    def abort(self) -> None:
        """From any thread: end a waiting read with Cancelled and refuse new ones (shutdown)."""
        self._aborted.set()

    def check_aborted(self) -> None:
        """Raise Cancelled once :meth:`abort` was called."""
        if self._aborted.is_set():
            raise Cancelled(f"{self.path}: aborted")

    def wait_readable(self, seconds: float) -> bool:
        """Wait for input at most ``seconds``, looking at the abort flag every ABORT_CHECK_S."""
        assert self._poll is not None, "open() the port first"
        end = time.monotonic() + seconds
        while True:
            self.check_aborted()
            left = end - time.monotonic()
            if left <= 0:
                return False
            if self._poll.poll(min(left, ABORT_CHECK_S) * 1000):
                return True
