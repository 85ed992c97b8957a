"""The hardware simulators: an RS485 line of Modbus RTU devices on a real pty, Modbus TCP, faults, signals.

Values are read through independent masters (pymodbus's sync clients, Debian's mbpoll, and a
byte-level client here) and compared with what the simulated device says it holds.  pymodbus's
serial client opens the pty with parity N: glibc refuses PARENB on ptys when nothing else
changes and pymodbus re-applies its settings right after opening (see hardware/pty_port.py);
the simulator still times the line as 8E1.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Iterator

import pytest
import serial
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from device_specs.codec import decode
from device_specs.registry import builtin_specs, get_spec, parse_spec
from device_specs.schema import Table
from fieldtrust.processes import spawn, stop
from hardware.faults import FaultSet
from hardware.modbus_pdu import crc16
from hardware.rtu_bus import RtuBusSimulator, char_time, frame_gap
from hardware.signal_binding import bind
from hardware.signals import DAY, EPOCH, SignalModel
from hardware.sim_device import IllegalAddress, IllegalValue, SimulatedDevice
from hardware.tcp_server import TcpSimulator

ALL_TYPES_SPEC = """
schema: fieldtrust.device-spec/1
model: test-all-types
version: 1.0.0
manufacturer: FieldTrust tests
name: every data type and byte order
category: weather
source: {document: test fixture, revision: "1"}
interface: modbus-rtu
serial: {baud: 9600, parity: E, stop_bits: 1, unit_id: 1}
timing: {max_registers_per_read: 40}
points:
  - {metric: air_temperature, unit: Cel, table: holding, address: 0, type: int16, scale: 0.1, range: [-40, 60]}
  - {metric: relative_humidity, unit: "%", table: holding, address: 1, type: uint16, order: BADC, scale: 0.1,
     range: [0, 100]}
  - {metric: pressure, unit: hPa, table: holding, address: 2, type: float32, range: [800, 1100]}
  - {metric: wind_speed, unit: m/s, table: holding, address: 4, type: float32, order: CDAB, range: [0, 60]}
  - {metric: rain_total, unit: mm, table: holding, address: 6, type: uint32, order: DCBA, scale: 0.1,
     range: [0, 400000]}
  - {metric: solar_radiation, unit: W/m2, table: holding, address: 8, type: int32, order: BADC, range: [0, 2000]}
  - {metric: energy, unit: Wh, table: holding, address: 10, type: uint64, range: [0, 1.0e12]}
  - {metric: dew_point, unit: Cel, table: holding, address: 14, type: float64, order: CDAB, range: [-60, 50]}
  - {metric: co2, unit: ppm, table: holding, address: 20, type: int64, order: DCBA, range: [0, 5000]}
  - {metric: serial_number, table: holding, address: 24, type: string, length: 4}
  - {metric: alarm_flags, table: holding, address: 28, type: bits, bit: 3}
  - {metric: heater_setpoint, unit: Cel, table: holding, address: 30, type: int16, scale: 0.1, writable: true,
     range: [0, 40]}
  - {metric: illuminance, unit: lx, table: input, address: 0, type: uint32, range: [0, 200000]}
  - {metric: pump_on, table: coil, address: 0, type: bits}
  - {metric: door_open, table: discrete, address: 5, type: bits}
