"""A serial line-protocol sensor simulated from its spec, on a pseudo-terminal.

The gateway opens :attr:`LineSensorSimulator.port` (the slave end of a pty pair, see
:mod:`hardware.pty_port`) as it would a USB-RS232 adapter.  A spec without ``line.request`` is
free-running: a line goes out every ``1 / rate_hz`` seconds (default: the spec's
``timing.max_response_ms``, its longest gap between lines) whether anyone listens or not.  A spec
with a request is polled: each time the request's bytes have arrived, one line goes out after
``turnaround_ms``.  Lines are written with ``device_specs.line_codec`` (the gateway's codec) from
``line.format``, with values from :mod:`hardware.signals` bound as the Modbus simulator binds
them, or pinned by a test.

A pty delivers bytes instantly, so the line is timed here: a request counts as received one
character time per byte after it arrived, and each byte of an answer is written on its own when
its last bit would reach the gateway (``bits_per_char / baud`` apart), so a reader sees lines
arrive in pieces as on a real port.  Faults (:class:`~hardware.faults.FaultSet`) that apply to a
line sensor: ``no-answer`` and ``flap`` (silence), ``late`` (an answer, or a free-running line,
comes that much later), ``garbage`` (noise instead of a line or before it), ``crc`` (a wrong
checksum, for specs whose lines carry one) and ``stuck`` (values freeze).  Waiting uses
``select`` with exact timeouts on the pty and a wake pipe: no polling, and :meth:`stop`
interrupts any wait.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Callable

from device_specs.line_codec import LineCodec
from device_specs.schema import DeviceSpec, Interface, Parity, SerialDefaults
from hardware.rtu_bus import char_time
from hardware.signals import SignalModel, stable_key
from hardware.sim_points import SimulatedPoints
from hardware.sim_stats import SimStats
from hardware.sim_thread import PtySimulator

log = logging.getLogger(__name__)

_MAX_RX = 256  # bytes of unmatched input kept while waiting for a request


class LineSensorSimulator(SimulatedPoints, PtySimulator):
    """One line sensor of model ``spec``; its weather comes from ``SignalModel(seed)``."""

    kind = "line sensor simulator"

    def __init__(self, spec: DeviceSpec, seed: int = 0, *, baud: int | None = None, parity: str | None = None,
                 stop_bits: int | None = None, data_bits: int | None = None, rate_hz: float | None = None,
                 turnaround_ms: float = 5.0, clock: Callable[[], float] = time.time,
                 signals: SignalModel | None = None) -> None:
        if spec.interface != Interface.SERIAL_LINE:
            raise ValueError(f"{spec.key}: interface {spec.interface.value} is not serial-line")
        self.codec = LineCodec(spec)
        if self.codec.template is None:
            raise ValueError(f"{spec.key}: the spec has no line.format, so its lines cannot be simulated")
        defaults = spec.serial or SerialDefaults()
        self.baud = baud or defaults.baud
        self.parity = Parity((parity or defaults.parity.value).upper()[:1]).value
        self.stop_bits = stop_bits or defaults.stop_bits
        self.data_bits = data_bits or defaults.data_bits
        if self.baud <= 0 or self.stop_bits not in (1, 2) or self.data_bits not in (7, 8):
            raise ValueError(f"line settings {self.baud} {self.data_bits}{self.parity}{self.stop_bits} are not valid")
        if rate_hz is not None and rate_hz <= 0:
            raise ValueError(f"rate_hz must be positive; got {rate_hz}")
        if turnaround_ms < 0:
            raise ValueError(f"turnaround_ms must be >= 0; got {turnaround_ms}")
        self.char_s = char_time(self.baud, self.parity, self.stop_bits, self.data_bits)
        self.polled = self.codec.request is not None
        self.period_s = 1.0 / rate_hz if rate_hz else spec.timing.max_response_ms / 1000.0
        self.turnaround_s = turnaround_ms / 1000.0
        super().__init__(spec, seed, clock, signals, fault_seed=seed * 1000 + stable_key(spec.model) % 1000,
                         noise_scope="line")
        self.stats = SimStats()
        self.lines_dropped = 0  # lines the pty could not take (nobody reads the port)

    @property
    def line(self) -> str:
        """The line settings as usually written, e.g. ``9600 8N1``."""
        return f"{self.baud} {self.data_bits}{self.parity}{self.stop_bits}"

    def describe(self) -> str:
        if self.polled:
            return f"polled by {self.codec.request.decode('latin-1')!r}"
        return f"free-running at {1 / self.period_s:.3g} lines/s"

    # -- values -----------------------------------------------------------------------------------
    def render(self) -> bytes:
        """The line the sensor writes now (faults aside)."""
        t = self._instant()
        return self.codec.render({p.metric: self._value(p, t) for p in self.spec.points})

    # -- the line -----------------------------------------------------------------------------------
    def _thread_name(self) -> str:
        return f"line-sensor {self.port}"

    def _run(self) -> None:
        assert self._pty is not None
        fd = self._pty.fd
        rx = bytearray()
        rx_done = 0.0  # when the bytes received so far finished crossing the line
        lines: collections.deque[tuple[float, bytes]] = collections.deque()  # (when to start sending, bytes)
        tx = bytearray()
        tx_at = 0.0  # when the next byte of tx reaches the gateway
        next_line = time.monotonic() + self.period_s  # free-running: when the next line is measured
        while not self._stopping.is_set():
            deadlines = [tx_at] if tx else ([lines[0][0]] if lines else [])
            if not self.polled:
                deadlines.append(next_line)
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            data = self._wait_input(timeout)
            if data is None:
                return
            now = time.monotonic()
            if data:
                rx_done = max(rx_done, now) + len(data) * self.char_s
                rx += data
                if self.polled:
                    self._serve_requests(rx, rx_done, lines)
            if not self.polled and now >= next_line:
                self._guarded(self._queue_line, lines, now)
                next_line = max(next_line + self.period_s, now) + self.faults.late_ms / 1000.0
            if not tx and lines and lines[0][0] <= now:
                tx += lines.popleft()[1]
                tx_at = now + self.char_s
            tx_at = self._send_due(fd, tx, tx_at)

    def _serve_requests(self, rx: bytearray, received_at: float, lines: collections.deque[tuple[float, bytes]]) -> None:
        """Answer every complete request in ``rx`` (consumed); keep a bounded tail that may start the next one."""
        request = self.codec.request
        assert request is not None
        while (at := rx.find(request)) >= 0:
            del rx[: at + len(request)]
            self.stats.count("requests")
            self._guarded(self._queue_line, lines, received_at + self.turnaround_s + self.faults.late_ms / 1000.0)
        if len(rx) > _MAX_RX:
            self.stats.count("ignored")
            del rx[: len(rx) - len(request)]

    def _guarded(self, fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception:  # a simulator bug (or a pin the format cannot write) must not take the line down
            log.exception("line sensor %s: failed to write a line", self.port)

    def _queue_line(self, lines: collections.deque[tuple[float, bytes]], start: float) -> None:
        """The line measured now, as the faults let it go out, to be sent from ``start``."""
        faults = self.faults
        if faults.no_answer or not faults.online():
            self.stats.count("silenced")
            return
        line = self.render()
        if self.codec.checksum and faults.roll(faults.crc_error_rate):
            self.stats.count("crc_errors_sent")
            line = self._break_checksum(line)
        if faults.roll(faults.garbage_rate):
            self.stats.count("garbage_sent")
            noisy = faults.noise(line.removesuffix(self.codec.terminator))
            line = (bytes(b & 0x7F for b in noisy) if self.data_bits == 7 else noisy) + self.codec.terminator
        self.stats.count("answered")
        lines.append((start, line))

    def _break_checksum(self, line: bytes) -> bytes:
        text = line.decode("latin-1")
        found = self.codec.pattern.search(text.removesuffix(self.codec.terminator.decode("latin-1")))
        if found is None:
            return line
        lo, hi = found.span("checksum")
        wrong = f"{int(text[lo:hi], 16) ^ 0x5A:02X}"
        return (text[:lo] + wrong + text[hi:]).encode("latin-1")

    def _send_due(self, fd: int, tx: bytearray, tx_at: float) -> float:
        """Write each byte of ``tx`` whose time has come, one character time apart; the next byte's time."""
        while tx and tx_at <= time.monotonic():
            try:
                os.write(fd, tx[:1])
            except OSError:  # the pty is full: nobody reads the port; the rest of this line is lost
                self.lines_dropped += 1
                tx.clear()
                break
            del tx[:1]
            tx_at += self.char_s
        return tx_at
