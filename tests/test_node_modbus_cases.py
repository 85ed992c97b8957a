"""The node's Modbus RTU reader: cases that run unchanged under CPython (pytest) and real MicroPython.

Plain functions and asserts, no pytest import: tests/test_node_modbus.py ships this file with
firmware/ and contract/ to the MicroPython WebAssembly board and runs every ``test_*`` there too.
CRC vectors are the CRC-16/MODBUS check value and the Modbus over Serial Line guide's classic
request; byte/word order vectors are those of docs/device-spec-format.md.  The compact specs
below are what ``device_specs.compact`` makes of two shipped specs (tests/test_node_modbus.py
holds them equal), so the node cases need no pydantic.
"""

import struct

from contract import telemetry
from firmware.crc import crc16_modbus
from firmware.drivers import modbus_rtu
from firmware.drivers.errors import DriverError
from firmware.hal import Esp32Rs485, uart_char_us
from firmware.hal_sim import SimBoard, SimModbusDevice, rtu_frame

LEAF = {  # sensecap-leaf-ym-01: one block of two holding registers
    "v": 1, "m": "sensecap-leaf-ym-01@1.0.0", "to": 500,
    "b": [{"f": 3, "a": 0, "c": 2, "p": [
        {"n": "leaf_temperature", "u": "Cel", "at": 0, "t": "s16", "s": 0.01, "r": [-40, 85]},
        {"n": "leaf_wetness", "u": "%", "at": 1, "t": "u16", "s": 0.01, "r": [0, 100]},
    ]}],
}  # fmt: skip
FLOW = {  # tuf2000m-flow: CDAB floats and counters, two blocks (register 91 is too far to bridge)
    "v": 1, "m": "tuf2000m-flow@1.0.0", "to": 600,
    "b": [
        {"f": 3, "a": 0, "c": 26, "p": [
            {"n": "flow_rate", "u": "m3/h", "at": 0, "t": "f32", "bo": "CDAB", "r": [-20000, 20000]},
            {"n": "flow_velocity", "u": "m/s", "at": 4, "t": "f32", "bo": "CDAB", "r": [-32, 32]},
            {"n": "flow_total_positive", "u": "m3", "at": 8, "t": "s32", "bo": "CDAB", "r": [0, 2147483647]},
            {"n": "flow_total_net", "u": "m3", "at": 24, "t": "s32", "bo": "CDAB", "r": [-2147483648, 2147483647]},
        ]},
        {"f": 3, "a": 91, "c": 1, "p": [{"n": "signal_quality", "at": 0, "t": "u16", "r": [0, 99]}]},
    ],
}  # fmt: skip
SLAVE = 7
UART = 2


def raises(exc_type, fn, *args):
    """Call ``fn(*args)``; return the exception it raised, failing unless it is ``exc_type``."""
    try:
        fn(*args)
    except exc_type as exc:
        return exc
    raise AssertionError(f"{fn} did not raise {exc_type}")


def reply(slave, function, data):
    return rtu_frame(bytes([slave, function, len(data)]) + data)


def registers(function, start, words):
    """``(function, address) -> register`` for SimModbusDevice from consecutive 16-bit words."""
    return dict(((function, start + i), w) for i, w in enumerate(words))


def leaf_device(temperature_raw=0x0A2D, wetness_raw=0x1F40):
    return SimModbusDevice(SLAVE, registers(3, 0, [temperature_raw, wetness_raw]))


def port_with(responder, baud=9600, parity="E"):
    board = SimBoard()
    board.attach_rs485(UART, responder)
    return board, board.rs485(UART, 17, 16, 4, baud, 8, parity, 1)


# -- CRC and frames -------------------------------------------------------------------------------


def test_crc16_modbus_vectors():
    assert crc16_modbus(b"123456789") == 0x4B37  # the CRC-16/MODBUS check value
    assert crc16_modbus(bytes.fromhex("01030000000a")) == 0xCDC5  # sent C5 CD, low byte first
    assert crc16_modbus(b"") == 0xFFFF


