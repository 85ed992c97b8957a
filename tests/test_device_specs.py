"""The shipped sensor models, the spec checks and their error messages, and `fieldtrust spec`.

A spec error must say where to look: the file, the point (index and metric) and the key.  Each
malformed case below starts from one valid spec and breaks exactly one thing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from device_specs.codec import decode, encode
from device_specs.registry import MODELS_DIR, SpecError, builtin_specs, get_spec, load_spec_file, parse_spec
from device_specs.schema import ByteOrder, DataType, DeviceSpec, Interface, Table
from fieldtrust.cli.main import app

SHIPPED = builtin_specs()
ALL = list(SHIPPED.values())


# --- the shipped models ---------------------------------------------------------------------


def test_at_least_ten_models_ship_and_each_loads_by_name() -> None:
    files = sorted(MODELS_DIR.glob("*.yaml"))
    assert len(files) >= 10
    assert {f.stem for f in files} == set(SHIPPED)
    for name, spec in SHIPPED.items():
        assert get_spec(name) is spec
        assert get_spec(spec.key) is spec


@pytest.mark.parametrize("spec", ALL, ids=[s.model for s in ALL])
def test_each_model_cites_its_source_and_says_what_it_is(spec: DeviceSpec) -> None:
    assert spec.source.document.strip() and spec.source.revision.strip()
    assert len(spec.description) >= 80, "say what the device is and how it talks"
    assert all(p.verified is False for p in spec.points), "nothing here was checked on real hardware"


@pytest.mark.parametrize("spec", ALL, ids=[s.model for s in ALL])
def test_physical_ranges_are_representable_by_type_and_scale(spec: DeviceSpec) -> None:
    for p in spec.points:
        if p.unit:
            assert p.range is not None, f"{p.metric}: a measured quantity needs its datasheet range"
        if p.range is None or p.type in (DataType.BITS, DataType.STRING):
            continue
        for v in p.range:
            got = decode(p, encode(p, v))
            assert isinstance(got, int | float)
            assert abs(got - v) <= abs(p.scale) / 2 + 1e-6 * abs(v), f"{p.metric}: {v} reads back as {got}"


@pytest.mark.parametrize(("category", "low", "high"), [("soil", 300, 900), ("weather", 60, 60), ("energy", 10, 60)])
def test_poll_intervals_suit_agriculture(category: str, low: float, high: float) -> None:
    points = [p for s in ALL if s.category == category for p in s.points]
    assert points
    assert all(low <= p.poll_interval_s <= high for p in points), [(p.metric, p.poll_interval_s) for p in points]


def test_the_shipped_set_covers_every_interface_and_awkward_encoding() -> None:
    assert {s.interface for s in ALL} >= set(Interface) - {Interface.SERIAL_LINE}
    wide_swapped = [(s.model, p.metric) for s in ALL for p in s.points if p.type.registers == 2 and p.order.swap_words]
    assert any(p.type == DataType.FLOAT32 and p.order == ByteOrder.CDAB for s in ALL for p in s.points), wide_swapped
    assert any(p.type == DataType.UINT32 and p.order == ByteOrder.CDAB for s in ALL for p in s.points), wide_swapped
    tables = {p.table for s in ALL for p in s.points}
    assert {Table.HOLDING, Table.INPUT, Table.DISCRETE} <= tables
    assert any(p.type == DataType.BITS and p.bit is not None for s in ALL for p in s.points)


def test_the_two_7in1_soil_maps_differ_where_it_matters() -> None:
    jxct, cwt = get_spec("jxct-soil-7in1"), get_spec("cwt-soil-7in1")
    assert (jxct.serial.baud, cwt.serial.baud) == (9600, 4800)  # type: ignore[union-attr]
    assert (jxct.point("soil_ph").scale, cwt.point("soil_ph").scale) == (0.01, 0.1)
    assert [cwt.point(m).address for m in ("soil_moisture", "soil_temperature", "soil_ec", "soil_ph")] == [0, 1, 2, 3]
    assert (jxct.point("soil_ph").address, jxct.point("soil_nitrogen").address) == (0x0006, 0x001E)
    assert "cwt-soil-7in1" in jxct.description and "jxct-soil-7in1" in cwt.description
    # The same raw pH register value means very different things in the two maps.
    assert decode(cwt.point("soil_ph"), [65]) == 6.5 and decode(jxct.point("soil_ph"), [650]) == 6.5


def test_the_pump_energy_meter_matches_the_sdm120_protocol() -> None:
    sdm = get_spec("eastron-sdm120-modbus")
    assert sdm.serial is not None and sdm.serial.baud == 2400
    expected = {"voltage": 0x0000, "current": 0x0006, "active_power": 0x000C, "power_factor": 0x001E,
                "frequency": 0x0046, "energy_import": 0x0048}
    assert {p.metric: p.address for p in sdm.points} == expected
    assert all(p.table == Table.INPUT and p.type == DataType.FLOAT32 and p.order == ByteOrder.ABCD for p in sdm.points)
    assert decode(sdm.point("voltage"), [0x4366, 0x0000]) == 230.0  # 230.0 = 0x43660000


def test_word_swapped_counters_decode_as_the_vendor_library_does() -> None:
    rain = get_spec("dfrobot-sen0575-rain").point("rainfall_total")
    low, high = 0x2F40, 0x0001  # the library computes low | high << 16 = 77632 -> 7.7632 mm
    assert decode(rain, [low, high]) == pytest.approx(7.7632)
    flow = get_spec("tuf2000m-flow").point("flow_rate")
    assert decode(flow, [0xE979, 0x42F6]) == pytest.approx(123.456, rel=1e-6)  # REAL4, low word first


def test_node_side_sensors_carry_what_the_firmware_needs() -> None:
    sht = get_spec("sensirion-sht3x")
    assert sht.i2c_address == 0x44 and [p.channel for p in sht.points] == [0, 1]
    assert decode(sht.point("air_temperature"), [0x6666]) == pytest.approx(25.0)
    ds = get_spec("ds18b20")
    assert ds.point("soil_temperature").channel == 0x28
    assert decode(ds.point("soil_temperature"), [0xFF5E]) == -10.125  # datasheet example
    cap = get_spec("capacitive-soil-moisture-v1-2")
    moist = cap.point("soil_moisture")
    assert decode(moist, [2540]) == pytest.approx(0, abs=1e-6) and decode(moist, [1270]) == pytest.approx(100)
    assert "air" in cap.calibration["soil_moisture"] and "water" in cap.calibration["soil_moisture"]


# --- malformed specs -------------------------------------------------------------------------

BASE: dict = {
    "schema": "fieldtrust.device-spec/1",
    "model": "test-probe",
    "version": "1.0.0",
    "manufacturer": "Test",
    "name": "A test probe",
    "category": "soil",
    "source": {"document": "Test manual", "revision": "1"},
    "interface": "modbus-rtu",
    "serial": {"baud": 9600},
    "points": [
        {"metric": "soil_moisture", "table": "holding", "address": 0, "type": "uint16", "scale": 0.1},
        {"metric": "soil_temperature", "table": "holding", "address": 1, "type": "int16", "scale": 0.1},
        {"metric": "soil_ec", "table": "holding", "address": 2, "type": "uint32"},
    ],
}


def write(tmp_path: Path, data: object, name: str = "test-probe") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def mutate(change: Callable[[dict], None]) -> dict:
    data = copy.deepcopy(BASE)
    change(data)
    return data


def point(i: int, **kw: object) -> Callable[[dict], None]:
    return lambda d: d["points"][i].update(kw)


def drop(*path: str | int) -> Callable[[dict], None]:
    def change(d: dict) -> None:
        node = d
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return change


def replace_points(*points: dict) -> Callable[[dict], None]:
    return lambda d: d.update(points=list(points))


MALFORMED = [
    ("unknown key", point(1, colour="red"), ["points[1] (soil_temperature).colour", "unknown key", "allowed:"]),
    ("bad type", point(1, type="int17"), ["points[1] (soil_temperature).type", "int16"]),
    ("NaN scale", point(0, scale=float("nan")), ["points[0] (soil_moisture).scale", "finite"]),
    ("infinite range", point(0, range=[0, float("inf")]), ["points[0] (soil_moisture).range[1]", "finite"]),
    ("range low above high", point(0, range=[100, 0]), ["points[0] (soil_moisture).range", "low 100 is above high 0"]),
    ("string without length", point(1, type="string"), ["points[1] (soil_temperature).length", "required"]),
    ("CDAB on a 16-bit type", point(1, order="CDAB"), ["points[1] (soil_temperature).order", "one word"]),
    ("string with swapped words", point(1, type="string", length=2, order="DCBA"),
     ["points[1] (soil_temperature).order"]),
    ("duplicate metric", point(2, metric="soil_moisture"),
     ["points[2] (soil_moisture).metric", "duplicate", "points[0]"]),
    ("missing serial for rtu", drop("serial"), ["test-probe.yaml: serial: required for modbus-rtu"]),
    ("missing table", drop("points", 1, "table"), ["points[1] (soil_temperature).table", "required for modbus-rtu"]),
    ("missing address", drop("points", 1, "address"), ["points[1] (soil_temperature).address", "required"]),
    ("overlapping registers", point(2, address=1),
     ["points[2] (soil_ec).address", "points[1] (soil_temperature)", "1 (0x0001)"]),
    ("two points on one bit", replace_points(
        {"metric": "pump_on", "table": "holding", "address": 9, "type": "bits", "bit": 3},
        {"metric": "valve_open", "table": "holding", "address": 9, "type": "bits", "bit": 3}),
     ["points[1] (valve_open).address", "points[0] (pump_on)"]),
    ("bit on a coil", point(1, table="coil", type="bits", bit=2, scale=1), ["points[1] (soil_temperature).bit"]),
    ("channel on a Modbus point", point(0, channel=3), ["points[0] (soil_moisture).channel", "only for adc"]),
    ("missing key", drop("manufacturer"), ["manufacturer: required key is missing"]),
    ("nested bad value", lambda d: d["serial"].update(baud=1234), ["serial.baud"]),
    ("timing out of order", lambda d: d.update(timing={"response_timeout_ms": 100, "max_response_ms": 200}),
     ["timing.max_response_ms", "above response_timeout_ms 100"]),
    ("serial on a node sensor", lambda d: d.update(interface="adc"), ["serial: only for modbus-rtu"]),
]


@pytest.mark.parametrize(("case", "change", "expected"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_spec_names_file_point_and_key(
    tmp_path: Path, case: str, change: Callable[[dict], None], expected: list[str]
) -> None:
    path = write(tmp_path, mutate(change))
    with pytest.raises(SpecError) as exc:
        load_spec_file(path)
    message = str(exc.value)
    assert str(path) in message
    for part in expected:
        assert part in message, f"{case}: {part!r} missing from {message!r}"


def test_the_base_of_the_malformed_cases_is_valid(tmp_path: Path) -> None:
    assert load_spec_file(write(tmp_path, BASE)).key == "test-probe@1.0.0"


def test_bad_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "schema: fieldtrust.device-spec/1\npoints: [\n  {metric: a\n")
    with pytest.raises(SpecError, match=rf"{path}: not valid YAML at line 4, column 1: expected ',' or '}}'"):
        load_spec_file(path)


def test_duplicate_yaml_keys_are_refused_not_silently_overwritten(tmp_path: Path) -> None:
    text = yaml.safe_dump(BASE, sort_keys=False).replace("scale: 0.1", "scale: 0.1\n  scale: 0.01", 1)
    with pytest.raises(SpecError, match="duplicate key 'scale'"):
        load_spec_file(write(tmp_path, text))


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", ""])
def test_a_spec_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError, match=rf"{path}: a spec must be a YAML mapping"):
        load_spec_file(path)


def test_file_name_must_be_the_model(tmp_path: Path) -> None:
    path = write(tmp_path, BASE, name="other-name")
    with pytest.raises(SpecError, match=r"other-name\.yaml: model: 'test-probe' must match the file name 'other-name'"):
        load_spec_file(path)


SERIAL_LINE = {
    **{k: v for k, v in BASE.items() if k != "points"},
    "interface": "serial-line",
    "line": {"request": "R\r\n", "pattern": r"T=(?P<temp>-?\d+\.\d+) H=(?P<hum>\d+\.\d+)"},
    "points": [{"metric": "air_temperature", "field": "temp"}, {"metric": "air_humidity", "field": "hum"}],
}


def test_serial_line_fields_must_be_groups_of_the_pattern(tmp_path: Path) -> None:
    assert load_spec_file(write(tmp_path, SERIAL_LINE)).points[1].field == "hum"
    broken = copy.deepcopy(SERIAL_LINE)
    broken["points"][1]["field"] = "rh"
    with pytest.raises(SpecError) as exc:
        load_spec_file(write(tmp_path, broken))
    assert "points[1] (air_humidity).field: 'rh' is not a named group of line.pattern (groups: hum, temp)" in str(
        exc.value
    )
    broken["line"]["pattern"] = "T=(?P<temp"
    with pytest.raises(SpecError, match=r"line\.pattern: not a valid regular expression"):
        load_spec_file(write(tmp_path, broken))


NODE = {
    **{k: v for k, v in BASE.items() if k not in ("points", "serial")},
    "interface": "i2c",
    "i2c_address": 0x44,
    "points": [{"metric": "air_temperature", "channel": 0, "type": "uint16"}],
}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (drop("i2c_address"), "i2c_address: required for i2c"),
        (lambda d: d.update(i2c_address=0x80), "i2c_address: Input should be less than or equal to 119"),
        (drop("points", 0, "channel"), "points[0] (air_temperature).channel: required for i2c"),
        (lambda d: d["points"][0].update(table="holding"), "points[0] (air_temperature).table: only for Modbus"),
        (lambda d: d.update(interface="adc"), "i2c_address: only for i2c, not adc"),
    ],
)
def test_node_side_keys_are_checked(tmp_path: Path, change: Callable[[dict], None], expected: str) -> None:
    assert load_spec_file(write(tmp_path, NODE)).i2c_address == 0x44
    data = copy.deepcopy(NODE)
    change(data)
    with pytest.raises(SpecError) as exc:
        load_spec_file(write(tmp_path, data))
    assert expected in str(exc.value)


def test_registers_may_be_shared_by_different_bits_or_the_same_value_read_twice() -> None:
    data = mutate(lambda d: d["points"].extend([
        {"metric": "pump_on", "table": "holding", "address": 9, "type": "bits", "bit": 0},
        {"metric": "valve_open", "table": "holding", "address": 9, "type": "bits", "bit": 1},
        {"metric": "water_pressure", "table": "input", "address": 0, "type": "float32", "unit": "bar"},
        {"metric": "water_level", "table": "input", "address": 0, "type": "float32", "unit": "m", "scale": 10.1972},
        {"metric": "alarm", "table": "coil", "address": 0, "type": "bits"},  # other table, same address
    ]))
    spec = parse_spec(yaml.safe_dump(data), "shared.yaml")
    assert [p.metric for p in spec.points][-5:] == ["pump_on", "valve_open", "water_pressure", "water_level", "alarm"]


YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["points", "serial", "timing", "source", "line", "i2c_address", "interface"]), YAML_VALUES,
       st.sampled_from([None, "table", "address", "type", "order", "range", "bit", "length", "scale"]), YAML_VALUES)
def test_any_garbage_gives_a_spec_error_never_a_crash(key: str, value: object, point_key: str | None,
                                                      point_value: object) -> None:
    data = copy.deepcopy(BASE)
    if point_key is None:
        data[key] = value
    else:
        data["points"][1][point_key] = point_value
    try:
        spec = parse_spec(yaml.safe_dump(data), "fuzz.yaml")
    except SpecError as exc:
        assert str(exc).startswith("fuzz.yaml: ")
    else:
        assert spec.model == "test-probe"


@given(st.text(max_size=200))
def test_any_text_gives_a_spec_error_never_a_crash(text: str) -> None:
    try:
        parse_spec(text, "fuzz.yaml")
    except SpecError as exc:
        assert str(exc).startswith("fuzz.yaml")


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(SpecError, match="unknown sensor model 'no-such'.*jxct-soil-7in1"):
        get_spec("no-such")
    with pytest.raises(SpecError, match="version 9.9.9 requested"):
        get_spec("jxct-soil-7in1@9.9.9")


# --- the command line ---------------------------------------------------------------------------

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def test_cli_validate_accepts_every_shipped_spec() -> None:
    result = runner.invoke(app, ["spec", "validate"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert result.output.count("ok ") == len(SHIPPED)


def test_cli_validate_rejects_a_bad_file_with_the_reason(tmp_path: Path) -> None:
    good = write(tmp_path, BASE)
    bad = write(tmp_path, mutate(point(0, range=[100, 0])), name="bad")
    result = runner.invoke(app, ["spec", "validate", str(tmp_path)], env=WIDE)
    assert result.exit_code == 1
    assert f"ok {good}" in result.output
    assert f"{bad}: points[0] (soil_moisture).range: low 100 is above high 0" in result.output
    assert "1 of 2 spec files invalid" in result.output


def test_cli_show_prints_the_register_map() -> None:
    result = runner.invoke(app, ["spec", "show", "tuf2000m-flow"], env=WIDE)
    assert result.exit_code == 0, result.output
    for text in ("tuf2000m-flow@1.0.0", "9600 baud 8N1, unit 1", "flow_rate", "CDAB", "91 (0x005B)"):
        assert text in result.output
    node = runner.invoke(app, ["spec", "show", "sensirion-sht3x"], env=WIDE)
    assert node.exit_code == 0 and "i2c address 0x44" in node.output and "channel 1" in node.output


def test_cli_show_unknown_model_fails() -> None:
    result = runner.invoke(app, ["spec", "show", "no-such"], env=WIDE)
    assert result.exit_code == 1 and "unknown sensor model" in result.output


def test_cli_list_names_every_model() -> None:
    result = runner.invoke(app, ["spec", "list"], env=WIDE)
    assert result.exit_code == 0
    assert all(model in result.output for model in SHIPPED)
