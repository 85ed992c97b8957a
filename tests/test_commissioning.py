"""Commissioning on simulated buses: scan finds and identifies units, certify judges, check reads a config."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from device_specs.registry import get_spec
from edge_agent.bus.rtu import RtuTransport
from edge_agent.commissioning.certify import certify
from edge_agent.commissioning.link import parse_endpoint
from edge_agent.commissioning.scan import AMBIGUOUS, UNKNOWN, parse_units, scan
from fieldtrust.cli.main import app
from hardware.rtu_bus import RtuBusSimulator
from hardware.sim_device import SimulatedDevice
from hardware.tcp_server import TcpSimulator

BAUD = 19200
runner = CliRunner(env={"COLUMNS": "200"})


def let_the_simulator_reset_its_pty() -> None:
    """The RTU simulator restores its pty's settings when it notices a master closed it (inotify);
    a master reopening within those few milliseconds is refused, so a test reopening a port waits."""
    time.sleep(0.1)


@pytest.fixture
def line() -> Iterator[tuple[RtuBusSimulator, SimulatedDevice, SimulatedDevice]]:
    soil = SimulatedDevice(get_spec("jxct-soil-7in1"), unit_id=3, seed=4)
    meter = SimulatedDevice(get_spec("eastron-sdm120-modbus"), unit_id=5, seed=4)
    with RtuBusSimulator([soil, meter], baud=BAUD, parity="E") as sim:
        yield sim, soil, meter


def test_scan_finds_the_units_and_names_their_models(
    line: tuple[RtuBusSimulator, SimulatedDevice, SimulatedDevice],
) -> None:
    sim, _soil, _meter = line
    seen: list[int] = []
    found = scan(RtuTransport(sim.port, BAUD, "E", 1), range(1, 7), timeout_s=0.3, on_unit=seen.append)
    assert seen == [1, 2, 3, 4, 5, 6]
    assert {r.unit: r.verdict for r in found} == {3: "jxct-soil-7in1@1.0.0", 5: "eastron-sdm120-modbus@1.0.0"}
    soil = next(r for r in found if r.unit == 3)
    assert soil.candidates[0].matched == soil.candidates[0].total == 7
    assert all(not c.full for c in soil.candidates[1:])


def test_two_specs_explaining_the_same_points_are_ambiguous(
    line: tuple[RtuBusSimulator, SimulatedDevice, SimulatedDevice],
) -> None:
    sim, soil, _meter = line
    twin = soil.spec.model_copy(update={"model": "jxct-soil-7in1-twin"})
    meter_spec = get_spec("eastron-sdm120-modbus")
    found = scan(RtuTransport(sim.port, BAUD, "E", 1), [3], specs=[soil.spec, twin, meter_spec], timeout_s=0.3)
    assert [r.verdict for r in found] == [AMBIGUOUS]
    let_the_simulator_reset_its_pty()
    soil.pin("soil_ph", 14.0)  # outside 3..9: no spec explains this device completely any more
    found = scan(RtuTransport(sim.port, BAUD, "E", 1), [3], specs=[soil.spec], timeout_s=0.3)
    assert found[0].verdict == UNKNOWN and "soil_ph" in found[0].candidates[0].problems[0]


def test_certify_passes_a_good_device(line: tuple[RtuBusSimulator, SimulatedDevice, SimulatedDevice]) -> None:
    sim, soil, _meter = line
    report = certify(soil.spec, RtuTransport(sim.port, BAUD, "E", 1), 3, rounds=3)
    assert report.passed, [c for c in report.checks if not c.passed]
    assert len(report.checks) == 7 and report.timing.samples == 3
    assert report.timing.max_ms is not None and report.timing.max_ms < soil.spec.timing.max_response_ms
    assert all(p.ok == p.reads == 3 for p in report.points)


def test_certify_fails_a_late_device(line: tuple[RtuBusSimulator, SimulatedDevice, SimulatedDevice]) -> None:
    sim, soil, _meter = line
    soil.faults.late_ms = soil.spec.timing.max_response_ms + 60
    report = certify(soil.spec, RtuTransport(sim.port, BAUD, "E", 1), 3, rounds=1)
    failed = {c.name for c in report.checks if not c.passed}
    assert not report.passed
    assert failed == {f"response time <= {soil.spec.timing.max_response_ms} ms"}
    assert report.timing.max_ms is not None and report.timing.max_ms > soil.spec.timing.max_response_ms


def test_certify_fails_a_device_that_answers_garbage(
    line: tuple[RtuBusSimulator, SimulatedDevice, SimulatedDevice],
) -> None:
    sim, _soil, meter = line
    meter.faults.garbage_rate = 1.0
    report = certify(meter.spec, RtuTransport(sim.port, BAUD, "E", 1), 5, rounds=1)
    failed = {c.name for c in report.checks if not c.passed}
    assert not report.passed
    assert {"every point readable", "frames intact (CRC, length)"} <= failed
    assert any(name.startswith("illegal address") for name in failed)


def test_certify_cli_exit_codes_and_json(line: tuple[RtuBusSimulator, SimulatedDevice, SimulatedDevice]) -> None:
    sim, soil, _meter = line
    args = ["spec", "certify", "--spec", "jxct-soil-7in1", "--port", sim.port, "--baud", str(BAUD),
            "--parity", "E", "--unit", "3", "--rounds", "2"]
    ok = runner.invoke(app, [*args, "--json"])
    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.output)
    assert report["passed"] is True and report["unit"] == 3 and len(report["points"]) == 7
    soil.pin("soil_moisture", 120.0)  # out of range: the device fails
    let_the_simulator_reset_its_pty()
    bad = runner.invoke(app, args)
    assert bad.exit_code == 1
    assert "FAIL" in bad.output and "soil_moisture" in bad.output
    assert runner.invoke(app, ["spec", "certify", "--spec", "no-such-model", "--port", sim.port]).exit_code == 2


def test_scan_cli_prints_a_table(line: tuple[RtuBusSimulator, SimulatedDevice, SimulatedDevice]) -> None:
    sim, _soil, _meter = line
    result = runner.invoke(app, ["edge", "scan", "--port", sim.port, "--baud", str(BAUD), "--parity", "E",
                                 "--units", "2-5", "--timeout-ms", "50"])
    assert result.exit_code == 0, result.output
    assert "jxct-soil-7in1@1.0.0" in result.output and "eastron-sdm120-modbus@1.0.0" in result.output
    assert "2 of 4 unit ids answered" in result.output
    let_the_simulator_reset_its_pty()
    assert runner.invoke(app, ["edge", "scan", "--port", sim.port, "--units", "0-300"]).exit_code == 2


CONFIG = """
gateway: {{id: gw-test, tenant: farm-1, key_hex: "00112233445566778899aabbccddeeff"}}
buses:
  - id: rs485-1
    kind: rtu
    port: {port}
    baud: {baud}
    parity: E
    timeout_ms: 80
    retries: 0
    devices:
      - {{id: soil-north, spec: jxct-soil-7in1, unit: 3}}
      - {{id: meter-pump, spec: eastron-sdm120-modbus, unit: 5}}
      - {{id: soil-gone, spec: jxct-soil-7in1, unit: 9}}
  - id: gw-tcp
    kind: tcp
    host: 127.0.0.1
    tcp_port: {tcp_port}
    devices:
      - {{id: meter-barn, spec: eastron-sdm120-modbus, unit: 1}}
