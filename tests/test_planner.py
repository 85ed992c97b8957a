"""The read planner: grouping by poll interval, merging neighbours, bridging holes, decoding slices."""

from __future__ import annotations

import pytest

from device_specs.codec import encode
from device_specs.registry import builtin_specs, parse_spec
from device_specs.schema import DeviceSpec
from edge_agent.bus.planner import ReadPlan, decode_read, merge, per_point_reads

HEADER = """
schema: fieldtrust.device-spec/1
model: test-planner
version: 1.0.0
manufacturer: FieldTrust tests
name: planner fixture
category: weather
source: {document: test fixture, revision: "1"}
interface: modbus-rtu
serial: {baud: 9600}
"""


def spec_with(points: str, timing: str = "") -> DeviceSpec:
    return parse_spec(HEADER + timing + "points:\n" + points)


def spans(reads) -> list[tuple[str, int, int]]:  # noqa: ANN001 - a sequence of Read
    return [(r.table.value, r.address, r.count) for r in reads]


def test_neighbours_merge_and_holes_up_to_max_gap_are_bridged() -> None:
    spec = spec_with(
        """
  - {metric: a, table: holding, address: 0}
  - {metric: b, table: holding, address: 1, type: float32}
  - {metric: c, table: holding, address: 7}
  - {metric: d, table: holding, address: 13}
""",
        "timing: {max_gap: 4}\n",
    )
    # a..b are adjacent, c sits 4 registers after b (bridged), d 5 after c (not bridged)
    assert spans(merge(spec.points, spec.timing)) == [("holding", 0, 8), ("holding", 13, 1)]


def test_reads_never_exceed_max_registers_per_read() -> None:
    points = "".join(f"  - {{metric: p{i}, table: input, address: {i}}}\n" for i in range(20))
    spec = spec_with(points, "timing: {max_registers_per_read: 8}\n")
    reads = merge(spec.points, spec.timing)
    assert spans(reads) == [("input", 0, 8), ("input", 8, 8), ("input", 16, 4)]
    assert sum(len(r.points) for r in reads) == 20


def test_tables_are_never_mixed_and_bits_of_one_register_share_it() -> None:
    spec = spec_with(
        """
  - {metric: alarm_low, table: holding, address: 5, type: bits, bit: 0}
  - {metric: alarm_high, table: holding, address: 5, type: bits, bit: 3}
  - {metric: level, table: input, address: 5}
  - {metric: pump, table: coil, address: 2, type: bits}
""",
    )
    assert spans(merge(spec.points, spec.timing)) == [("coil", 2, 1), ("holding", 5, 1), ("input", 5, 1)]


SOIL_MAP = """
  - {metric: soil_ph, table: holding, address: 0x06, scale: 0.01, poll_interval_s: 300}
  - {metric: soil_moisture, table: holding, address: 0x12, scale: 0.1, poll_interval_s: 60}
  - {metric: soil_temperature, table: holding, address: 0x13, type: int16, scale: 0.1, poll_interval_s: 60}
  - {metric: soil_ec, table: holding, address: 0x15, poll_interval_s: 300}
  - {metric: soil_nitrogen, table: holding, address: 0x1E, poll_interval_s: 900}
  - {metric: soil_phosphorus, table: holding, address: 0x1F, poll_interval_s: 900}
  - {metric: soil_potassium, table: holding, address: 0x20, poll_interval_s: 900}
"""
SOIL_TIMING = "timing: {max_registers_per_read: 32, max_gap: 12}\n"


def test_groups_follow_poll_intervals_and_due_groups_merge() -> None:
    plan = ReadPlan(spec_with(SOIL_MAP, SOIL_TIMING))
    assert plan.intervals == (60.0, 300.0, 900.0)
    assert spans(plan.reads(frozenset({60.0}))) == [("holding", 0x12, 2)]
    # 60 s and 300 s points due together: pH (0x06) .. EC (0x15) in one read, the hole bridged
    assert spans(plan.reads(frozenset({60.0, 300.0}))) == [("holding", 0x06, 16)]
    assert spans(plan.full_cycle()) == [("holding", 0x06, 27)]
    assert len(per_point_reads(plan.spec)) == 7


def test_device_poll_interval_override_makes_one_group() -> None:
    plan = ReadPlan(spec_with(SOIL_MAP, SOIL_TIMING), poll_interval_s=10)
    assert plan.intervals == (10,)
    assert plan.point_count() == 7
    assert spans(plan.full_cycle()) == [("holding", 0x06, 27)]


def test_each_point_decodes_from_its_slice() -> None:
    spec = spec_with(
        """
  - {metric: temp, unit: Cel, table: holding, address: 0, type: int16, scale: 0.1}
  - {metric: flow, unit: m3, table: holding, address: 3, type: float32, order: CDAB}
  - {metric: total, unit: kWh, table: holding, address: 6, type: uint32, scale: 0.01}
""",
    )
    [read] = merge(spec.points, spec.timing)
    registers = [0] * read.count
    for metric, value in (("temp", -12.3), ("flow", 2.5), ("total", 123456.78)):
        p = spec.point(metric)
        registers[p.address : p.address + p.register_count] = encode(p, value)
    decoded = {d.point.metric: d.value for d in decode_read(read, registers)}
    assert decoded == {"temp": -12.3, "flow": 2.5, "total": 123456.78}


def test_undecodable_value_is_reported_not_raised() -> None:
    spec = spec_with("  - {metric: flow, table: input, address: 0, type: float32}\n")
    [read] = merge(spec.points, spec.timing)
    [d] = decode_read(read, [0x7FC0, 0x0000])  # a NaN
    assert d.value is None and "finite" in (d.error or "")


MULTI_POINT = [s for s in builtin_specs().values() if s.interface.is_modbus and len(s.points) >= 6]


@pytest.mark.parametrize("spec", MULTI_POINT, ids=[s.model for s in MULTI_POINT])
def test_merging_cuts_transactions_per_poll_cycle_at_least_threefold(spec: DeviceSpec) -> None:
    naive = len(per_point_reads(spec))
    merged = len(ReadPlan(spec).full_cycle())
    print(f"{spec.model}: {naive} reads one-per-point, {merged} merged ({naive / merged:.1f}x)")
    assert naive >= 3 * merged


def test_the_soil_7in1_is_among_the_multi_point_specs() -> None:
    assert "jxct-soil-7in1" in {s.model for s in MULTI_POINT}
