"""What every Modbus transport offers the master, and the typed errors a transaction can end in.

A transport moves one request PDU (function code + data) to a unit and brings back the response
PDU: RTU adds the unit id, CRC and line pacing; TCP adds the MBAP header.  Every failure is one
of the :class:`BusError` subclasses below, so the bus loop can count it and carry on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

T = TypeVar("T")


class BusError(Exception):
    """A transaction failed; the bus (and the loop that owns it) carries on."""


class Timeout(BusError):
    """No complete answer within the response timeout (nobody at that unit id, or too slow)."""


class CrcError(BusError):
    """A frame arrived whose CRC does not match: noise on the line."""


class FrameError(BusError):
    """Bytes arrived that are not the expected response (wrong unit, function or length; garbage)."""


class LinkError(BusError):
    """The port or socket is unavailable or broke; the transport reopens it on the next transaction."""


class Cancelled(BusError):
    """The transport was aborted (the bus is shutting down) while a transaction waited."""


#: the longest a transport waits before looking at its abort flag: bounds how long stop() can take
ABORT_CHECK_S = 0.05


class ExceptionResponse(BusError):
    """The device answered with a Modbus exception (01 illegal function, 02 illegal address, ...)."""

    NAMES = {
        1: "illegal function",
        2: "illegal data address",
        3: "illegal data value",
        4: "server device failure",
        5: "acknowledge",
        6: "server device busy",
        8: "memory parity error",
        10: "gateway path unavailable",
        11: "gateway target failed to respond",
    }

    def __init__(self, function: int, code: int) -> None:
        self.function = function
        self.code = code
        super().__init__(f"exception {code:02d} ({self.NAMES.get(code, 'unknown')}) to function 0x{function:02X}")


@dataclass(frozen=True, slots=True)
class Reply:
    """A response PDU with its timing.

    ``elapsed_s`` runs from handing the request to the port until the response's last byte was
    read; ``line_s`` is the part of it the two frames spend on the wire at the bus's baud rate
    (0 for TCP), so ``device_s`` estimates how long the device itself took.
    """

    pdu: bytes
    elapsed_s: float
    line_s: float = 0.0

    @property
    def device_s(self) -> float:
        return max(0.0, self.elapsed_s - self.line_s)


#: the counter each kind of failure is counted under
COUNTER_OF: dict[type[BusError], str] = {
    Timeout: "timeouts",
    CrcError: "crc_errors",
    FrameError: "frame_errors",
    LinkError: "link_errors",
    ExceptionResponse: "exceptions",
    Cancelled: "cancelled",
}


def with_retries(counters: Counter[str], attempts: int, attempt: Callable[[], T]) -> T:
    """Run ``attempt`` until it succeeds, at most ``attempts`` times, counting every try and failure.

    An exception response is an answer and a cancellation is a shutdown: neither is retried.
    """
    for n in range(attempts):
        counters["transactions"] += 1
        try:
            return attempt()
        except BusError as exc:
            counters[COUNTER_OF.get(type(exc), "errors")] += 1
            if isinstance(exc, ExceptionResponse | Cancelled) or n + 1 == attempts:
                raise
            counters["retries"] += 1
    raise ValueError(f"attempts must be at least 1; got {attempts}")


class Transport(Protocol):
    """One physical link (an RS485 line or a TCP connection) to one or more units."""

    #: a short human description, e.g. ``rtu /dev/ttyUSB0 9600 8E1`` or ``tcp 10.0.0.5:502``
    description: str

    def transact(self, unit: int, pdu: bytes, reply_len: int | None, timeout_s: float) -> Reply:
        """Send ``pdu`` to ``unit``; return the response PDU or raise a :class:`BusError`.

        ``reply_len`` is the length of the normal response PDU when the caller knows it (reads
        and writes), so a transport can tell garbage from a response at its first bytes; ``None``
        means unknown (the transport then waits for the end of the frame).
        """
        ...

    def close(self) -> None:
        """Release the port or socket (a later transaction reopens it)."""
        ...

    def abort(self) -> None:
        """From any thread: end a waiting transaction with :class:`Cancelled` and refuse new ones (shutdown)."""
        ...
