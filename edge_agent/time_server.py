"""Time for the sensor nodes: a small SNTP server (RFC 4330) answering from the gateway's clock.

Nodes on a farm's Wi-Fi often cannot reach an NTP server on the internet, but they always reach
their gateway, whose clock is disciplined by chrony or systemd-timesyncd whenever it has a link.
Every node message says how old the node's last sync is, so a node that syncs here stamps its
readings with the gateway's time.

The answer must never hand out a time the gateway itself does not trust: while the kernel says
the clock is unsynchronised (``edge_agent.clock``), replies carry leap indicator 3 ("alarm") and
stratum 16, which RFC 4330/5905 clients, the firmware's own query among them
(``firmware/hal.py``), discard.  MicroPython's stock ``ntptime`` reads only the transmit time and
ignores both; that is why the firmware does not use it.  While synchronised the server says
stratum 2: the upstream's own stratum is not known here, and clients use it only to tell a
synchronised server from one that is not.  The kernel's error bound goes into the root dispersion.

Only client requests (mode 3, versions 1-4, at least 48 bytes) are answered; everything else is
counted and dropped, so the server cannot be used to reflect traffic at someone else.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable

from edge_agent import clock
from edge_agent.listeners import BIND_RETRY_S, bind_failure

log = logging.getLogger(__name__)

#: seconds from 1900-01-01 (NTP era 0) to 1970-01-01 (Unix)
NTP_DELTA = 2_208_988_800
PACKET = struct.Struct("!BBbbII4sQQQQ")  # the 48-byte header; extension fields and MACs are ignored
MODE_CLIENT, MODE_SERVER = 3, 4
LEAP_NONE, LEAP_ALARM = 0, 3
STRATUM_SYNCED, STRATUM_UNSYNCED = 2, 16
PRECISION = -20  # about a microsecond: time.time_ns() on Linux
STOP_POLL_S = 0.5


def to_ntp(unix_s: float) -> int:
    """A 64-bit NTP timestamp (32.32 fixed point, era wrapping in 2036) from Unix seconds."""
    return int((unix_s + NTP_DELTA) * 2**32) & 0xFFFF_FFFF_FFFF_FFFF


def from_ntp(stamp: int) -> float:
    """Unix seconds from a 64-bit NTP timestamp (era 0, or era 1 for values below 2024's)."""
    seconds = stamp / 2**32
    if seconds < 3_913_056_000:  # before 2024-01-01 in era 0: read as era 1 (after 2036-02-07)
        seconds += 2**32
    return seconds - NTP_DELTA


def _fixed_16_16(seconds: float) -> int:
    return min(0xFFFF_FFFF, max(0, int(seconds * 65536)))


def reply(request: bytes, received_s: float, now: Callable[[], float], synced: bool,
          error_bound_s: float = 0.0) -> bytes | None:
    """The server's answer to one datagram, or None when it is not an SNTP client request."""
    if len(request) < PACKET.size:
        return None
    first = request[0]
    version, mode = (first >> 3) & 0x7, first & 0x7
    if mode != MODE_CLIENT or not 1 <= version <= 4:
        return None
    poll = struct.unpack_from("!b", request, 2)[0]
    client_transmit = request[40:48]
    leap, stratum = (LEAP_NONE, STRATUM_SYNCED) if synced else (LEAP_ALARM, STRATUM_UNSYNCED)
    head = PACKET.pack(
        (leap << 6) | (version << 3) | MODE_SERVER,
        stratum,
        poll,
        PRECISION,
        0,  # root delay: the gateway's own path to its upstream is not known here
        _fixed_16_16(error_bound_s),  # root dispersion: the kernel's maximum error
        b"FTGW" if synced else b"INIT",
        to_ntp(received_s),  # reference time: the clock was last known good now, or never
        0,  # originate: copied below, byte for byte
        to_ntp(received_s),
        0,  # transmit: set last
    )
    out = bytearray(head)
    out[24:32] = client_transmit
    out[40:48] = struct.pack("!Q", to_ntp(now()))
    return bytes(out)


class SntpServer:
    """A UDP SNTP server on its own thread.  ``port`` is the bound port (0 asks for a free one)."""

    def __init__(self, host: str = "0.0.0.0", port: int = 123, *,
                 clock_synced: Callable[[], bool] = clock.clock_synced,
                 time_fn: Callable[[], float] = time.time) -> None:
        self._addr = (host, port)
        self._clock_synced = clock_synced
        self._time = time_fn
        self.counters: Counter[str] = Counter()
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._synced_cache: tuple[float, bool, float] = (-1e9, False, 0.0)

    @property
    def port(self) -> int | None:
        """The bound UDP port; None while the port could not be bound."""
        sock = self._sock
        return None if sock is None else int(sock.getsockname()[1])

    def all_counters(self) -> dict[str, int]:
        return dict(self.counters)

    def start(self) -> None:
        """Bind (now, so :attr:`port` is known on return; or keep trying on the thread) and serve."""
        if self._thread is not None:
            raise RuntimeError("SNTP server already started")
        if self._bind():
            log.info("SNTP server for nodes on UDP %s:%d", self._addr[0], self.port)
        self._thread = threading.Thread(target=self._run, name="sntp", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            self._sock.close()

    def _bind(self) -> bool:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(self._addr)
        except OSError as exc:
            sock.close()
            if not self.counters["bind_failures"]:
                log.error("%s", bind_failure("the SNTP server", "sntp_port", *self._addr, exc))
            self.counters["bind_failures"] += 1
            return False
        sock.settimeout(STOP_POLL_S)
        self._sock = sock
        return True

    def _clock_state(self) -> tuple[bool, float]:
        """(synchronised, error bound s), asked of the kernel at most once a second."""
        asked_at, synced, bound = self._synced_cache
        mono = time.monotonic()
        if mono - asked_at >= 1.0:
            synced = self._clock_synced()
            state = clock.kernel_clock_state()
            bound = state[2] / 1e6 if state is not None and synced else 0.0
            self._synced_cache = (mono, synced, bound)
        return synced, bound

    def _run(self) -> None:
        while not self._stop.is_set():
            sock = self._sock
            if sock is None:
                if not self._stop.wait(BIND_RETRY_S) and self._bind():
                    log.info("SNTP server for nodes on UDP %s:%d at last", self._addr[0], self.port)
                continue
            try:
                data, addr = sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stop.is_set():
                    return
                self.counters["socket_errors"] += 1
                log.warning("SNTP server: %s", exc)
                self._stop.wait(STOP_POLL_S)
                continue
            received = self._time()
            synced, bound = self._clock_state()
            answer = reply(data, received, self._time, synced, bound)
            if answer is None:
                self.counters["ignored"] += 1
                continue
            try:
                sock.sendto(answer, addr)
            except OSError as exc:
                self.counters["socket_errors"] += 1
                log.debug("SNTP reply to %s failed: %s", addr, exc)
                continue
            self.counters["replies" if synced else "replies_unsynced"] += 1