"""

PINS: dict[str, float | str | bool] = {
    "air_temperature": -12.3, "relative_humidity": 56.7, "pressure": 1001.25, "wind_speed": 7.5,
    "rain_total": 1234.5, "solar_radiation": 812, "energy": 123456789012, "dew_point": -3.125,
    "co2": 612, "serial_number": "AB12XY", "heater_setpoint": 21.5, "illuminance": 98765,
}


@pytest.fixture
def all_types():
    return parse_spec(ALL_TYPES_SPEC, "test-all-types")


@pytest.fixture
def soil():
    return get_spec("jxct-soil-7in1")


def frozen_clock() -> float:
    """A fixed instant, so a value read over the wire and one asked of the device share their noise draw."""
    return EPOCH + 500.25 * DAY


@pytest.fixture
def bus(all_types, soil) -> Iterator[RtuBusSimulator]:
    """Unit 1: every type; unit 2: the JXCT soil probe at a frozen instant; 9600 8E1."""
    sim = RtuBusSimulator([SimulatedDevice(all_types, unit_id=1),
                           SimulatedDevice(soil, unit_id=2, seed=7, clock=frozen_clock)], baud=9600, parity="E")
    with sim:
        yield sim


@pytest.fixture
def client(bus) -> Iterator[ModbusSerialClient]:
    c = ModbusSerialClient(bus.port, baudrate=9600, parity="N", stopbits=1, timeout=0.3, retries=0)
    assert c.connect()
    try:
        yield c
    finally:
        c.close()


class RawMaster:
    """A byte-level master on the pty: exact frames, exact timing, no library in between."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)

    def close(self) -> None:
        os.close(self.fd)

    def send(self, unit: int, pdu: bytes) -> None:
        frame = bytes((unit,)) + pdu
        os.write(self.fd, frame + crc16(frame))

    def receive(self, size: int | None, timeout: float = 0.3, quiet: float = 0.03) -> bytes:
        """``size`` bytes (or, with None, whatever arrives until ``quiet`` seconds of silence)."""
        buf = b""
        deadline = time.monotonic() + timeout
        while size is None or len(buf) < size:
            wait = deadline - time.monotonic()
            if buf and size is None:
                wait = min(wait, quiet)
            if wait <= 0 or not select.select([self.fd], [], [], wait)[0]:
                break
            buf += os.read(self.fd, 256)
        return buf

    def read_registers(self, unit: int, address: int, count: int, fn: int = 3) -> bytes:
        self.send(unit, struct.pack(">BHH", fn, address, count))
        return self.receive(5 + 2 * count)


@pytest.fixture
def raw(bus) -> Iterator[RawMaster]:
    m = RawMaster(bus.port)
    try:
        yield m
    finally:
        m.close()


def registers_of(frame: bytes) -> list[int]:
    assert crc16(frame[:-2]) == frame[-2:], f"bad CRC in {frame.hex()}"
    return list(struct.unpack(f">{frame[2] // 2}H", frame[3:-2]))


# -- values through pymodbus ------------------------------------------------------------------------
def test_pymodbus_reads_every_type_and_order(bus, client, all_types):
    dev = bus.devices[1]
    for metric, value in PINS.items():
        dev.pin(metric, value)
    regs = client.read_holding_registers(0, count=31, device_id=1)
    assert not regs.isError(), regs
    for p in all_types.points:
        if p.table is Table.HOLDING and p.metric in PINS:
            got = decode(p, regs.registers[p.address : p.address + p.register_count])
            assert got == dev.value(p.metric), p.metric
            assert got == pytest.approx(PINS[p.metric]) if not isinstance(got, str) else got == PINS[p.metric]
    assert regs.registers[18:20] == [0, 0]  # unmapped hole between mapped points reads 0
    inputs = client.read_input_registers(0, count=2, device_id=1)
    assert decode(all_types.point("illuminance"), inputs.registers) == 98765


def test_unpinned_values_match_what_device_reports(bus, client):
    soil = bus.devices[2]
    regs = client.read_holding_registers(0x12, count=2, device_id=2).registers
    spec = soil.spec
    assert decode(spec.point("soil_moisture"), regs[0:1]) == soil.value("soil_moisture")
    assert decode(spec.point("soil_temperature"), regs[1:2]) == soil.value("soil_temperature")
    assert 0 < soil.value("soil_moisture") < 100


def test_bits_coils_and_discrete_inputs(bus, client):
    dev = bus.devices[1]
    dev.pin("pump_on", True)
    dev.pin("door_open", False)
    dev.pin("alarm_flags", True)
    assert client.read_coils(0, count=1, device_id=1).bits[0] is True
    assert client.read_discrete_inputs(5, count=1, device_id=1).bits[0] is False
    assert client.read_holding_registers(28, count=1, device_id=1).registers == [1 << 3]


def test_writes_to_writable_points_only(bus, client):
    dev = bus.devices[1]
    assert not client.write_register(30, 235, device_id=1).isError()
    assert dev.value("heater_setpoint") == pytest.approx(23.5)
    assert not client.write_registers(30, [180], device_id=1).isError()
    assert client.read_holding_registers(30, count=1, device_id=1).registers == [180]
    refused = client.write_register(0, 1, device_id=1)
    assert refused.isError() and refused.exception_code == 2