def test_read_request_bytes():
    assert modbus_rtu.read_request(1, 3, 0, 10) == bytes.fromhex("01030000000ac5cd")
    assert modbus_rtu.read_request(17, 4, 8, 1) == bytes.fromhex("110400080001b298")
    request = modbus_rtu.read_request(247, 4, 0xFF83, 125)
    assert request[:6] == bytes([247, 4, 0xFF, 0x83, 0, 125]) and crc16_modbus(request) == 0  # CRC over all is 0
    for bad in ((0, 3, 0, 1), (248, 3, 0, 1), (1, 6, 0, 1), (1, 3, 0, 0), (1, 3, 0, 126), (1, 3, 65535, 2)):
        raises(ValueError, modbus_rtu.read_request, *bad)


def test_reply_parsing_names_what_is_wrong():
    good = reply(SLAVE, 3, b"\x0a\x2d\x1f\x40")
    assert modbus_rtu.parse_reply(good, SLAVE, 3, 2) == b"\x0a\x2d\x1f\x40"
    cases = [
        (good[:-1], "short_reply"),
        (good[:3], "short_reply"),
        (b"", "short_reply"),
        (good + b"\x00", "bad_length"),
        (good[:-1] + bytes([good[-1] ^ 1]), "bad_crc"),
        (reply(SLAVE + 1, 3, b"\x0a\x2d\x1f\x40"), "wrong_slave"),
        (reply(SLAVE, 4, b"\x0a\x2d\x1f\x40"), "wrong_function"),
        (rtu_frame(bytes([SLAVE, 3, 6]) + b"\x0a\x2d\x1f\x40"), "bad_length"),  # byte count 6, asked 2 registers
        (rtu_frame(bytes([SLAVE, 0x83, 2])), "illegal_data_address"),
        (rtu_frame(bytes([SLAVE, 0x83, 1])), "illegal_function"),
        (rtu_frame(bytes([SLAVE, 0x83, 6])), "server_device_busy"),
        (rtu_frame(bytes([SLAVE, 0x83, 0x0B])), "gateway_target_failed"),
        (rtu_frame(bytes([SLAVE, 0x83, 0x42])), "exception_66"),
        (rtu_frame(bytes([SLAVE, 0x84, 2])), "wrong_function"),
    ]
    for frame, reason in cases:
        exc = raises(DriverError, modbus_rtu.parse_reply, frame, SLAVE, 3, 2)
        assert exc.reason == reason, (frame, exc.reason, reason)


# -- transactions on the simulated line ----------------------------------------------------------


def test_transaction_raises_de_for_the_request_only_and_reads_the_reply():
    board, port = port_with(leaf_device())
    assert port.char_us == uart_char_us(9600, 8, "E", 1) == 1146  # 11 bits at 9600 baud
    start = board.ticks_ms()
    request = modbus_rtu.read_request(SLAVE, 3, 0, 2)
    assert modbus_rtu.transact(port, request, 2, 500) == b"\x0a\x2d\x1f\x40"
    assert port.sent == [request]
    (t_up, up), (t_down, down) = port.de
    assert (up, down) == (1, 0) and t_up == start
    assert t_down - t_up >= 8 * 1146 / 1000  # DE/RE dropped only once the 8 bytes had left
    # the reply's 9 bytes crossed the line, then 3.5 characters of silence ended the frame
    assert board.ticks_ms() - t_down >= 9 * 1146 / 1000 + modbus_rtu.frame_gap_ms(port.char_us)


def test_silence_costs_the_response_timeout_and_is_no_reply():
    board, port = port_with(lambda request: None)
    start = board.ticks_ms()
    exc = raises(DriverError, modbus_rtu.transact, port, modbus_rtu.read_request(SLAVE, 3, 0, 2), 2, 300)
    assert exc.reason == "no_reply" and board.ticks_ms() - start >= 300


