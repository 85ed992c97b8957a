"""The compact spec a node polls with: it decodes exactly as the gateway's codec, merges reads as the gateway
does, stays small, and refuses what a node cannot serve.

Equivalence is checked on random register images (every 16-bit word equally likely, so NaNs,
infinities, negative and out-of-range values all occur) for every shipped Modbus RTU spec and for
a fixture with every type and order the node decodes: the node driver's value and range flag
must be the gateway's (``device_specs.codec.decode`` plus the scheduler's ``Q_OUT_OF_RANGE`` rule).
"""

from __future__ import annotations

import json
import random
import re

import pytest
from typer.testing import CliRunner

from contract.telemetry import Q_OUT_OF_RANGE
from device_specs.codec import DecodeError, decode
from device_specs.compact import CompactError, compact, to_json
from device_specs.registry import builtin_specs, get_spec, parse_spec
from device_specs.schema import DeviceSpec, Interface
from edge_agent.bus.planner import ReadPlan
from fieldtrust.cli.main import app
from firmware.drivers.modbus_rtu import check_spec, decode_point

RTU_SPECS = sorted(m for m, s in builtin_specs().items() if s.interface == Interface.MODBUS_RTU)
MAX_COMPACT_BYTES = 1024

HEADER = """
schema: fieldtrust.device-spec/1
model: compact-fixture
version: 1.0.0
manufacturer: FieldTrust tests
name: compact fixture
category: weather
source: {document: test fixture, revision: "1"}
interface: modbus-rtu
serial: {baud: 9600}
"""
EVERY_TYPE = HEADER + """
timing: {max_registers_per_read: 16, max_gap: 2}
points:
  - {metric: a_u16, table: input, address: 0, type: uint16, scale: 0.1, range: [0, 100]}
  - {metric: a_s16_badc, table: input, address: 1, type: int16, order: BADC, offset: -40, range: [-50, 50]}
  - {metric: a_u32_cdab, table: input, address: 2, type: uint32, order: CDAB}
  - {metric: a_s32_dcba, table: input, address: 4, type: int32, order: DCBA, scale: 2, offset: 7}
  - {metric: a_f32_badc, table: input, address: 6, type: float32, order: BADC, range: [-1.5, 1.5]}
  - {metric: a_u64_cdab, table: input, address: 8, type: uint64, order: CDAB, scale: 10}
  - {metric: a_s64, table: input, address: 12, type: int64, range: [-1000, 1000]}
  - {metric: a_f64_dcba, table: holding, address: 40, type: float64, order: DCBA, scale: 0.001, offset: 0.5}
  - {metric: a_bit_3, table: holding, address: 44, type: bits, bit: 3}
  - {metric: a_bit_0, table: holding, address: 44, type: bits}
  - {metric: far, table: holding, address: 60, type: uint16, scale: -0.25, range: [-10, 0]}
"""


def gateway_reading(spec: DeviceSpec, metric: str, registers: list[int]) -> tuple[object, int]:
    """What the gateway records: the codec's value (None when it refuses) and the range flag."""
    p = spec.point(metric)
    try:
        value = decode(p, registers)
    except DecodeError:
        return None, Q_OUT_OF_RANGE
    out = not isinstance(value, str | bool) and not p.in_range(value)
    return value, Q_OUT_OF_RANGE if out else 0


def assert_equivalent(spec: DeviceSpec, images: int, seed: int) -> int:
    """Decode ``images`` random register images with both; returns how many readings were out of range."""
    form = json.loads(to_json(compact(spec)))  # exactly what the node loads from its settings file
    check_spec(form)
    rng = random.Random(seed)
    flagged = 0
    for _ in range(images):
        for block in form["b"]:
            words = [rng.getrandbits(16) for _ in range(block["c"])]
            data = b"".join(w.to_bytes(2, "big") for w in words)
            for point in block["p"]:
                p = spec.point(point["n"])
                width = max(p.register_count, 1)
                expected = gateway_reading(spec, p.metric, words[point["at"] : point["at"] + width])
                metric, unit, value, flags = decode_point(point, data)
                assert (metric, unit) == (p.metric, p.unit)
                assert (value, flags) == expected, (p.metric, words, value, expected)
                assert type(value) is type(expected[0]), p.metric  # an int stays an int, a bit a bool
                flagged += bool(flags)
    return flagged


@pytest.mark.parametrize("model", RTU_SPECS)
def test_node_decodes_every_shipped_rtu_spec_as_the_gateway(model: str) -> None:
    assert_equivalent(get_spec(model), 300, seed=len(model))


def test_node_decodes_every_type_and_order_as_the_gateway() -> None:
    spec = parse_spec(EVERY_TYPE)
    assert assert_equivalent(spec, 2000, seed=7) > 0
    assert [(b["f"], b["a"], b["c"]) for b in compact(spec)["b"]] == [(3, 40, 5), (3, 60, 1), (4, 0, 16)]


