"""The Modbus master: frames byte for byte, typed errors, recovery after noise, over real ptys."""

from __future__ import annotations

import os
import socket
import threading
import time
import tty
from collections.abc import Iterator

import pytest
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsRequest, ReadDiscreteInputsRequest
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

from device_specs.codec import decode
from device_specs.registry import get_spec, parse_spec
from device_specs.schema import Table
from edge_agent.bus.master import Master, request_pdu
from edge_agent.bus.rtu import RtuTransport, crc_ok, encode_frame, silent_interval_s
from edge_agent.bus.tcp import TcpTransport
from edge_agent.bus.transport import CrcError, ExceptionResponse, FrameError, LinkError, Timeout
from hardware.rtu_bus import RtuBusSimulator
from hardware.sim_device import SimulatedDevice
from hardware.tcp_server import TcpSimulator

MIXED_SPEC = """
schema: fieldtrust.device-spec/1
model: test-every-table
version: 1.0.0
manufacturer: FieldTrust tests
name: one point in each Modbus table
category: greenhouse
source: {document: test fixture, revision: "1"}
interface: modbus-rtu
serial: {baud: 9600, parity: E, stop_bits: 1, unit_id: 1}
points:
  - {metric: pump_on, table: coil, address: 0, type: bits}
  - {metric: door_open, table: discrete, address: 3, type: bits}
  - {metric: setpoint, unit: Cel, table: holding, address: 10, type: int16, scale: 0.1, writable: true}
  - {metric: setpoint_band, unit: Cel, table: holding, address: 11, type: uint32, scale: 0.1, writable: true}
  - {metric: energy, unit: kWh, table: input, address: 100, type: float32, order: CDAB}
"""


# -- frames and CRC against published vectors ---------------------------------------------------
@pytest.mark.parametrize(
    ("unit", "pdu", "frame"),
    [
        (1, ReadHoldingRegistersRequest(address=0, count=1), "01 03 00 00 00 01 84 0A"),
        (1, ReadHoldingRegistersRequest(address=0, count=10), "01 03 00 00 00 0A C5 CD"),
        # the Modbus-over-serial-line guide's example: unit 17, holding 40108..40110
        (17, ReadHoldingRegistersRequest(address=0x6B, count=3), "11 03 00 6B 00 03 76 87"),
        (17, ReadCoilsRequest(address=0x13, count=0x25), "11 01 00 13 00 25 0E 84"),
        (17, ReadDiscreteInputsRequest(address=0xC4, count=0x16), "11 02 00 C4 00 16 BA A9"),
        (17, ReadInputRegistersRequest(address=0x08, count=1), "11 04 00 08 00 01 B2 98"),
        (17, WriteSingleRegisterRequest(address=1, registers=[3]), "11 06 00 01 00 03 9A 9B"),
        (17, WriteMultipleRegistersRequest(address=1, registers=[0x000A, 0x0102]),
         "11 10 00 01 00 02 04 00 0A 01 02 C6 F0"),
    ],
)
def test_request_frames_match_reference_vectors(unit: int, pdu: ModbusPDU, frame: str) -> None:
    assert encode_frame(unit, request_pdu(pdu)).hex(" ").upper() == frame


@pytest.mark.parametrize(
    "frame",
    ["11 03 06 AE 41 56 52 43 40 49 AD", "01 83 02 C0 F1", "01 03 02 00 2A 39 9B"],
)
def test_reference_responses_pass_the_crc_check(frame: str) -> None:
    raw = bytes.fromhex(frame)
    assert crc_ok(raw)
    assert not crc_ok(raw[:-1] + bytes([raw[-1] ^ 1]))


def test_silent_interval_follows_the_baud_rate() -> None:
    assert silent_interval_s(9600, "E", 1) == pytest.approx(3.5 * 11 / 9600)
    assert silent_interval_s(9600, "N", 1) == pytest.approx(3.5 * 10 / 9600)
    assert silent_interval_s(115200) == 0.00175


# -- a hand-driven line: the test plays the device byte for byte --------------------------------
class ScriptedDevice:
    """A pty whose far end answers each request with the next canned reply (or nothing)."""

    def __init__(self, replies: list[bytes | None]) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        self._slave = slave
        self.requests: list[bytes] = []
        self._replies = replies
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        for reply in self._replies:
            self.requests.append(os.read(self.master, 256))
            if reply is not None:
                os.write(self.master, reply)

    def close(self) -> None:
        self._thread.join(2)
        os.close(self.master)
        os.close(self._slave)


@pytest.fixture
def scripted() -> Iterator[list[ScriptedDevice]]:
    made: list[ScriptedDevice] = []
    yield made
    for d in made:
        d.close()