"""


def test_check_reads_each_device_once_and_prints_a_row_each(
    line: tuple[RtuBusSimulator, SimulatedDevice, SimulatedDevice], tmp_path: Path,
) -> None:
    sim, soil, _meter = line
    soil.pin("soil_moisture", 33.3)
    barn = SimulatedDevice(get_spec("eastron-sdm120-modbus"), unit_id=1, seed=4)
    barn.pin("voltage", 230.5)
    with TcpSimulator([barn]) as tcp:
        cfg = tmp_path / "gateway.yaml"
        cfg.write_text(CONFIG.format(port=sim.port, baud=BAUD, tcp_port=tcp.port))
        result = runner.invoke(app, ["edge", "check", "--config", str(cfg)])
    assert result.exit_code == 1, result.output  # soil-gone does not answer
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 6}
    assert {"soil-north", "meter-pump", "soil-gone", "meter-barn"} <= set(rows)
    assert "ok" in rows["soil-north"] and "soil_moisture = 33.3 %" in result.output
    assert "voltage = 230.5 V" in result.output
    assert "error" in rows["soil-gone"] and "no answer" in rows["soil-gone"]


def test_check_rejects_a_bad_config_naming_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(CONFIG.format(port="/dev/null", baud=4321, tcp_port=502))
    result = runner.invoke(app, ["edge", "check", "--config", str(cfg)])
    assert result.exit_code == 2
    assert "buses[0].baud" in result.output


def test_unit_lists_and_endpoints_parse_or_say_why_not() -> None:
    assert parse_units("1-3,7,5-5") == [1, 2, 3, 5, 7]
    for bad in ("0-3", "5-2", "a", "1-248"):
        with pytest.raises(ValueError):
            parse_units(bad)
    assert parse_endpoint("10.0.0.5:502") == ("10.0.0.5", 502)
    assert parse_endpoint("[::1]:1502") == ("::1", 1502)
    with pytest.raises(ValueError):
        parse_endpoint("10.0.0.5")