def test_exceptions_for_illegal_address_and_function(bus, client):
    outside = client.read_holding_registers(31, count=1, device_id=1)  # past the mapped span
    assert outside.isError() and outside.exception_code == 2
    before = client.read_holding_registers(0, count=1, device_id=2)  # the JXCT map starts at 6
    assert before.isError() and before.exception_code == 2
    too_long = client.read_holding_registers(6, count=33, device_id=2)  # max_registers_per_read 32
    assert too_long.isError() and too_long.exception_code == 2
    no_inputs = client.read_input_registers(6, count=1, device_id=2)
    assert no_inputs.isError() and no_inputs.exception_code == 2
    coil_write = client.write_coil(0, True, device_id=1)  # function 5 is not served
    assert coil_write.isError() and coil_write.exception_code == 1
    assert bus.stats.exceptions == 5


def test_device_level_errors(all_types):
    dev = SimulatedDevice(all_types)
    with pytest.raises(IllegalAddress):
        dev.read(Table.HOLDING, 0, 41)
    with pytest.raises(IllegalValue):
        dev.read(Table.HOLDING, 0, 0)
    with pytest.raises(KeyError):
        dev.pin("no_such_metric", 1)
    with pytest.raises(ValueError):
        RtuBusSimulator([dev, SimulatedDevice(all_types)])  # two devices at unit 1


def test_unknown_unit_gets_no_answer(bus, client):
    with pytest.raises(ModbusIOException):
        client.read_holding_registers(6, count=1, device_id=9)
    assert bus.stats.ignored >= 1 and bus.stats.answered == 0


def test_broadcast_write_reaches_all_and_is_not_answered(all_types, raw, bus):
    raw.send(0, struct.pack(">BHH", 6, 30, 77))
    assert raw.receive(None, timeout=0.15) == b""
    assert bus.stats.broadcasts == 1
    assert bus.devices[1].value("heater_setpoint") == pytest.approx(7.7)


def test_line_resynchronises_after_noise(raw, bus):
    os.write(raw.fd, b"\x01\x03\x55\xaa\x13")  # a torn frame
    time.sleep(0.02)
    frame = raw.read_registers(2, 6, 1)
    assert len(registers_of(frame)) == 1
    assert bus.stats.ignored == 1


def test_master_can_close_and_reopen_with_parity(bus):
    """A master opening the pty 8E1 (pyserial, once per open) gets answers after every reopen."""
    for _ in range(3):
        with serial.Serial(bus.port, 9600, parity=serial.PARITY_EVEN, timeout=0.3) as port:
            frame = bytes((2, 3, 0, 6, 0, 1))
            port.write(frame + crc16(frame))
            assert len(registers_of(port.read(7))) == 1
        time.sleep(0.02)  # the simulator restores the pty's settings when it sees the close


# -- line timing -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("baud", "parity", "stop_bits", "bits"),
                         [(9600, "E", 1, 11), (9600, "N", 1, 10), (19200, "N", 2, 11), (115200, "E", 1, 11)])
def test_transactions_take_line_time(soil, baud, parity, stop_bits, bits):
    count = 20 if baud == 9600 and parity == "E" else 10
    char = bits / baud
    assert char_time(baud, parity, stop_bits) == pytest.approx(char)
    gap = 0.00175 if baud > 19200 else 3.5 * char
    assert frame_gap(baud, parity, stop_bits) == pytest.approx(gap)
    per_tx = (8 + 13) * char + gap  # request, silence, answer with 4 registers
    with RtuBusSimulator([SimulatedDevice(soil, unit_id=1)], baud=baud, parity=parity, stop_bits=stop_bits) as sim:
        m = RawMaster(sim.port)
        try:
            start = time.perf_counter()
            for _ in range(count):
                assert len(registers_of(m.read_registers(1, 6, 4))) == 4
            elapsed = time.perf_counter() - start
        finally:
            m.close()
    floor = count * per_tx
    assert floor * 0.99 <= elapsed <= floor * 1.2 + 0.01, (elapsed, floor)