def test_values_the_simulators_write_decode_the_same_on_the_node() -> None:
    """In-range and boundary values, encoded as a device would hold them."""
    from device_specs.codec import encode

    for model in RTU_SPECS:
        spec = get_spec(model)
        form = compact(spec)
        for block in form["b"]:
            for point in block["p"]:
                p = spec.point(point["n"])
                assert p.range is not None
                for value in (p.range[0], p.range[1], (p.range[0] + p.range[1]) / 2):
                    registers = encode(p, value)
                    data = bytes(2 * point["at"]) + b"".join(r.to_bytes(2, "big") for r in registers)
                    assert decode_point(point, data)[2:] == gateway_reading(spec, p.metric, registers), p.metric


@pytest.mark.parametrize("model", RTU_SPECS)
def test_blocks_are_the_gateways_merged_reads(model: str) -> None:
    spec = get_spec(model)
    gateway = [(r.table.function, r.address, r.count, [p.metric for p in r.points])
               for r in ReadPlan(spec).full_cycle()]
    node = [(b["f"], b["a"], b["c"], [p["n"] for p in b["p"]]) for b in compact(spec)["b"]]
    assert node == gateway
    assert all(b["c"] <= spec.timing.max_registers_per_read for b in compact(spec)["b"])


def test_compact_specs_are_small() -> None:
    sizes = {model: len(to_json(compact(get_spec(model))).encode()) for model in RTU_SPECS}
    print("compact spec sizes (bytes):", ", ".join(f"{m} {n}" for m, n in sorted(sizes.items())))
    assert max(sizes.values()) <= MAX_COMPACT_BYTES
    full = {m: len(json.dumps(get_spec(m).model_dump(mode="json", by_alias=True, exclude_defaults=True)))
            for m in RTU_SPECS}
    assert all(sizes[m] < full[m] / 2 for m in RTU_SPECS), (sizes, full)


def test_defaults_are_left_out_and_integral_numbers_are_ints() -> None:
    form = compact(get_spec("sensecap-leaf-ym-01"))
    assert form == {"v": 1, "m": "sensecap-leaf-ym-01@1.0.0", "to": 500, "b": [{"f": 3, "a": 0, "c": 2, "p": [
        {"n": "leaf_temperature", "u": "Cel", "at": 0, "t": "s16", "s": 0.01, "r": [-40, 85]},
        {"n": "leaf_wetness", "u": "%", "at": 1, "t": "u16", "s": 0.01, "r": [0, 100]}]}]}  # fmt: skip
    bits = compact(parse_spec(EVERY_TYPE))["b"][0]["p"]
    assert bits[1:] == [{"n": "a_bit_3", "at": 4, "t": "bit", "bit": 3}, {"n": "a_bit_0", "at": 4, "t": "bit"}]


@pytest.mark.parametrize(
    ("spec_text", "message"),
    [
        (HEADER + "points:\n  - {metric: name, table: holding, address: 0, type: string, length: 4}\n",
         "compact-fixture@1.0.0: points[0] (name).type: string is not served by the node"),
        (HEADER + "points:\n  - {metric: pump, table: coil, address: 0, type: bits}\n",
         "compact-fixture@1.0.0: points[0] (pump).table: coil is not served by the node"),
        (HEADER + "points:\n  - {metric: a, table: holding, address: 0}\n"
                  "  - {metric: door, table: discrete, address: 3, type: bits}\n",
         "points[1] (door).table: discrete is not served"),
    ],
)
def test_points_a_node_cannot_serve_are_refused_by_name(spec_text: str, message: str) -> None:
    with pytest.raises(CompactError, match=re.escape(message)):
        compact(parse_spec(spec_text))


@pytest.mark.parametrize("model", sorted(m for m, s in builtin_specs().items() if s.interface != Interface.MODBUS_RTU))
def test_other_interfaces_are_refused(model: str) -> None:
    spec = get_spec(model)
    with pytest.raises(CompactError, match=re.escape(f"{spec.key}: interface: {spec.interface.value} is not served")):
        compact(spec)


def test_cli_prints_the_json_and_its_size() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["spec", "compact", "tuf2000m-flow"])
    assert result.exit_code == 0, result.output
    text, size = result.stdout.splitlines()[0], result.stderr.strip()
    assert json.loads(text) == compact(get_spec("tuf2000m-flow"))
    assert size == f"{len(text.encode())} bytes"
    refused = runner.invoke(app, ["spec", "compact", "moxa-iologik-e1242"])
    assert refused.exit_code == 1 and "modbus-tcp is not served" in refused.stderr
    unknown = runner.invoke(app, ["spec", "compact", "no-such-model"])
    assert unknown.exit_code == 1 and "unknown sensor model 'no-such-model'" in unknown.stderr