def test_corrupt_short_and_refused_replies_are_driver_errors():
    good = reply(SLAVE, 3, b"\x0a\x2d\x1f\x40")
    answers = [
        (lambda request: good[:-1] + bytes([good[-1] ^ 0xFF]), "bad_crc"),
        (lambda request: good[:6], "short_reply"),
        (lambda request: good[:2], "short_reply"),
        (lambda request: good + b"\x55", "bad_length"),  # the line was not silent after the frame
        (lambda request: rtu_frame(bytes([SLAVE, 0x83, 2])), "illegal_data_address"),
        (SimModbusDevice(SLAVE + 1, registers(3, 0, [1, 2])), "no_reply"),  # another slave stays silent
    ]
    for responder, reason in answers:
        _board, port = port_with(responder)
        exc = raises(DriverError, modbus_rtu.transact, port, modbus_rtu.read_request(SLAVE, 3, 0, 2), 2, 300)
        assert exc.reason == reason, (exc.reason, reason)


def test_stale_input_is_dropped_before_a_request():
    board, port = port_with(leaf_device())
    port._pending = b"\x07\x03\x04late"  # the end of an answer that came after its timeout
    assert modbus_rtu.transact(port, modbus_rtu.read_request(SLAVE, 3, 0, 2), 2, 300) == b"\x0a\x2d\x1f\x40"


def test_inter_frame_time():
    assert modbus_rtu.frame_gap_ms(uart_char_us(9600, 8, "E", 1)) == 5  # 3.5 x 1.146 ms = 4.01 ms
    assert modbus_rtu.frame_gap_ms(uart_char_us(2400, 8, "N", 1)) == 15  # 3.5 x 4.167 ms
    assert modbus_rtu.frame_gap_ms(uart_char_us(115200, 8, "N", 1)) == 2  # fixed 1.75 ms above 19200 baud
    raises(ValueError, uart_char_us, 9600, 8, "X", 1)


# -- decoding ---------------------------------------------------------------------------------------


def one(point, data):
    return modbus_rtu.decode_point(point, data)


def test_every_byte_and_word_order():
    # float32 123.456 = 0x42F6E979 and int32 -123456789 = 0xF8A432EB, as registers in address order
    floats = {"ABCD": "42f6e979", "CDAB": "e97942f6", "BADC": "f64279e9", "DCBA": "79e9f642"}
    ints = {"ABCD": "f8a432eb", "CDAB": "32ebf8a4", "BADC": "a4f8eb32", "DCBA": "eb32a4f8"}
    for order in modbus_rtu.ORDERS:
        value = one({"n": "x", "at": 1, "t": "f32", "bo": order}, b"\x00\x00" + bytes.fromhex(floats[order]))[2]
        assert abs(value - 123.456) < 1e-5, (order, value)
        assert one({"n": "x", "at": 0, "t": "s32", "bo": order}, bytes.fromhex(ints[order]))[2] == -123456789
        assert one({"n": "x", "at": 0, "t": "u32", "bo": order}, bytes.fromhex(ints[order]))[2] == 0xF8A432EB
    wide = bytes.fromhex("0102030405060708")
    assert one({"n": "x", "at": 0, "t": "u64"}, wide)[2] == 0x0102030405060708
    assert one({"n": "x", "at": 0, "t": "u64", "bo": "CDAB"}, wide)[2] == 0x0708050603040102
    assert one({"n": "x", "at": 0, "t": "s64", "bo": "DCBA"}, bytes.fromhex("7fffffffffffffff"))[2] == -129
    assert struct.pack(">d", -2.5e-3) == bytes.fromhex("bf647ae147ae147b")
    assert one({"n": "x", "at": 0, "t": "f64", "bo": "DCBA"}, bytes.fromhex("7b14ae47e17a64bf"))[2] == -2.5e-3
    assert one({"n": "x", "at": 0, "t": "f64", "bo": "BADC"}, bytes.fromhex("64bfe17aae477b14"))[2] == -2.5e-3
    assert one({"n": "x", "at": 0, "t": "u16", "bo": "BADC"}, b"\x34\x12")[2] == 0x1234
    assert one({"n": "x", "at": 0, "t": "s16", "bo": "BADC"}, b"\xfe\xff")[2] == -2
    assert one({"n": "x", "at": 0, "t": "s16"}, b"\x80\x00")[2] == -32768