def test_turnaround_adds_to_each_answer(soil):
    with RtuBusSimulator([SimulatedDevice(soil)], baud=115200, turnaround_ms=20) as sim:
        m = RawMaster(sim.port)
        try:
            start = time.perf_counter()
            m.read_registers(1, 6, 1)
            assert time.perf_counter() - start >= 0.020
        finally:
            m.close()


# -- faults -----------------------------------------------------------------------------------------
def test_fault_no_answer_and_recovery(bus, raw):
    dev = bus.devices[2]
    dev.faults.no_answer = True
    assert raw.read_registers(2, 6, 1) == b""
    assert bus.stats.silenced == 1
    dev.faults.no_answer = False
    assert len(registers_of(raw.read_registers(2, 6, 1))) == 1


def test_fault_late_answer(bus, raw):
    bus.devices[2].faults.late_ms = 120
    start = time.perf_counter()
    frame = raw.read_registers(2, 6, 1)
    assert time.perf_counter() - start >= 0.120 + 10 * bus.char_s
    assert len(registers_of(frame)) == 1


def test_late_device_does_not_hold_up_the_line(bus, raw):
    bus.devices[2].faults.late_ms = 300
    raw.send(2, struct.pack(">BHH", 3, 6, 1))
    assert raw.receive(7, timeout=0.05) == b""  # the master gives up on unit 2...
    start = time.perf_counter()
    assert len(registers_of(raw.read_registers(1, 0, 1))) == 1  # ...and unit 1 answers at line speed
    assert time.perf_counter() - start < 0.05
    late = raw.receive(7, timeout=0.5)  # unit 2's answer still comes, late, as on a real line
    assert late[:2] == b"\x02\x03" and len(registers_of(late)) == 1


def test_fault_crc_errors(bus, raw):
    bus.devices[2].faults.crc_error_rate = 1.0
    frame = raw.read_registers(2, 6, 1)
    assert len(frame) == 7 and crc16(frame[:-2]) != frame[-2:]
    assert bus.stats.crc_errors_sent == 1


def test_fault_garbage(bus, raw):
    bus.devices[2].faults.garbage_rate = 1.0
    seen = []
    for _ in range(4):
        raw.send(2, struct.pack(">BHH", 3, 6, 1))
        seen.append(raw.receive(None, timeout=0.2))
    clean = bytes((2, 3, 2))
    assert all(s and not (len(s) == 7 and s.startswith(clean) and crc16(s[:5]) == s[5:]) for s in seen)
    assert bus.stats.garbage_sent == 4


def test_fault_stuck_freezes_values(soil):
    now = [EPOCH + 200 * 86400.0]
    dev = SimulatedDevice(soil, clock=lambda: now[0])
    dev.faults.stuck = True
    frozen = {p.metric: dev.value(p.metric) for p in soil.points}
    now[0] += 6 * 3600
    assert {p.metric: dev.value(p.metric) for p in soil.points} == frozen
    dev.faults.stuck = False
    assert dev.value("soil_temperature") != frozen["soil_temperature"]


def test_fault_flapping_device(soil):
    now = [EPOCH + 10 * 86400.0]
    dev = SimulatedDevice(soil, clock=lambda: now[0])
    dev.faults.flap(offline_for_s=10, online_for_s=20)
    with RtuBusSimulator([dev], baud=115200) as sim:
        m = RawMaster(sim.port)
        try:
            assert m.read_registers(1, 6, 1)
            now[0] += 25
            assert m.read_registers(1, 6, 1) == b""
            now[0] += 6
            assert m.read_registers(1, 6, 1)
        finally:
            m.close()
        assert sim.stats.silenced == 1


def test_fault_dice_are_seeded_and_cli_syntax_parses():
    a, b = FaultSet(seed=3), FaultSet(seed=3)
    assert [a.roll(0.5) for _ in range(50)] == [b.roll(0.5) for _ in range(50)]
    f = FaultSet()
    for text in ("no-answer", "late:250", "crc:0.1", "garbage:0.05", "stuck", "flap:5/30"):
        f.apply(text)
    assert f.describe() == "no-answer late:250 crc:0.1 garbage:0.05 stuck flap:5/30"
    for bad in ("crc:2", "late:x", "flap:5", "explode", "stuck:1"):
        with pytest.raises(ValueError):
            FaultSet().apply(bad)


