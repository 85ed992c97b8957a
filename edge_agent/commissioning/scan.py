"""Which unit ids answer on a bus, and which known sensor model each one is.

A unit is present when it answers anything to a probe read (an exception answer counts: the
device exists, it only refuses that register).  Each present unit is then read point by point
against every known Modbus spec; a spec *matches* when all its points are readable and inside
their physical ranges.  Candidates are ranked by points matched; two full matches that explain
the same number of points are reported as ambiguous rather than guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from device_specs.codec import DecodeError, decode
from device_specs.registry import builtin_specs
from device_specs.schema import DeviceSpec, Point, Table
from edge_agent.bus.master import Master
from edge_agent.bus.transport import BusError, LinkError, Timeout, Transport

AMBIGUOUS = "ambiguous"
UNKNOWN = "unknown"
DEFAULT_TIMEOUT_S = 0.1


@dataclass(frozen=True, slots=True)
class Candidate:
    """How well one spec explains what a unit answers."""

    spec: DeviceSpec
    matched: int
    total: int
    problems: tuple[str, ...] = ()

    @property
    def full(self) -> bool:
        return self.matched == self.total


@dataclass(frozen=True, slots=True)
class UnitResult:
    unit: int
    candidates: tuple[Candidate, ...]  # best first

    @property
    def verdict(self) -> str:
        """The matching spec's ``model@version``, ``ambiguous`` or ``unknown``."""
        full = [c for c in self.candidates if c.full]
        if not full:
            return UNKNOWN
        if len(full) > 1 and full[0].matched == full[1].matched:
            return AMBIGUOUS
        return full[0].spec.key


def _check_point(master: Master, unit: int, p: Point) -> str | None:
    """None if ``p`` reads and lies in its range, else what is wrong."""
    assert p.table is not None and p.address is not None
    try:
        values = master.read(unit, p.table, p.address, max(p.register_count, 1)).values
        value = decode(p, values)
    except LinkError:
        raise
    except (BusError, DecodeError) as exc:
        return f"{p.metric}: {exc}"
    if not isinstance(value, str | bool) and not p.in_range(value):
        return f"{p.metric}: {value} outside {p.range}"
    return None


def match(master: Master, unit: int, spec: DeviceSpec) -> Candidate:
    points = [p for p in spec.points if p.table is not None and p.address is not None]
    problems = tuple(msg for p in points if (msg := _check_point(master, unit, p)) is not None)
    return Candidate(spec, len(points) - len(problems), len(points), problems)


def probe(master: Master, unit: int) -> bool:
    """Does anything answer at ``unit``?  Any reply, even an exception or a garbled frame, says yes.

    A :class:`LinkError` (the port cannot be opened, the endpoint refuses) ends the scan: it says
    nothing about the unit.
    """
    try:
        master.read(unit, Table.HOLDING, 0, 1)
    except Timeout:
        return False
    except LinkError:
        raise
    except BusError:
        return True
    return True


def scan(
    transport: Transport,
    units: Iterable[int] = range(1, 248),
    specs: Iterable[DeviceSpec] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_unit: Callable[[int], None] | None = None,
) -> list[UnitResult]:
    """Probe ``units`` in order; identify each present one against ``specs`` (default: the shipped ones).

    Raises :class:`LinkError` when the bus itself is unreachable.
    """
    candidates_specs = [s for s in (specs if specs is not None else builtin_specs().values()) if s.interface.is_modbus]
    master = Master(transport, timeout_s, retries=0)
    found: list[UnitResult] = []
    try:
        for unit in units:
            if probe(master, unit):
                ranked = sorted((match(master, unit, s) for s in candidates_specs),
                                key=lambda c: (c.full, c.matched, c.matched / max(c.total, 1)), reverse=True)
                found.append(UnitResult(unit, tuple(ranked)))
            if on_unit is not None:
                on_unit(unit)
    finally:
        master.close()
    return found


def parse_units(text: str) -> list[int]:
    """``1-20``, ``5`` or ``1,3,10-12`` -> unit ids (each within 1..247)."""
    units: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"units: expected a list such as 1-20 or 1,3,5; got {text!r}")
        first, last = int(lo), int(hi) if sep else int(lo)
        if not 1 <= first <= last <= 247:
            raise ValueError(f"units: {part.strip()!r} must lie within 1..247, low to high")
        units.extend(range(first, last + 1))
    return sorted(set(units))