def test_bits_scale_offset_and_exact_integers():
    assert one({"n": "alarm", "at": 0, "t": "bit", "bit": 9}, b"\x02\x00") == ("alarm", "", True, 0)
    assert one({"n": "alarm", "at": 0, "t": "bit"}, b"\x02\x00")[2] is False
    counter = one({"n": "e", "u": "Wh", "at": 0, "t": "u64", "s": 10, "o": -5}, b"\x7f" + b"\xff" * 7)
    assert counter == ("e", "Wh", 0x7FFFFFFFFFFFFFFF * 10 - 5, 0)  # exact: no float rounding of a 64-bit counter
    assert isinstance(counter[2], int)
    temperature = one({"n": "t", "u": "Cel", "at": 0, "t": "s16", "s": 0.1}, struct.pack(">h", 234))
    assert temperature == ("t", "Cel", 23.4, 0)  # 23.400000000000002 before rounding to 10 decimals
    assert one({"n": "t", "at": 0, "t": "u16", "s": 0.5, "o": 1}, b"\x00\x03")[2] == 2.5


def test_range_and_not_a_number_flags():
    point = {"n": "soil_ph", "at": 0, "t": "u16", "s": 0.01, "r": [3, 9]}
    assert one(point, struct.pack(">H", 300)) == ("soil_ph", "", 3.0, 0)  # the range is inclusive
    assert one(point, struct.pack(">H", 900))[3] == 0
    assert one(point, struct.pack(">H", 901)) == ("soil_ph", "", 9.01, telemetry.Q_OUT_OF_RANGE)
    assert one(point, struct.pack(">H", 299))[3] == telemetry.Q_OUT_OF_RANGE
    nan = {"n": "v", "u": "V", "at": 0, "t": "f32"}
    assert one(nan, b"\x7f\xc0\x00\x00") == ("v", "V", None, telemetry.Q_OUT_OF_RANGE)
    assert one(nan, b"\xff\x80\x00\x00")[2] is None  # -inf
    assert one(nan, b"\x7f\x7f\xff\xff")[2] > 3e38  # the largest float32 is a value (flagged only by a range)


# -- a device polled -----------------------------------------------------------------------------


def flow_device():
    words = [0] * 26
    words[0:2] = [0x0000, 0x4148]  # 12.5 as float32 CDAB
    words[4:6] = [0x0000, 0xC040]  # -3.0
    words[8:10] = [0x3039, 0x0000]  # 12345 as int32 CDAB
    words[24:26] = [0xFFFE, 0xFFFF]  # -2
    return SimModbusDevice(SLAVE, dict(list(registers(3, 0, words).items()) + [((3, 91), 150)]))


def test_poll_reads_every_block_and_flags_what_is_out_of_range():
    _board, port = port_with(flow_device())
    poller = modbus_rtu.Poller(port, SLAVE, FLOW)
    assert poller.poll() == [
        ("flow_rate", "m3/h", 12.5, 0),
        ("flow_velocity", "m/s", -3.0, 0),
        ("flow_total_positive", "m3", 12345, 0),
        ("flow_total_net", "m3", -2, 0),
        ("signal_quality", "", 150, telemetry.Q_OUT_OF_RANGE),
    ]
    assert [r[1] for r in port.sent] == [3, 3] and port.sent[1][2:6] == b"\x00\x5b\x00\x01"
    assert poller.errors == [] and poller.flags("signal_quality") == telemetry.Q_OUT_OF_RANGE


def test_a_failed_block_costs_only_its_own_points():
    device = flow_device()
    del device.registers[(3, 91)]
    _board, port = port_with(device)
    poller = modbus_rtu.Poller(port, SLAVE, FLOW)
    readings = poller.poll()
    assert readings[0] == ("flow_rate", "m3/h", 12.5, 0)
    assert readings[4] == ("signal_quality", "", None, telemetry.Q_COMM_ERROR)
    assert [e.reason for e in poller.errors] == ["illegal_data_address"]
    assert poller.read("flow_rate") == 12.5
    assert raises(DriverError, poller.read, "signal_quality").reason == "illegal_data_address"