# -- Modbus TCP --------------------------------------------------------------------------------------
@pytest.fixture
def tcp(all_types, soil) -> Iterator[TcpSimulator]:
    devices = [SimulatedDevice(all_types, unit_id=1), SimulatedDevice(soil, unit_id=2, seed=7, clock=frozen_clock)]
    with TcpSimulator(devices) as sim:
        yield sim


@pytest.fixture
def tcp_client(tcp) -> Iterator[ModbusTcpClient]:
    c = ModbusTcpClient("127.0.0.1", port=tcp.port, timeout=0.3, retries=0)
    assert c.connect()
    try:
        yield c
    finally:
        c.close()


def test_tcp_serves_several_units(tcp, tcp_client, all_types):
    dev = tcp.devices[1]
    for metric, value in PINS.items():
        dev.pin(metric, value)
    regs = tcp_client.read_holding_registers(0, count=31, device_id=1).registers
    for metric in ("pressure", "wind_speed", "rain_total", "energy", "dew_point", "co2", "serial_number"):
        p = all_types.point(metric)
        assert decode(p, regs[p.address : p.address + p.register_count]) == dev.value(metric)
    soil = tcp.devices[2]
    moisture = tcp_client.read_holding_registers(0x12, count=1, device_id=2).registers
    assert decode(soil.spec.point("soil_moisture"), moisture) == soil.value("soil_moisture")
    assert not tcp_client.write_register(30, 190, device_id=1).isError()
    assert dev.value("heater_setpoint") == pytest.approx(19.0)


def test_tcp_exceptions(tcp, tcp_client):
    assert tcp_client.read_holding_registers(40, count=1, device_id=1).exception_code == 2
    assert tcp_client.write_coil(0, True, device_id=1).exception_code == 1
    assert tcp_client.read_holding_registers(6, count=1, device_id=9).exception_code == 0x0B  # no such unit
    assert tcp.stats.exceptions == 3


def test_tcp_faults(tcp, tcp_client):
    dev = tcp.devices[2]
    dev.faults.no_answer = True
    with pytest.raises(ModbusIOException):
        tcp_client.read_holding_registers(6, count=1, device_id=2)
    dev.faults.no_answer = False
    dev.faults.late_ms = 150
    start = time.perf_counter()
    assert not tcp_client.read_holding_registers(6, count=1, device_id=2).isError()
    assert time.perf_counter() - start >= 0.15
    dev.faults.late_ms = 0
    dev.faults.garbage_rate = 1.0
    with pytest.raises(ModbusIOException):
        tcp_client.read_holding_registers(6, count=1, device_id=2)
    assert tcp.stats.garbage_sent == 1 and tcp.stats.silenced == 1


def test_tcp_stop_ends_every_thread(soil):
    sim = TcpSimulator([SimulatedDevice(soil)]).start()
    clients = [ModbusTcpClient("127.0.0.1", port=sim.port, timeout=0.5, retries=0) for _ in range(3)]
    try:
        for c in clients:
            assert not c.read_holding_registers(6, count=1, device_id=1).isError()
        assert sim.stats.connections == 3
    finally:
        sim.stop()
        for c in clients:
            c.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("modbus-tcp")]


# -- a standard master: mbpoll ---------------------------------------------------------------------
needs_mbpoll = pytest.mark.skipif(shutil.which("mbpoll") is None,
                                  reason="mbpoll is not installed (Debian: apt-get install -y mbpoll)")