def test_reference_response_decodes_to_its_registers(scripted: list[ScriptedDevice]) -> None:
    dev = ScriptedDevice([bytes.fromhex("11 03 06 AE 41 56 52 43 40 49 AD")])
    scripted.append(dev)
    master = Master(RtuTransport(dev.port, 9600, "E", 1), timeout_s=0.5)
    try:
        result = master.read(17, Table.HOLDING, 0x6B, 3)
    finally:
        master.close()
    assert dev.requests == [bytes.fromhex("11 03 00 6B 00 03 76 87")]
    assert result.values == [0xAE41, 0x5652, 0x4340]


def test_exception_answer_ends_after_five_bytes_and_is_typed(scripted: list[ScriptedDevice]) -> None:
    dev = ScriptedDevice([bytes.fromhex("01 83 02 C0 F1")])
    scripted.append(dev)
    master = Master(RtuTransport(dev.port, 9600, "E", 1), timeout_s=2.0)
    t0 = time.monotonic()
    with pytest.raises(ExceptionResponse) as info:
        master.read(1, Table.HOLDING, 0, 10)
    master.close()
    assert info.value.code == 2 and info.value.function == 3
    assert time.monotonic() - t0 < 0.5  # read by length, not by waiting out the timeout
    assert master.counters["exceptions"] == 1 and master.counters["retries"] == 0


def test_answer_from_another_unit_is_a_frame_error_then_the_line_recovers(scripted: list[ScriptedDevice]) -> None:
    good = bytes.fromhex("01 03 02 00 2A 39 9B")
    dev = ScriptedDevice([bytes.fromhex("02 03 02 00 2A 7D 9B"), good])
    scripted.append(dev)
    master = Master(RtuTransport(dev.port, 9600, "E", 1), timeout_s=0.3)
    with pytest.raises(FrameError):
        master.read(1, Table.HOLDING, 0, 1)
    assert master.read(1, Table.HOLDING, 0, 1).values == [42]
    master.close()


def test_missing_port_is_a_link_error() -> None:
    master = Master(RtuTransport("/dev/fieldtrust-no-such-port", 9600), timeout_s=0.1, retries=1)
    with pytest.raises(LinkError):
        master.read(1, Table.HOLDING, 0, 1)
    assert master.counters["link_errors"] == 2 and master.counters["retries"] == 1


# -- against the simulated RS485 line -------------------------------------------------------------
@pytest.fixture
def soil_line() -> Iterator[tuple[SimulatedDevice, Master]]:
    dev = SimulatedDevice(get_spec("jxct-soil-7in1"), unit_id=1, seed=3)
    with RtuBusSimulator([dev], baud=9600, parity="E") as sim:
        master = Master(RtuTransport(sim.port, 9600, "E", 1), timeout_s=0.15)
        try:
            yield dev, master
        finally:
            master.close()


def test_read_decodes_the_simulated_values(soil_line: tuple[SimulatedDevice, Master]) -> None:
    dev, master = soil_line
    dev.pin("soil_moisture", 31.4)
    dev.pin("soil_temperature", -3.5)
    values = master.read(1, Table.HOLDING, 0x12, 2).values
    spec = dev.spec
    assert decode(spec.point("soil_moisture"), values[:1]) == 31.4
    assert decode(spec.point("soil_temperature"), values[1:]) == -3.5


def test_unit_nobody_has_times_out_and_is_counted(soil_line: tuple[SimulatedDevice, Master]) -> None:
    _dev, master = soil_line
    t0 = time.monotonic()
    with pytest.raises(Timeout):
        master.read(9, Table.HOLDING, 0x12, 1)
    assert 0.15 <= time.monotonic() - t0 < 0.4
    assert master.counters["timeouts"] == 1
    assert master.read(1, Table.HOLDING, 0x12, 1).values  # the line is fine afterwards


def test_illegal_address_is_exception_02(soil_line: tuple[SimulatedDevice, Master]) -> None:
    _dev, master = soil_line
    with pytest.raises(ExceptionResponse) as info:
        master.read(1, Table.HOLDING, 0x4000, 1)
    assert info.value.code == 2


@pytest.mark.parametrize("fault", ["crc_error_rate", "garbage_rate"])
def test_noise_is_counted_and_the_next_transaction_succeeds(
    soil_line: tuple[SimulatedDevice, Master], fault: str
) -> None:
    dev, master = soil_line
    dev.pin("soil_moisture", 12.5)
    setattr(dev.faults, fault, 1.0)
    for _ in range(6):
        with pytest.raises((CrcError, FrameError, Timeout)):
            master.read(1, Table.HOLDING, 0x12, 1)
    errors = sum(master.counters[k] for k in ("crc_errors", "frame_errors", "timeouts"))
    assert errors == 6
    if fault == "crc_error_rate":
        assert master.counters["crc_errors"] == 6
    else:
        assert master.counters["frame_errors"] + master.counters["crc_errors"] >= 5  # noise is seen as such
    setattr(dev.faults, fault, 0.0)
    assert master.read(1, Table.HOLDING, 0x12, 1).values == [125]


