"""The node's Modbus RTU reader: every portable case on real MicroPython, its heap per poll there, and the
driver under CPython talking through a real pty to the project's RTU bus simulator.

The pty end: a small CPython port over pyserial stands in for the ESP32's UART and transceiver;
the node's driver, settings wiring (``firmware.main``) and the compact spec are the real ones,
and the simulated device answers from the full spec with the gateway's codec.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator

import pytest
import serial
import test_firmware_node_cases as node_cases
import test_node_modbus_cases as cases
from test_firmware_micropython import BOARD_MODULES, assert_cases_pass_on_micropython, needs_micropython

from contract.telemetry import Q_OUT_OF_RANGE
from device_specs.codec import decode, encode
from device_specs.compact import compact
from device_specs.registry import get_spec
from firmware import main
from firmware.crc import crc16_modbus
from firmware.drivers import modbus_rtu
from firmware.hal import uart_char_us
from firmware.hal_sim import SimBoard
from hardware.micropython_runner import run_micropython
from hardware.modbus_pdu import crc16
from hardware.rtu_bus import RtuBusSimulator
from hardware.sim_device import SimulatedDevice

MODBUS_BOARD_MODULES = {**BOARD_MODULES, "test_node_modbus_cases": cases.__file__,
                        "test_firmware_node_cases": node_cases.__file__}
POLL_HEAP_BUDGET_BYTES = 4 * 1024  # one poll of a device, far below the 32 KB a whole wake may allocate


# -- real MicroPython -----------------------------------------------------------------------------


@needs_micropython
def test_every_modbus_case_passes_on_micropython():
    assert_cases_pass_on_micropython(cases, MODBUS_BOARD_MODULES)


@needs_micropython
def test_heap_of_one_poll_on_micropython():
    run = run_micropython(
        textwrap.dedent(
            """
            import gc
            import test_node_modbus_cases as cases
            for name, spec, device in (("leaf", cases.LEAF, cases.leaf_device()),
                                       ("flow", cases.FLOW, cases.flow_device())):
                poller = cases.replay_poller(spec, device)
                poller.poll()  # first poll: one-time costs (the set of taken metrics, dict entries) are not per-poll
                gc.collect()
                gc.disable()  # nothing is freed while measuring: the difference is all one poll allocated
                before = gc.mem_alloc()
                readings = poller.poll()
                allocated = gc.mem_alloc() - before
                gc.enable()
                print(name, len(spec["b"]), len(readings), allocated)
            """
        ),
        modules=MODBUS_BOARD_MODULES,
        timeout=25,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [line.split() for line in run.stdout.splitlines()]
    for name, blocks, points, allocated in rows:
        print(f"one poll of {name} ({blocks} blocks, {points} points) on MicroPython: {allocated} bytes allocated")
        assert 0 < int(allocated) <= POLL_HEAP_BUDGET_BYTES
    assert [row[0] for row in rows] == ["leaf", "flow"]


# -- the portable cases' compact specs are the real ones -------------------------------------------


def test_the_cases_use_the_compact_form_of_the_shipped_specs():
    assert compact(get_spec("sensecap-leaf-ym-01")) == cases.LEAF
    assert compact(get_spec("tuf2000m-flow")) == cases.FLOW


def test_node_crc_is_the_gateways():
    for n in (0, 1, 2, 7, 8, 64, 255):
        frame = os.urandom(n)
        crc = crc16_modbus(frame)
        assert bytes([crc & 0xFF, crc >> 8]) == crc16(frame)


# -- CPython through a pty to the RTU bus simulator ------------------------------------------------


class PtyRs485:
    """The port interface over pyserial on the simulator's pty (opened with parity N: hardware/pty_port.py)."""

    def __init__(self, path: str, baud: int, parity: str) -> None:
        self.serial = serial.Serial(path, baudrate=baud, parity=serial.PARITY_NONE, timeout=0)
        self.char_us = uart_char_us(baud, 8, parity, 1)  # the simulator times the line with the real parity

    def send(self, frame: bytes) -> None:
        self.serial.write(frame)
        self.serial.flush()

    def recv(self, n: int, timeout_ms: int) -> bytes:
        self.serial.timeout = timeout_ms / 1000
        return self.serial.read(n)

    def discard(self) -> None:
        self.serial.reset_input_buffer()

    def close(self) -> None:
        self.serial.close()


class PtyBoard(SimBoard):
    """The simulated board whose RS485 port is the pty: everything else stays simulated."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.ports: list[PtyRs485] = []

    def rs485(self, uart_id, tx, rx, de, baud=9600, bits=8, parity="N", stop=1):  # type: ignore[override]
        port = PtyRs485(self.path, baud, parity)
        self.ports.append(port)
        return port


@pytest.fixture
def line(request: pytest.FixtureRequest) -> Iterator[tuple[RtuBusSimulator, SimulatedDevice, PtyBoard]]:
    model, pins = request.param
    spec = get_spec(model)
    device = SimulatedDevice(spec, unit_id=5, seed=11)
    for metric, value in pins.items():
        device.pin(metric, value)
    assert spec.serial is not None
    with RtuBusSimulator([device], baud=spec.serial.baud, parity=spec.serial.parity.value) as sim:
        board = PtyBoard(sim.port)
        try:
            yield sim, device, board
        finally:
            for port in board.ports:
                port.close()


WEATHER_PINS = {"wind_speed": 3.25, "wind_direction": 270, "air_humidity": 55.5, "air_temperature": 95.0,
                "air_pressure": 1013, "illuminance": 123456, "rainfall": 12.3}  # 95 degC: out of range
FLOW_PINS = {"flow_rate": -12.75, "flow_velocity": 1.5, "flow_total_positive": 987654, "flow_total_net": -42,
             "signal_quality": 87}


@pytest.mark.parametrize("line", [("renke-weather-fsxcs-n01", WEATHER_PINS), ("tuf2000m-flow", FLOW_PINS)],
                         indirect=True, ids=["renke-weather", "tuf2000m-flow"])
def test_node_polls_a_simulated_device_through_a_pty(line) -> None:
    sim, device, board = line
    spec = device.spec
    assert spec.serial is not None
    settings = {"uart": 2, "tx": 17, "rx": 16, "de": 4, "baud": spec.serial.baud, "parity": spec.serial.parity.value,
                "slave": device.unit_id, "spec": compact(spec)}
    sensors = main.build_sensors(board, {"modbus": settings})
    assert [(s[0], s[1]) for s in sensors] == [(p.metric, p.unit) for p in sorted(spec.points, key=lambda p: p.address)]
    values = {s[0]: s[2]() for s in sensors}  # one wake: the first read polls
    assert sim.stats.as_dict()["answered"] == len(settings["spec"]["b"])  # one request per block, not per metric
    for p in spec.points:  # what the gateway decodes from the registers the device holds
        assert values[p.metric] == decode(p, encode(p, device.value(p.metric))), p.metric
    poller = modbus_rtu.Poller(board.rs485(2, 17, 16, 4, spec.serial.baud, 8, spec.serial.parity.value, 1),
                               device.unit_id, settings["spec"])
    readings = poller.poll()
    assert [(m, v) for m, _u, v, _f in readings] == list(values.items())
    flagged = {metric for metric, _unit, _value, flags in readings if flags & Q_OUT_OF_RANGE}
    assert flagged == {p.metric for p in spec.points if not p.in_range(values[p.metric])}
    if spec.model.startswith("renke"):
        assert flagged == {"air_temperature"}
