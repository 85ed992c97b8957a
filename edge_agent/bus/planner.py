"""From a device's spec points to the fewest Modbus reads that fetch them.

Points are grouped by poll interval (each group has its own schedule) and, whenever some groups
are due together, the due points of one table are merged into reads: neighbouring registers
join one read up to the spec's ``timing.max_registers_per_read``, bridging holes of up to
``timing.max_gap`` unused registers (read and dropped: two extra registers cost ~2 ms of line
time at 9600 baud, a separate transaction ~25 ms).  Each point's slice of a read is decoded by
``device_specs.codec.decode``, the one codec.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from device_specs.codec import DecodeError, decode
from device_specs.schema import DeviceSpec, Point, Table, Timing


@dataclass(frozen=True, slots=True)
class Read:
    """One Modbus read and the points it carries."""

    table: Table
    address: int
    count: int
    points: tuple[Point, ...]

    def slice(self, point: Point, values: list[int]) -> list[int]:
        start = point.address - self.address  # type: ignore[operator]
        return values[start : start + max(point.register_count, 1)]


@dataclass(frozen=True, slots=True)
class Decoded:
    """A point's value from a read, or why there is none."""

    point: Point
    value: float | str | bool | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PollGroup:
    """Points of one device polled at the same interval."""

    interval_s: float
    points: tuple[Point, ...]


def poll_groups(points: Iterable[Point], poll_interval_s: float | None = None) -> tuple[PollGroup, ...]:
    """Points grouped by poll interval, shortest first; a device's configured interval overrides every point's."""
    groups: dict[float, list[Point]] = defaultdict(list)
    for p in points:
        groups[poll_interval_s or p.poll_interval_s].append(p)
    return tuple(PollGroup(interval, tuple(pts)) for interval, pts in sorted(groups.items()))


def _width(p: Point) -> int:
    return max(p.register_count, 1)


def merge(points: Iterable[Point], timing: Timing) -> list[Read]:
    """The fewest reads covering ``points``, table by table, in address order.

    A point wider than ``max_registers_per_read`` gets a read of its own (it cannot be split).
    """
    by_table: dict[Table, list[Point]] = defaultdict(list)
    for p in points:
        if p.table is not None and p.address is not None:
            by_table[p.table].append(p)
    reads: list[Read] = []
    for table in sorted(by_table):
        run: list[Point] = []
        start = end = 0  # the current read covers [start, end)
        for p in sorted(by_table[table], key=lambda q: (q.address, _width(q))):
            addr = p.address or 0
            new_end = max(end, addr + _width(p))
            if run and addr - end <= timing.max_gap and new_end - start <= timing.max_registers_per_read:
                run.append(p)
                end = new_end
                continue
            if run:
                reads.append(Read(table, start, end - start, tuple(run)))
            run, start, end = [p], addr, addr + _width(p)
        if run:
            reads.append(Read(table, start, end - start, tuple(run)))
    return reads


class ReadPlan:
    """A device's poll groups and, for any set of groups due together, their merged reads."""

    def __init__(self, spec: DeviceSpec, poll_interval_s: float | None = None) -> None:
        self.spec = spec
        self.groups = poll_groups((p for p in spec.points if p.table is not None and p.address is not None),
                                  poll_interval_s)
        self.reads = cache(self._reads)

    @property
    def intervals(self) -> tuple[float, ...]:
        return tuple(g.interval_s for g in self.groups)

    def _reads(self, due: frozenset[float]) -> tuple[Read, ...]:
        """Merged reads for the groups whose interval is in ``due`` (cached per set)."""
        points = [p for g in self.groups if g.interval_s in due for p in g.points]
        return tuple(merge(points, self.spec.timing))

    def full_cycle(self) -> tuple[Read, ...]:
        """Reads when every group is due at once (the first poll, a test read)."""
        return self.reads(frozenset(self.intervals))

    def point_count(self) -> int:
        return sum(len(g.points) for g in self.groups)


def split(read: Read) -> list[Read]:
    """One read per point of ``read``: the fallback for a device that refuses a merged read."""
    return [Read(read.table, p.address, _width(p), (p,)) for p in read.points]  # type: ignore[arg-type]


def per_point_reads(spec: DeviceSpec) -> list[Read]:
    """One read per point: what a naive poller does, the baseline merging is measured against."""
    return [
        Read(p.table, p.address, _width(p), (p,)) for p in spec.points if p.table is not None and p.address is not None
    ]


def decode_read(read: Read, values: list[int]) -> list[Decoded]:
    """Each point's value from the registers (or bits) of ``read``."""
    out: list[Decoded] = []
    for p in read.points:
        try:
            out.append(Decoded(p, decode(p, read.slice(p, values))))
        except DecodeError as exc:
            out.append(Decoded(p, None, str(exc)))
    return out