def mbpoll(*args: str) -> dict[int, str]:
    """Run mbpoll once; its values by (0-based) reference."""
    proc = spawn(["mbpoll", "-1", "-0", "-o", "1", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, errors = proc.communicate(timeout=10)
    finally:
        stop(proc)
    assert proc.returncode == 0, errors or out
    return {int(m[1]): m[2] for m in re.finditer(r"^\[(\d+)\]:\s+(\S+)", out, re.MULTILINE)}


def check_with_mbpoll(dev: SimulatedDevice, *where: str) -> None:
    spec = dev.spec
    regs = mbpoll("-t", "4", "-r", "0", "-c", "31", *where)
    registers = [int(regs[i]) & 0xFFFF for i in range(31)]
    for metric in PINS:
        p = spec.point(metric)
        if p.table is Table.HOLDING:
            assert decode(p, registers[p.address : p.address + p.register_count]) == dev.value(metric), metric
    assert float(mbpoll("-t", "4:float", "-B", "-r", "2", *where)[2]) == dev.value("pressure")  # ABCD
    assert float(mbpoll("-t", "4:float", "-r", "4", *where)[4]) == dev.value("wind_speed")  # CDAB, mbpoll's default


@needs_mbpoll
def test_mbpoll_reads_rtu_line(bus):
    dev = bus.devices[1]
    for metric, value in PINS.items():
        dev.pin(metric, value)
    check_with_mbpoll(dev, "-m", "rtu", "-a", "1", "-b", "9600", "-P", "even", bus.port)
    assert bus.stats.answered == 3


@needs_mbpoll
def test_mbpoll_reads_tcp(tcp):
    dev = tcp.devices[1]
    for metric, value in PINS.items():
        dev.pin(metric, value)
    check_with_mbpoll(dev, "-m", "tcp", "-a", "1", "-p", str(tcp.port), "127.0.0.1")


# -- the command line --------------------------------------------------------------------------------
def sim_cli(*args: str) -> subprocess.Popen:
    return spawn([sys.executable, "-m", "fieldtrust.cli.main", "sim", "modbus", *args],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def first_line(proc: subprocess.Popen, timeout: float = 15.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the simulator printed nothing"
    return proc.stdout.readline().strip()


def test_cli_rtu_line_serves_then_stops_on_sigterm():
    proc = sim_cli("--spec", "jxct-soil-7in1", "--spec", "jxct-soil-7in1", "--rtu", "--parity", "E",
                   "--seed", "3", "--status-every", "0.2")
    try:
        line = first_line(proc)
        m = re.fullmatch(r"listening rtu (/dev/pts/\d+) 9600 8E1 units 1,2", line)
        assert m, line
        c = ModbusSerialClient(m[1], baudrate=9600, parity="N", timeout=0.5, retries=0)
        try:
            moisture = c.read_holding_registers(0x12, count=1, device_id=2)
        finally:
            c.close()
        assert not moisture.isError() and 0 < moisture.registers[0] <= 1000
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _, errors = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert "requests 1 answered 1" in errors
    finally:
        stop(proc)


def test_cli_tcp_with_a_fault():
    proc = sim_cli("--spec", "jxct-soil-7in1", "--spec", "cwt-soil-7in1", "--tcp", "0", "--fault", "2=no-answer")
    try:
        m = re.fullmatch(r"listening tcp 127\.0\.0\.1:(\d+) units 1,2", first_line(proc))
        assert m
        c = ModbusTcpClient("127.0.0.1", port=int(m[1]), timeout=0.3, retries=0)
        try:
            assert not c.read_holding_registers(6, count=1, device_id=1).isError()
            with pytest.raises(ModbusIOException):
                c.read_holding_registers(0, count=1, device_id=2)
        finally:
            c.close()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
        assert proc.returncode == 0
    finally:
        stop(proc)


@pytest.mark.parametrize(("args", "message"), [
    (("--spec", "jxct-soil-7in1"), "exactly one of --tcp"),
    (("--spec", "no-such-model", "--rtu"), "unknown sensor model"),
    (("--spec", "ds18b20", "--rtu"), "not Modbus"),
    (("--spec", "jxct-soil-7in1", "--rtu", "--fault", "explode"), "unknown fault"),
    (("--spec", "jxct-soil-7in1", "--rtu", "--parity", "X"), "--parity"),
    (("--spec", "jxct-soil-7in1", "--rtu", "--unit", "1", "--unit", "2"), "--unit"),
])
def test_cli_bad_options_exit_2(args, message):
    proc = sim_cli(*args)
    try:
        _, errors = proc.communicate(timeout=15)
    finally:
        stop(proc)
    assert proc.returncode == 2
    assert message in errors


# -- the signal model --------------------------------------------------------------------------------
def week(model: SignalModel, start_day: int = 180, step_s: float = 600.0) -> list[float]:
    start = EPOCH + start_day * DAY
    return [start + i * step_s for i in range(int(7 * DAY / step_s))]


def test_signals_follow_the_day():
    model = SignalModel(seed=1)
    times = week(model)
    by_hour: dict[int, list[float]] = {}
    soil_by_hour: dict[int, list[float]] = {}
    for t in times:
        by_hour.setdefault(int(model.hour(t)), []).append(model.air_temperature(t))
        soil_by_hour.setdefault(int(model.hour(t)), []).append(model.soil_temperature(t))
    air = {h: statistics.mean(v) for h, v in by_hour.items()}
    soil = {h: statistics.mean(v) for h, v in soil_by_hour.items()}
    assert air[15] - air[3] > 4.0  # warm afternoons, cool nights
    assert max(soil.values()) - min(soil.values()) < 0.5 * (max(air.values()) - min(air.values()))  # damped
    assert max(soil, key=soil.get) > max(air, key=air.get)  # and late
    dry = [t for t in times if model.rain_influence(t) == 0.0]
    temps = [model.air_temperature(t) for t in dry]
    humid = [model.relative_humidity(t) for t in dry]
    assert statistics.correlation(temps, humid) < -0.6
    assert all(model.illuminance(t) == 0.0 for t in times if model.hour(t) < 5.5)
    assert all(model.illuminance(t) > 5000 for t in times if 11 <= model.hour(t) <= 13)


def test_soil_dries_and_is_wetted_by_rain_and_irrigation():
    model = SignalModel(seed=2)
    times = week(model, start_day=200)
    moisture = [model.soil_moisture(t) for t in times]
    wet = {i for i, t in enumerate(times) if model.rain_rate(t) > 0 or model.irrigating(t)}
    assert wet, "a week with neither rain nor irrigation"
    rises = [i for i in range(1, len(times)) if moisture[i] > moisture[i - 1]]
    assert rises and all(i in wet or i - 1 in wet for i in rises)  # only water raises it
    assert sum(1 for i in range(1, len(times)) if moisture[i] < moisture[i - 1]) > len(times) // 2
    assert all(model.pump_power(t) > 1000 for t in times if model.irrigating(t))
    assert all(12.0 <= m <= 46.0 for m in moisture)


def test_counters_only_grow():
    model = SignalModel(seed=3)
    times = week(model, start_day=300, step_s=300.0)
    for name in ("rain_total", "energy", "water_total", "irrigation_hours"):
        values = [getattr(model, name)(t) for t in times]
        assert all(b >= a for a, b in zip(values, values[1:], strict=False)), name
    energy = [model.energy(t) for t in times]
    assert all(b > a for a, b in zip(energy, energy[1:], strict=False))
    assert model.rain_total(times[-1]) > model.rain_total(times[0])  # it rained that week (seed 3)


def test_signals_are_deterministic_per_seed():
    t = EPOCH + 123.4 * DAY
    assert SignalModel(seed=5).air_temperature(t) == SignalModel(seed=5).air_temperature(t)
    assert SignalModel(seed=5).soil_moisture(t) != SignalModel(seed=6).soil_moisture(t)
    for when in (t, EPOCH - 40 * DAY):  # evaluation order must not matter, before EPOCH either
        later_first = SignalModel(seed=5)
        later_first.soil_moisture(when + 3 * DAY)
        assert later_first.soil_moisture(when) == SignalModel(seed=5).soil_moisture(when)


def test_every_shipped_modbus_device_stays_in_range_for_a_week():
    now = [EPOCH + 400 * DAY]
    for spec in builtin_specs().values():
        if not spec.interface.is_modbus:
            continue
        dev = SimulatedDevice(spec, seed=4, clock=lambda: now[0])
        now[0] = EPOCH + 400 * DAY
        last: dict[str, float] = {}
        for _ in range(7 * 24):
            for p in spec.points:
                value = dev.value(p.metric)
                if isinstance(value, bool | str):
                    continue
                assert p.in_range(value), (spec.model, p.metric, value)
                if bind(p, spec.category).signal.counter:
                    assert value >= last.get(p.metric, value), (spec.model, p.metric)
                    last[p.metric] = value
            now[0] += 3600.0