def test_one_poll_serves_every_metric_of_a_wake():
    device = leaf_device()
    _board, port = port_with(device)
    poller = modbus_rtu.Poller(port, SLAVE, LEAF)
    assert poller.metrics() == [("leaf_temperature", "Cel"), ("leaf_wetness", "%")]
    assert (poller.read("leaf_temperature"), poller.read("leaf_wetness")) == (26.05, 80.0)
    assert device.requests == 1
    device.registers[(3, 0)] = 0xFF38  # -2.00 degC
    assert poller.read("leaf_temperature") == -2.0 and device.requests == 2  # a metric read again: a new poll
    assert poller.read("leaf_wetness") == 80.0 and device.requests == 2


def test_a_silent_device_fails_each_metric_with_its_reason():
    _board, port = port_with(None)
    poller = modbus_rtu.Poller(port, SLAVE, LEAF)
    assert raises(DriverError, poller.read, "leaf_temperature").reason == "no_reply"
    assert raises(DriverError, poller.read, "leaf_wetness").reason == "no_reply"


def test_a_spec_the_firmware_cannot_use_is_refused_at_boot():
    _board, port = port_with(None)
    bad = [
        {"v": 2, "b": LEAF["b"]},
        {"v": 1, "b": []},
        {"v": 1, "b": [{"f": 6, "a": 0, "c": 1, "p": []}]},
        {"v": 1, "b": [{"f": 3, "a": 0, "c": 1, "p": [{"n": "x", "at": 0, "t": "str"}]}]},
        {"v": 1, "b": [{"f": 3, "a": 0, "c": 1, "p": [{"n": "x", "at": 0, "t": "u16", "bo": "ACBD"}]}]},
        {"v": 1, "b": [{"f": 3, "a": 0, "c": 2, "p": [{"n": "x", "at": 1, "t": "u32"}]}]},
    ]
    for spec in bad:
        raises(ValueError, modbus_rtu.Poller, port, SLAVE, spec)
    raises(ValueError, modbus_rtu.Poller, port, 0, LEAF)


def test_main_wires_the_modbus_device_of_the_settings():
    from firmware import main

    board = SimBoard()
    board.attach_rs485(2, leaf_device())
    bus = {"uart": 2, "tx": 17, "rx": 16, "de": 4, "baud": 9600, "parity": "E", "slave": SLAVE, "spec": LEAF}
    found = main.build_sensors(board, {"modbus": bus})
    assert [(s[0], s[1], s[3], s[4]) for s in found] == [("leaf_temperature", "Cel", 1, False),
                                                         ("leaf_wetness", "%", 1, False)]  # physical units
    assert [s[2]() for s in found] == [26.05, 80.0] and [s[5]() for s in found] == [0, 0]


def test_a_wake_sends_the_modbus_readings_in_its_signed_frame():
    import binascii

    from test_firmware_node_cases import KEY, NODE, FakeNet, Watchdog, up_bodies

    from firmware import main

    board = SimBoard()
    device = leaf_device(temperature_raw=0xFF38)  # -2.00 degC
    board.attach_rs485(2, device)
    bus = {"uart": 2, "tx": 17, "rx": 16, "de": 4, "baud": 9600, "parity": "E", "slave": SLAVE, "spec": LEAF}
    settings = {"id": NODE, "key": binascii.hexlify(KEY).decode(), "host": "127.0.0.1", "sensors": {"modbus": bus}}
    node = main.node_from_settings(settings, board, FakeNet(board), Watchdog(), None)
    mode, _ms = node.run()
    records = up_bodies(node.net)[0]["r"]
    assert mode == "deep" and node.errors == [] and device.requests == 1
    assert [(r["n"], r["u"], r["v"]) for r in records] == [
        ("leaf_temperature", "Cel", -2.0),
        ("leaf_wetness", "%", 80.0),
    ]
    own = telemetry.Q_CALIBRATION_MISSING | telemetry.Q_OUT_OF_RANGE | telemetry.Q_COMM_ERROR
    assert [r["q"] & own for r in records] == [0, 0]  # no calibration needed, in range
    device.registers[(3, 0)] = 9000  # 90.00 degC, above the spec's 85
    device.registers[(3, 1)] = 0x2800  # 102.40 %
    board.deep_sleep(3600 * 1000)
    node = main.node_from_settings(settings, board, node.net, Watchdog(), None)
    node.run()
    records = up_bodies(node.net)[-1]["r"]
    assert [(r["n"], r["v"], r["q"] & own) for r in records[:2]] == [
        ("leaf_temperature", 90.0, telemetry.Q_OUT_OF_RANGE),
        ("leaf_wetness", 102.4, telemetry.Q_OUT_OF_RANGE),
    ]
    board.attach_rs485(2, lambda request: None)  # the device falls silent: each metric fails, flagged
    board.deep_sleep(3600 * 1000)
    node = main.node_from_settings(settings, board, node.net, Watchdog(), None)
    node.run()
    records = up_bodies(node.net)[-1]["r"]
    assert [(r["n"], r.get("v"), r["q"] & own) for r in records[:2]] == [
        ("leaf_temperature", None, telemetry.Q_COMM_ERROR),
        ("leaf_wetness", None, telemetry.Q_COMM_ERROR),
    ]


