"""One thread per physical bus: it owns the port, and nothing else touches it.

The thread polls the bus's devices by deadline from a heap (sleeping until the next due read or
until woken by stop or a write; never a busy-wait), has each device's due points read in as few
steps as its protocol allows (merged Modbus reads, or one line of a serial line sensor: see
:mod:`edge_agent.bus.link`), and hands every cycle's values on as one
:class:`~edge_agent.sample.Sample`, stamped when read.  Writes queued from other threads go out
between polls, on the same line discipline.

A point whose spec gives ``stuck_after: N`` and whose value has been identical for N polls in a
row is flagged ``Q_STALE`` (the value is kept): a frozen sensor still answers, so neither the
breaker nor a range check would notice it.  A missed poll does not break the run.

A device that stops answering trips its circuit breaker and is then only probed, with growing
back-off, so it costs the others almost no line time.  Nothing raised while polling ends the
loop: a failure is counted, and logged once at ERROR when a device goes down and at INFO when it
comes back.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from contract.models import DeviceHealth
from contract.telemetry import Q_CLOCK_UNSYNCED, Q_OUT_OF_RANGE, Q_STALE, record
from device_specs.schema import DeviceSpec, Point
from edge_agent.bus.breaker import Breaker
from edge_agent.bus.link import DeviceReader, open_link
from edge_agent.bus.planner import Decoded
from edge_agent.bus.transport import BusError, Cancelled, ExceptionResponse, LinkError, Timeout
from edge_agent.config import BusConfig, DeviceConfig
from edge_agent.sample import Sample

log = logging.getLogger(__name__)

#: groups falling due within this share of a device's shortest interval are read in the same cycle
COALESCE_SHARE = 0.05
COALESCE_MAX_S = 1.0
#: every counter stats() reports, present from the start (a link adds its own, e.g. garbage_lines)
COUNTERS = (
    "transactions", "timeouts", "crc_errors", "frame_errors", "link_errors", "exceptions", "retries", "cancelled",
    "cycles", "samples", "skipped", "overruns", "writes", "write_errors", "callback_errors", "internal_errors",
    "stale",
)


def _out_of_range(point: Point, value: float | str | bool) -> bool:
    return not isinstance(value, str | bool) and not point.in_range(value)


@dataclass(eq=False)
class _Device:
    cfg: DeviceConfig
    spec: DeviceSpec
    reader: DeviceReader
    breaker: Breaker
    due: dict[float, float] = field(default_factory=dict)  # poll interval -> next due (monotonic)
    repeats: dict[str, tuple[float | str | bool, int]] = field(default_factory=dict)  # metric -> value, polls
    last_good_ms: int | None = None
    errors: int = 0
    state: str = "unknown"

    @property
    def shortest_s(self) -> float:
        return min(self.due) if self.due else math.inf

    def next_wake(self) -> float:
        at = min(self.due.values())
        return max(at, self.breaker.open_until) if self.breaker.open_until is not None else at


@dataclass(eq=False)
class _Write:
    send: Callable[[], None]
    future: Future[None]


class BusScheduler:
    """Owns one physical bus (an RS485 line, a Modbus TCP endpoint or a line sensor's port) and polls its devices."""

    def __init__(
        self,
        bus: BusConfig,
        on_sample: Callable[[Sample], None],
        *,
        clock_synced: Callable[[], bool] = lambda: True,
        time_fn: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self._on_sample = on_sample
        self._clock_synced = clock_synced
        self._time = time_fn
        self._mono = monotonic
        self._link = open_link(bus)
        self._counters: Counter[str] = self._link.counters
        self._counters.update(dict.fromkeys(COUNTERS, 0))
        self._devices: dict[str, _Device] = {}
        for d in bus.devices:
            if not d.enabled:
                continue
            spec = d.load_spec()
            reader = self._link.reader(d, spec)
            if not reader.intervals:
                continue
            base = max(1.0, reader.intervals[0])
            breaker = Breaker(bus.breaker_failures, min(base, bus.breaker_max_backoff_s), bus.breaker_max_backoff_s)
            self._devices[d.id] = _Device(d, spec, reader, breaker)
        self._writes: deque[_Write] = deque()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._internal_logged: set[str] = set()

    # -- public interface -------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread that owns the port."""
        if self._thread is not None:
            raise RuntimeError(f"bus {self.bus.id}: already started")
        self._thread = threading.Thread(target=self._run, name=f"bus-{self.bus.id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling (a transaction waiting for its answer is cut short) and release the port."""
        self._stop.set()
        self._wake.set()
        self._link.abort()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("bus %s: poll thread did not stop within %.1f s", self.bus.id, timeout)

    def device_health(self) -> dict[str, DeviceHealth]:
        return {
            dev_id: DeviceHealth(last_good_ms=d.last_good_ms, errors=d.errors, state=d.state)  # type: ignore[arg-type]
            for dev_id, d in self._devices.items()
        }

    def stats(self) -> dict[str, int]:
        return dict(self._counters)

    def write(self, device_id: str, metric: str, value: float | str | bool) -> Future[None]:
        """Queue a write of ``metric`` (a writable holding point); the bus thread sends it between polls.

        Raises KeyError/ValueError at once for an unknown device or a point that cannot be written;
        the future carries the bus outcome (None, or the :class:`BusError`).
        """
        if self._stop.is_set():
            raise RuntimeError(f"bus {self.bus.id}: stopped")
        dev = self._devices[device_id]
        job = _Write(dev.reader.writer(dev.spec.point(metric), value), Future())
        self._writes.append(job)
        self._wake.set()
        return job.future

    # -- the bus thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._link.close()
            while self._writes:
                self._writes.popleft().future.set_exception(LinkError(f"bus {self.bus.id} stopped"))

    def _loop(self) -> None:
        heap = self._initial_heap()
        seq = len(heap)
        while not self._stop.is_set():
            self._send_writes()
            wait = heap[0][0] - self._mono() if heap else None
            if wait is None or wait > 0:
                self._wake.wait(wait)
                self._wake.clear()
                continue
            _, _, dev = heapq.heappop(heap)
            self._guarded(self._poll, dev)
            seq += 1
            heapq.heappush(heap, (dev.next_wake(), seq, dev))

    def _initial_heap(self) -> list[tuple[float, int, _Device]]:
        """Stagger the devices' phases across the shortest interval, so they do not all fire at t=0."""
        now = self._mono()
        devices = list(self._devices.values())
        heap = []
        for i, dev in enumerate(devices):
            phase = now + dev.reader.intervals[0] * i / len(devices)
            dev.due = dict.fromkeys(dev.reader.intervals, phase)
            heap.append((phase, i, dev))
        heapq.heapify(heap)
        return heap

    def _guarded(self, fn: Callable[[_Device], None], dev: _Device) -> None:
        try:
            fn(dev)
        except Exception as exc:  # the loop must outlive any bug in one poll
            self._counters["internal_errors"] += 1
            key = f"{dev.cfg.id}:{type(exc).__name__}"
            if key not in self._internal_logged:
                self._internal_logged.add(key)
                log.exception("bus %s: polling %s failed unexpectedly (counted, not logged again)",
                              self.bus.id, dev.cfg.id)

    def _due_groups(self, dev: _Device, now: float) -> frozenset[float]:
        """Groups due now (with a small coalescing window); advances their deadlines on the grid."""
        window = min(COALESCE_SHARE * dev.shortest_s, COALESCE_MAX_S)
        due = frozenset(iv for iv, at in dev.due.items() if at <= now + window)
        for iv in due:
            at = dev.due[iv] + iv
            if at <= now:  # fell behind: skip to the next slot of the same grid (keeps groups aligned)
                missed = int((now - at) // iv) + 1
                self._counters["skipped" if dev.breaker.is_open else "overruns"] += missed
                at += missed * iv
            dev.due[iv] = at
        return due

    def _poll(self, dev: _Device) -> None:
        now = self._mono()
        if not dev.breaker.allows(now):
            return
        due = self._due_groups(dev, now)
        if not due:
            return
        probing = dev.breaker.is_open
        self._counters["cycles"] += 1
        records: list[dict] = []
        bt_ms: int | None = None
        t0 = 0.0
        abandoned = False  # after a silent device (or a failed probe) the rest of the cycle is not tried
        all_ok = True
        work = deque(dev.reader.reads(due))
        while work and not self._stop.is_set():
            read = work.popleft()
            decoded: list[Decoded] | None = None
            error: BusError | None = None
            if not abandoned:
                # a device that failed its last read gets no retries: it costs the others less line time
                retries = 0 if dev.breaker.consecutive else None
                try:
                    decoded = dev.reader.read(read, retries)
                except Cancelled:  # shutting down: keep what was read, blame nobody
                    break
                except ExceptionResponse as exc:
                    smaller = dev.reader.refused(read, exc)
                    if smaller:
                        work.extendleft(reversed(smaller))
                        continue
                    error = exc
                except BusError as exc:
                    error = exc
                    abandoned = probing or isinstance(exc, Timeout | LinkError)
            mono = self._mono()
            if bt_ms is None:
                bt_ms, t0 = int(self._time() * 1000), mono
            t_ms = round((mono - t0) * 1000)
            if decoded is not None:
                self._answered(dev)
                dev.last_good_ms = bt_ms + t_ms
                for d in decoded:
                    q = Q_OUT_OF_RANGE if d.value is None or _out_of_range(d.point, d.value) else 0
                    records.append(record(d.point.metric, d.point.unit, d.value, t_ms, q | self._stale(dev, d)))
                continue
            all_ok = False
            if error is not None:
                self._read_failed(dev, mono, error)
            records.extend(record(p.metric, p.unit, None, t_ms) for p in read.points)
        dev.state = "down" if dev.breaker.is_open else ("ok" if all_ok else "degraded")
        if bt_ms is not None and records:
            quality = 0 if self._clock_synced() else Q_CLOCK_UNSYNCED
            self._deliver(Sample(dev.cfg.id, bt_ms, records, quality))

    def _stale(self, dev: _Device, d: Decoded) -> int:
        """Q_STALE once a point with ``stuck_after`` has read the same value that many polls in a row."""
        limit = d.point.stuck_after
        if limit is None or d.value is None:
            return 0
        metric = d.point.metric
        last = dev.repeats.get(metric)
        polls = last[1] + 1 if last is not None and last[0] == d.value else 1
        dev.repeats[metric] = (d.value, polls)
        if polls == limit:
            log.warning("bus %s: device %s: %s has read %r for %d polls in a row; flagged stale until it moves",
                        self.bus.id, dev.cfg.id, metric, d.value, polls)
        elif polls == 1 and last is not None and last[1] >= limit:
            log.info("bus %s: device %s: %s moves again", self.bus.id, dev.cfg.id, metric)
        if polls < limit:
            return 0
        self._counters["stale"] += 1
        return Q_STALE

    def _answered(self, dev: _Device) -> None:
        """The device answered (with values or an exception): it is reachable."""
        if dev.breaker.success():
            log.info("bus %s: device %s (%s) answers again", self.bus.id, dev.cfg.id, dev.reader.where)

    def _read_failed(self, dev: _Device, now: float, error: BusError) -> None:
        dev.errors += 1
        if isinstance(error, ExceptionResponse):  # an answer, if not the one wanted: no reason to back off
            self._answered(dev)
            log.debug("bus %s: device %s: %s", self.bus.id, dev.cfg.id, error)
        elif dev.breaker.failure(now):
            log.error("bus %s: device %s (%s) is down after %d failed reads (%s); probing it every %.0f s "
                      "or less often until it answers", self.bus.id, dev.cfg.id, dev.reader.where,
                      dev.breaker.consecutive, error, dev.breaker.backoff_s())
        else:
            log.debug("bus %s: device %s: %s", self.bus.id, dev.cfg.id, error)

    def _deliver(self, sample: Sample) -> None:
        try:
            self._on_sample(sample)
        except Exception:  # a consumer's bug must not stop the bus
            self._counters["callback_errors"] += 1
            if "on_sample" not in self._internal_logged:
                self._internal_logged.add("on_sample")
                log.exception("bus %s: on_sample raised (counted, not logged again)", self.bus.id)
        else:
            self._counters["samples"] += 1

    def _send_writes(self) -> None:
        while self._writes and not self._stop.is_set():
            job = self._writes.popleft()
            if not job.future.set_running_or_notify_cancel():
                continue
            self._counters["writes"] += 1
            try:
                job.send()
            except Exception as exc:  # a bus error or a bug: the caller's future carries it, the loop goes on
                self._counters["write_errors"] += 1
                job.future.set_exception(exc)
            else:
                job.future.set_result(None)