def test_retries_hide_a_single_bad_answer(soil_line: tuple[SimulatedDevice, Master]) -> None:
    dev, master = soil_line
    master.retries = 5
    dev.faults.crc_error_rate = 0.3
    for _ in range(10):
        master.read(1, Table.HOLDING, 0x12, 2)
    assert master.counters["crc_errors"] >= 1
    assert master.counters["retries"] == master.counters["crc_errors"]


def test_every_table_and_both_writes() -> None:
    spec = parse_spec(MIXED_SPEC)
    dev = SimulatedDevice(spec, unit_id=7, seed=1)
    dev.pin("pump_on", True)
    dev.pin("door_open", True)
    dev.pin("energy", 1234.5)
    with RtuBusSimulator([dev], baud=19200, parity="E") as sim:
        master = Master(RtuTransport(sim.port, 19200, "E", 1), timeout_s=0.2)
        try:
            assert master.read(7, Table.COIL, 0, 1).values == [1]
            assert master.read(7, Table.DISCRETE, 3, 1).values == [1]
            energy = master.read(7, Table.INPUT, 100, 2).values
            assert decode(spec.point("energy"), energy) == 1234.5
            master.write_register(7, 10, 215)
            master.write_registers(7, 11, [0, 35])
            values = master.read(7, Table.HOLDING, 10, 3).values
            assert decode(spec.point("setpoint"), values[:1]) == 21.5
            assert decode(spec.point("setpoint_band"), values[1:]) == 3.5
            with pytest.raises(ExceptionResponse) as info:
                master.write_register(7, 100, 1)
            assert info.value.code == 2
        finally:
            master.close()


# -- Modbus TCP -------------------------------------------------------------------------------------
def test_tcp_request_carries_an_mbap_header_and_matches_transaction_ids() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            for _ in range(2):
                request = conn.recv(260)
                seen.append(request)
                tid = request[:2]
                if len(seen) == 2:  # first a stale answer (an older id), then the real one
                    conn.sendall(b"\x00\x01\x00\x00\x00\x05\x01\x03\x02\x00\x07")
                conn.sendall(tid + bytes.fromhex("00 00 00 05 01 03 02 00 2A"))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    transport = TcpTransport("127.0.0.1", server.getsockname()[1])
    master = Master(transport, timeout_s=1.0)
    try:
        assert master.read(1, Table.HOLDING, 0, 1).values == [42]
        assert master.read(1, Table.HOLDING, 0, 1).values == [42]
    finally:
        master.close()
        thread.join(2)
        server.close()
    assert seen == [bytes.fromhex("00 01 00 00 00 06 01 03 00 00 00 01"),
                    bytes.fromhex("00 02 00 00 00 06 01 03 00 00 00 01")]
    assert transport.discarded_frames == 1


def test_tcp_errors_are_typed_and_a_broken_connection_is_reopened() -> None:
    dev = SimulatedDevice(get_spec("jxct-soil-7in1"), unit_id=1, seed=0)
    dev.pin("soil_moisture", 40.0)
    sim = TcpSimulator([dev]).start()
    port = sim.port
    master = Master(TcpTransport("127.0.0.1", port), timeout_s=0.2)
    try:
        assert master.read(1, Table.HOLDING, 0x12, 1).values == [400]
        with pytest.raises(ExceptionResponse) as info:
            master.read(5, Table.HOLDING, 0x12, 1)  # a gateway answers for a unit it cannot reach
        assert info.value.code == 11
        dev.faults.garbage_rate = 1.0
        with pytest.raises(FrameError):
            master.read(1, Table.HOLDING, 0x12, 1)
        dev.faults.garbage_rate = 0.0
        dev.faults.late_ms = 300
        with pytest.raises(Timeout):
            master.read(1, Table.HOLDING, 0x12, 1)
        dev.faults.late_ms = 0
        time.sleep(0.15)
        assert master.read(1, Table.HOLDING, 0x12, 1).values == [400]  # the late answer was dropped by its id
        sim.stop()
        with pytest.raises(LinkError):
            master.read(1, Table.HOLDING, 0x12, 1)
        sim = TcpSimulator([dev], port=port).start()
        assert master.read(1, Table.HOLDING, 0x12, 1).values == [400]
    finally:
        master.close()
        sim.stop()
    assert master.counters["link_errors"] == 1 and master.counters["frame_errors"] == 1
