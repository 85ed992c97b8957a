"""Hold one device (real or simulated) to its spec before it goes into the field.

A conformance run reads every point for ``rounds`` rounds with the agent's own merged reads,
then checks what a gateway relies on:

* every point readable, every value inside the spec's physical range;
* the merged reads the agent will use are accepted (a wrong ``max_gap`` or
  ``max_registers_per_read`` in the spec shows up here, not in the field);
* the device's response time (round trip minus the two frames' line time) against the spec's
  ``timing.max_response_ms``: min / median / p95 / max;
* an illegal address is answered with exception 02 and an unsupported function (0x41, from the
  user-defined range) with exception 01, not with silence or garbage;
* every frame's CRC is right, and no answer is malformed.

Reads wait for the longer of the spec's ``timing.response_timeout_ms`` and twice its
``max_response_ms`` (so a slow answer is measured as slow rather than lost), with no retries:
certification must see every failure the device produces.  After a timeout the run waits as long
again, so a late answer cannot be taken for the answer to the next request (RTU has no
transaction ids).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field

from device_specs.codec import DecodeError, decode
from device_specs.schema import DeviceSpec, Point, Table
from edge_agent.bus.master import Master
from edge_agent.bus.planner import Read, ReadPlan
from edge_agent.bus.transport import BusError, ExceptionResponse, Timeout, Transport

UNSUPPORTED_FUNCTION = 0x41  # user-defined range: a sensor that does not implement it must answer 01


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class PointStats:
    metric: str
    unit: str
    reads: int = 0
    ok: int = 0
    in_range: int = 0
    low: float | None = None
    high: float | None = None
    last: float | str | bool | None = None
    errors: list[str] = field(default_factory=list)

    def add(self, point: Point, value: float | str | bool) -> None:
        self.reads += 1
        self.ok += 1
        self.last = value
        if isinstance(value, str | bool):
            self.in_range += 1
            return
        self.low = value if self.low is None else min(self.low, value)
        self.high = value if self.high is None else max(self.high, value)
        self.in_range += point.in_range(value)

    def fail(self, error: str) -> None:
        self.reads += 1
        if error not in self.errors:
            self.errors.append(error)


@dataclass
class Timing:
    samples: int
    min_ms: float | None
    median_ms: float | None
    p95_ms: float | None
    max_ms: float | None
    limit_ms: int


@dataclass
class Report:
    spec: str
    endpoint: str
    unit: int
    rounds: int
    passed: bool
    checks: list[Check]
    timing: Timing
    points: list[PointStats]
    counters: dict[str, int]

    def as_dict(self) -> dict:
        return asdict(self)


def _percentile(sorted_ms: list[float], share: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, min(len(sorted_ms), round(share * len(sorted_ms) + 0.5)))
    return sorted_ms[rank - 1]


def _unused_address(spec: DeviceSpec, table: Table) -> int:
    """A register of ``table`` far from every point: the top of the address space unless a point sits there."""
    taken = {(p.address or 0) + i for p in spec.points if p.table == table for i in range(max(p.register_count, 1))}
    return next(a for a in range(0xFFFF, -1, -1) if a not in taken)


class _Run:
    def __init__(self, spec: DeviceSpec, master: Master, unit: int) -> None:
        self.spec, self.master, self.unit = spec, master, unit
        self.stats = {p.metric: PointStats(p.metric, p.unit) for p in spec.points if p.table is not None}
        self.device_ms: list[float] = []
        self.refused_reads: list[str] = []

    def read(self, table: Table, address: int, count: int) -> list[int]:
        try:
            result = self.master.read(self.unit, table, address, count)
        except Timeout:
            time.sleep(self.master.timeout_s)  # let a late answer arrive and be discarded
            raise
        self.device_ms.append(result.reply.device_s * 1000)
        return result.values

    def planned(self, read: Read) -> None:
        try:
            values = self.read(read.table, read.address, read.count)
        except BusError as exc:
            label = f"{read.table.value} {read.address}+{read.count}"
            if label not in self.refused_reads:
                self.refused_reads.append(f"{label}: {exc}")
            for p in read.points:  # find out which point is at fault
                self.single(p)
            return
        for p in read.points:
            self._record(p, read.slice(p, values))

    def single(self, p: Point) -> None:
        assert p.table is not None and p.address is not None
        try:
            self._record(p, self.read(p.table, p.address, max(p.register_count, 1)))
        except BusError as exc:
            self.stats[p.metric].fail(str(exc))

    def _record(self, p: Point, registers: list[int]) -> None:
        try:
            self.stats[p.metric].add(p, decode(p, registers))
        except DecodeError as exc:
            self.stats[p.metric].fail(str(exc))

    def expect_exception(self, what: str, pdu: bytes, reply_len: int | None, code: int) -> Check:
        name = f"{what} answered with exception {code:02d}"
        try:
            reply = self.master.request(self.unit, pdu, reply_len, retries=0)
        except ExceptionResponse as exc:
            return Check(name, exc.code == code, f"exception {exc.code:02d}")
        except Timeout:
            time.sleep(self.master.timeout_s)
            return Check(name, False, "no answer (silence)")
        except BusError as exc:
            return Check(name, False, f"{type(exc).__name__}: {exc}")
        return Check(name, False, f"answered normally: {reply.pdu.hex(' ')}")


def certify(spec: DeviceSpec, transport: Transport, unit: int, rounds: int = 3) -> Report:
    """Run the conformance checks of ``spec`` against the device at ``unit``; the transport is closed after."""
    if not spec.interface.is_modbus:
        raise ValueError(f"{spec.key}: certify checks Modbus devices; this is {spec.interface.value}")
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1; got {rounds}")
    timeout_s = max(spec.timing.response_timeout_ms, 2 * spec.timing.max_response_ms) / 1000
    master = Master(transport, timeout_s, retries=0)
    run = _Run(spec, master, unit)
    plan = ReadPlan(spec)
    try:
        for _ in range(rounds):
            for read in plan.full_cycle():
                run.planned(read)
        table = next(p.table for p in spec.points if p.table is not None)
        bad_address = _unused_address(spec, table)
        fn = table.function
        illegal_address = run.expect_exception(
            f"illegal address ({table.value} {bad_address})",
            bytes((fn,)) + bad_address.to_bytes(2, "big") + b"\x00\x01", None, 2)
        illegal_function = run.expect_exception(
            f"unsupported function 0x{UNSUPPORTED_FUNCTION:02X}",
            bytes((UNSUPPORTED_FUNCTION, 0, 0, 0, 1)), None, 1)
    finally:
        master.close()
    counters = dict(master.counters)
    points = list(run.stats.values())
    timing = _timing(run.device_ms, spec.timing.max_response_ms)
    unreadable = [f"{s.metric} ({s.reads - s.ok}/{s.reads} failed: {s.errors[0]})" for s in points if s.ok < s.reads]
    outside = [f"{s.metric} ({s.low}..{s.high})" for s in points if s.in_range < s.ok]
    garbled = counters.get("crc_errors", 0) + counters.get("frame_errors", 0)
    checks = [
        Check("every point readable", not unreadable,
              "; ".join(unreadable) or f"{len(points)} points x {rounds} rounds"),
        Check("values inside their ranges", not outside, "; ".join(outside) or "all values in range"),
        Check("merged reads accepted", not run.refused_reads,
              "; ".join(run.refused_reads) or f"{len(plan.full_cycle())} read(s) per cycle"),
        Check(f"response time <= {spec.timing.max_response_ms} ms",
              timing.max_ms is not None and timing.max_ms <= spec.timing.max_response_ms,
              f"max {timing.max_ms:.1f} ms" if timing.max_ms is not None else "no answer to time"),
        illegal_address,
        illegal_function,
        Check("frames intact (CRC, length)", garbled == 0,
              f"{counters.get('crc_errors', 0)} CRC errors, {counters.get('frame_errors', 0)} malformed answers "
              f"in {counters.get('transactions', 0)} transactions"),
    ]
    return Report(spec.key, transport.description, unit, rounds, all(c.passed for c in checks), checks, timing,
                  points, counters)


def _timing(device_ms: list[float], limit_ms: int) -> Timing:
    if not device_ms:
        return Timing(0, None, None, None, None, limit_ms)
    ms = sorted(device_ms)
    return Timing(len(ms), round(ms[0], 2), round(statistics.median(ms), 2), round(_percentile(ms, 0.95), 2),
                  round(ms[-1], 2), limit_ms)