# -- the ESP32 port's order of operations ---------------------------------------------------------


class RecordingUart:
    """Stands in for machine.UART to record what Esp32Rs485 asks of it, in order."""

    def __init__(self, log, incoming=b""):
        self.log = log
        self.incoming = incoming

    def write(self, data):
        self.log.append(("write", bytes(data)))

    def flush(self):
        self.log.append(("flush",))

    def init(self, timeout):
        self.log.append(("timeout", timeout))

    def any(self):
        return len(self.incoming)

    def read(self, n):
        data, self.incoming = self.incoming[:n], self.incoming[n:]
        self.log.append(("read", n))
        return data or None


class RecordingPin:
    def __init__(self, log):
        self.log = log

    def value(self, level):
        self.log.append(("de", level))


def test_esp32_port_drives_de_around_the_write_and_rounds_waits_to_ticks():
    log = []
    port = Esp32Rs485(RecordingUart(log, b"\x01\x02"), RecordingPin(log), 1146)
    port.send(b"\x07\x03")
    assert log == [("de", 0), ("de", 1), ("write", b"\x07\x03"), ("flush",), ("de", 0)]
    del log[:]
    port.discard()
    assert port.recv(5, 4) == b"" and port.recv(5, 300) == b"" and port.recv(1, 5) == b""
    # 4 ms -> 20 ms (whole 10 ms ticks, plus one); the UART is re-initialised only when the wait changes
    assert log == [("read", 2), ("timeout", 20), ("read", 5), ("timeout", 310), ("read", 5), ("timeout", 20),
                   ("read", 1)]


# -- for the heap measurement on MicroPython (tests/test_node_modbus.py) -------------------------


class ReplayPort:
    """A port answering each request with a recorded reply, without line time or logs: what a poll itself
    allocates is then the driver's (plus one bytes object per read, as ``UART.read`` makes on a board)."""

    char_us = 1146

    def __init__(self, replies):
        self.replies = replies
        self._pending = b""
        self._at = 0

    def send(self, frame):
        self._pending, self._at = self.replies.get(frame, b""), 0

    def recv(self, n, timeout_ms):
        data = self._pending[self._at : self._at + n]
        self._at += len(data)
        return data

    def discard(self):
        self._pending, self._at = b"", 0


def replay_poller(spec, device):
    """A Poller over a ReplayPort holding ``device``'s replies to the spec's requests."""
    requests = [modbus_rtu.read_request(SLAVE, b["f"], b["a"], b["c"]) for b in spec["b"]]
    return modbus_rtu.Poller(ReplayPort(dict((r, device(r)) for r in requests)), SLAVE, spec)


def test_replayed_poll_gives_the_device_values():
    assert replay_poller(FLOW, flow_device()).poll()[2] == ("flow_total_positive", "m3", 12345, 0)
