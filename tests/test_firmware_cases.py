"""Firmware tests that run unchanged under CPython (collected by pytest) and real MicroPython.

Plain functions with plain asserts, no pytest import: tests/test_firmware_micropython.py ships
this file with firmware/ and contract/ to the MicroPython WebAssembly board and runs every
``test_*`` function there too.  Vectors come from the sensor datasheets and Maxim's 1-Wire CRC
application note.
"""

from contract import telemetry
from firmware import message, outbox, sampling, seq
from firmware.crc import crc8_dallas, crc8_sensirion, crc32
from firmware.drivers import battery, ds18b20, sht3x, soil_moisture
from firmware.drivers.errors import DriverError
from firmware.flash import FlashError, PowerLoss, RamFlash, Region
from firmware.hal_sim import SimBoard, SimSht3x, ds18b20_scratchpad

KEY = bytes(range(32))
ROM = bytes([0x28, 0xFF, 0x4C, 0x1A, 0x60, 0x17, 0x04, 0x9E])


def raises(exc_type, fn, *args):
    """Call ``fn(*args)``; return the exception it raised, failing unless it is ``exc_type``."""
    try:
        fn(*args)
    except exc_type as exc:
        return exc
    raise AssertionError(f"{fn} did not raise {exc_type}")


def close(a, b, tol=1e-6):
    return abs(a - b) <= tol


# -- checksums and drivers ------------------------------------------------------------------------


def test_crc_vectors_from_the_datasheets():
    assert crc8_sensirion(b"\xbe\xef") == 0x92  # SHT3x-DIS datasheet, CRC example
    assert crc8_dallas(bytes([0x02, 0x1C, 0xB8, 0x01, 0x00, 0x00, 0x00])) == 0xA2  # Maxim AN27 ROM example
    assert crc8_dallas(bytes([0x50, 0x05, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10])) == 0x1C  # DS18B20 power-on pad
    assert crc32(b"123456789") == 0xCBF43926  # the CRC-32 check value


def test_sht3x_measurement_conversion_and_crc():
    data = bytes([0x66, 0x66, crc8_sensirion(b"\x66\x66"), 0x80, 0x00, crc8_sensirion(b"\x80\x00")])
    t, rh = sht3x.parse_measurement(data)
    assert close(t, 25.0) and close(rh, 50.000763)
    assert close(sht3x.temperature_c(0), -45) and close(sht3x.temperature_c(0xFFFF), 130)
    assert close(sht3x.humidity_pct(0xFFFF), 100)
    bad = data[:5] + bytes([data[5] ^ 1])
    assert raises(DriverError, sht3x.parse_measurement, bad).reason == "bad_crc"
    assert raises(DriverError, sht3x.parse_measurement, data[:4]).reason == "bad_length"


def test_sht3x_through_the_simulated_bus():
    board = SimBoard()
    sensor = SimSht3x(21.3, 64.0)
    board.i2c[0x44] = sensor
    t, rh = sht3x.measure(board)
    assert abs(t - 21.3) < 0.003 and abs(rh - 64.0) < 0.002  # one LSB of each word
    sensor.corrupt_crc = True
    assert raises(DriverError, sht3x.measure, board).reason == "bad_crc"
    assert raises(DriverError, sht3x.measure, board, 0x45).reason == "no_device"


def test_ds18b20_datasheet_temperatures():
    table = [
        (0x07D0, 125.0),
        (0x0191, 25.0625),
        (0x00A2, 10.125),
        (0x0008, 0.5),
        (0x0000, 0.0),
        (0xFFF8, -0.5),
        (0xFF5E, -10.125),
        (0xFE6F, -25.0625),
        (0xFC90, -55.0),
    ]  # datasheet table 1
    for raw, expected in table:
        head = bytes([raw & 0xFF, raw >> 8, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10])
        assert ds18b20.parse_scratchpad(head + bytes([crc8_dallas(head)])) == expected, hex(raw)
    nine_bit = bytes([0x91, 0x01, 0x4B, 0x46, 0x1F, 0xFF, 0x0C, 0x10])
    assert ds18b20.parse_scratchpad(nine_bit + bytes([crc8_dallas(nine_bit)])) == 25.0  # undefined bits masked


def test_ds18b20_rejects_what_it_cannot_trust():
    power_on = bytes([0x50, 0x05, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10, 0x1C])
    assert raises(DriverError, ds18b20.parse_scratchpad, power_on).reason == "not_converted"
    good = ds18b20_scratchpad(18.5)
    assert raises(DriverError, ds18b20.parse_scratchpad, good[:8] + b"\x00").reason == "bad_crc"
    assert raises(DriverError, ds18b20.parse_scratchpad, b"\xff" * 9).reason == "no_device"
    assert raises(DriverError, ds18b20.parse_scratchpad, good[:8]).reason == "bad_length"
    board = SimBoard()
    board.onewire[(4, ROM)] = good
    assert ds18b20.read_c(board, 4, ROM) == 18.5
    assert raises(DriverError, ds18b20.read_c, board, 5, ROM).reason == "no_device"


def test_soil_moisture_two_point_calibration():
    scale, offset = soil_moisture.two_point(2540, 1270)
    assert close(scale, -0.0787401575) and close(offset, 200)  # the device spec's defaults
    assert close(soil_moisture.moisture_percent(2540), 0) and close(soil_moisture.moisture_percent(1270), 100)
    assert close(soil_moisture.moisture_percent(1905), 50)
    assert close(soil_moisture.moisture_percent(1500, air_mv=2000, water_mv=1000), 50)
    assert soil_moisture.moisture_percent(2600) < 0  # drier than the air reading: out of range, not clamped
    assert raises(DriverError, soil_moisture.two_point, 1500, 1500).reason == "bad_calibration"
    board = SimBoard()
    board.adc_uv[34] = [1905000]
    assert soil_moisture.read_mv(board, 34) == 1905
    assert raises(DriverError, soil_moisture.read_mv, board, 35).reason == "no_adc"


def test_soil_probe_readings_no_probe_can_give_are_refused():
    board = SimBoard()
    board.adc_uv[34] = [12000, 499000, 500000, 3099000, 3100000, 3300000]  # unpowered, ..., saturated
    reasons = []
    for _ in range(6):
        try:
            reasons.append(soil_moisture.read_mv(board, 34))
        except DriverError as exc:
            reasons.append(exc.reason)
    assert reasons == ["no_probe", "no_probe", 500, 3099, "out_of_range", "out_of_range"]
    assert "12 mV" in str(raises(DriverError, soil_moisture.check_mv, 12.3))
    value, failures = sampling.sample_median(lambda: soil_moisture.read_mv(board, 34), 3)
    assert (value, failures) == (None, ["out_of_range"] * 3)  # never a value from a probe that is not there


def test_battery_divider():
    assert battery.battery_mv(2000, 100000, 100000) == 4000
    assert close(battery.battery_mv(1000, 300000, 100000), 4000)
    assert raises(DriverError, battery.battery_mv, 1000, 1, 0).reason == "bad_divider"
    board = SimBoard()
    board.adc_uv[35] = [1850000]
    assert battery.read_mv(board, 35) == 3700


# -- sampling -------------------------------------------------------------------------------------


def test_median_of_n_ignores_a_spike_and_failed_reads():
    assert sampling.median([5, 1, 100, 3, 2]) == 3
    assert sampling.median([4, 1, 3, 2]) == 2.5
    assert raises(ValueError, sampling.median, [])
    board = SimBoard()
    board.adc_uv[34] = [1900000, 1910000, 2900000, 1905000, 1902000]
    value, failures = sampling.sample_median(lambda: soil_moisture.read_mv(board, 34), 5)
    assert (value, failures) == (1905, [])
    value, failures = sampling.sample_median(lambda: soil_moisture.read_mv(board, 36), 3)
    assert (value, failures) == (None, ["no_adc"] * 3)


def test_linear_calibration_from_config():
    cal = {"soil_moisture": {"scale": -0.0787401575, "offset": 200}, "air_temperature": {"offset": -0.4}}
    value, q = sampling.calibrate("soil_moisture", 1905, cal)
    assert close(value, 50, 1e-5) and q == 0
    value, q = sampling.calibrate("air_temperature", 21.0, cal)
    assert close(value, 20.6) and q == 0
    assert sampling.calibrate("soil_temperature", 18.5, cal) == (18.5, telemetry.Q_CALIBRATION_MISSING)
    # a part that reports physical units needs no entry; one it has is a correction
    assert sampling.calibrate("soil_temperature", 18.5, cal, False) == (18.5, 0)
    value, q = sampling.calibrate("air_temperature", 21.0, cal, False)
    assert close(value, 20.6) and q == 0
    assert sampling.calibrate("soil_moisture", None, cal) == (None, 0)


def test_delta_and_heartbeat_reporting():
    rep = sampling.DeltaReporter({"soil_moisture": 2.0}, heartbeat_s=3600)
    assert rep.due("soil_moisture", 30.0, 0)  # nothing sent yet
    rep.sent("soil_moisture", 30.0, 0)
    assert not rep.due("soil_moisture", 31.9, 600)  # moved less than the delta
    assert rep.due("soil_moisture", 32.0, 600)  # moved by the delta
    assert rep.due("soil_moisture", 30.0, 3600)  # heartbeat
    assert rep.due("soil_moisture", None, 600)  # the sensor failed: news
    rep.sent("soil_moisture", None, 600)
    assert not rep.due("soil_moisture", None, 1200) and rep.due("soil_moisture", 30.0, 1200)
    assert rep.due("other", 1.0, 0)
    rep.sent("other", 1.0, 0)
    assert rep.due("other", 1.0001, 1) and not rep.due("other", 1.0, 1)  # no delta: every change is sent
    restored = sampling.DeltaReporter.from_bytes(rep.to_bytes(), rep.deltas, 3600)
    assert restored.state == rep.state
    assert sampling.DeltaReporter.from_bytes(b"\xff\x00garbage", {}, 60).state == {}
    assert sampling.DeltaReporter.from_bytes(b"[1]", {}, 60).state == {}


# -- sequence numbers -----------------------------------------------------------------------------


def _seq_board(block_size=256):
    board = SimBoard(flash=RamFlash(4 * block_size, block_size))
    return board, Region(board.flash, 0, 2 * block_size)


def test_seq_survives_deep_sleep_without_skipping():
    board, region = _seq_board()
    counter = seq.SequenceCounter(board, region, reserve=8)
    issued = [counter.next() for _ in range(5)]
    board.deep_sleep(900000)
    counter = seq.SequenceCounter(board, region, reserve=8)
    issued += [counter.next() for _ in range(5)]
    assert issued == list(range(10))  # RTC memory carried the counter: nothing skipped


def test_seq_never_repeats_across_power_loss():
    board, region = _seq_board()
    counter = seq.SequenceCounter(board, region, reserve=8)
    issued = [counter.next() for _ in range(3)]
    board.power_cycle()
    counter = seq.SequenceCounter(board, region, reserve=8)
    issued.append(counter.next())
    assert issued == [0, 1, 2, 8]  # resumed at the reservation: 3-7 skipped, none reused
    board.rtc_write(b"SQ" + b"\x00" * 12)  # RTC memory with a bad CRC counts as lost
    counter = seq.SequenceCounter(board, region, reserve=8)
    assert counter.next() == 16


def test_seq_power_cut_at_every_byte_of_a_reservation_and_across_block_wrap():
    board, region = _seq_board(block_size=64)  # 4 slots per block: the log wraps often
    issued = []
    counter = seq.SequenceCounter(board, region, reserve=2)
    for step in range(60):
        if step % 3 == 0:
            board.flash.cut_power_after(step % (seq.SLOT + 1))
        try:
            issued.append(counter.next())
        except PowerLoss:
            board.power_cycle()
            counter = seq.SequenceCounter(board, region, reserve=2)
        else:
            board.flash.cut_power_after(-1)  # the reservation was not needed: disarm
    assert len(issued) > 30
    assert issued == sorted(set(issued)), issued  # strictly increasing: never a repeat


def test_seq_needs_two_blocks():
    board = SimBoard(flash=RamFlash(1024, 256))
    assert raises(ValueError, seq.SequenceCounter, board, Region(board.flash, 0, 256))
    assert raises(FlashError, Region, board.flash, 100, 256)


# -- outbox ---------------------------------------------------------------------------------------


def _outbox_flash():
    return RamFlash(4 * 256, 256)  # 4 segments of (256 - 16) // 64 = 3 records


def _open(flash):
    return outbox.Outbox(Region(flash, 0, flash.size), record_size=64)


def _drain(box):
    out = []
    while True:
        item = box.oldest()
        if item is None:
            return out
        out.append(item[1])
        box.ack(item[0])


def test_outbox_keeps_order_and_delivery_across_reboots():
    flash = _outbox_flash()
    box = _open(flash)
    for i in range(5):
        box.append(b"frame-%d" % i)
    ref, payload = box.oldest()
    assert payload == b"frame-0" and len(box) == 5
    box.ack(ref)
    box = _open(flash)  # reboot
    assert len(box) == 4 and (box.dropped, box.torn) == (0, 0)
    box.append(b"frame-5")
    assert _drain(box) == [b"frame-%d" % i for i in range(1, 6)]
    assert len(_open(flash)) == 0
    assert raises(outbox.OutboxError, box.append, b"x" * (box.capacity + 1))
    box.append(b"y" * box.capacity)
    assert _drain(_open(flash)) == [b"y" * box.capacity]


def test_outbox_power_loss_mid_write_is_detected_and_skipped():
    for cut in (0, 1, 2, 9, 30, 62):
        flash = _outbox_flash()
        box = _open(flash)
        box.append(b"first")
        box.append(b"second")
        flash.cut_power_after(cut)
        raises(PowerLoss, box.append, b"third, torn by the power cut")
        box = _open(flash)
        assert box.torn == (1 if cut else 0), cut
        box.append(b"fourth")
        box = _open(flash)
        assert _drain(box) == [b"first", b"second", b"fourth"], cut


def test_outbox_corrupted_last_record_is_skipped():
    flash = _outbox_flash()
    box = _open(flash)
    for name in (b"a", b"b", b"c"):
        box.append(name)
    flash.data[outbox.HEADER + 2 * 64 + 20] ^= 0x01  # flip a bit in record c's padding
    box = _open(flash)
    assert box.torn == 1 and _drain(box) == [b"a", b"b"]


def test_outbox_full_drops_the_oldest_and_counts_them():
    flash = _outbox_flash()
    box = _open(flash)
    for i in range(20):
        box.append(b"m%d" % i)
    assert box.dropped + len(box) == 20 and box.dropped == 9  # 4 x 3 slots, rotated in whole segments
    box = _open(flash)
    assert box.dropped == 9
    assert _drain(box) == [b"m%d" % i for i in range(9, 20)]
    box.append(b"after")
    assert _open(flash).dropped == 9  # delivered records are not counted as dropped


def test_outbox_power_loss_during_a_segment_erase():
    flash = _outbox_flash()
    box = _open(flash)
    for i in range(12):
        box.append(b"m%d" % i)
    flash.cut_power_after(100)  # inside the erase of the oldest segment
    raises(PowerLoss, box.append, b"m12")
    box = _open(flash)
    assert box.dropped == 3  # m0-m2 were lost in the cut erase: the note written before it counts them
    box.append(b"m13")
    assert _open(flash).dropped == 3
    payloads = _drain(box)
    assert payloads[-1] == b"m13" and payloads == [b"m%d" % i for i in range(3, 12)] + [b"m13"]


# -- messages -------------------------------------------------------------------------------------


def test_sync_age_and_the_unsynced_flag():
    assert message.sync_age_s(10000, None) == -1 and message.sync_age_s(10000, 0) == -1
    assert message.sync_age_s(65500, 5000) == 60
    readings = [("soil_moisture", "%", 23.5, 0, 0), ("soil_temperature", "Cel", None, 40, 0)]
    synced = telemetry.parse_body(message.build_body("node-7", 1, 5, 1764480000000, readings, "fw/0.1.0", 60))
    assert (synced["sync"], synced["q"], [r["q"] for r in synced["r"]]) == (60, 0, [0, telemetry.Q_COMM_ERROR])
    never = telemetry.parse_body(message.build_body("node-7", 1, 6, 1764480000000, readings, "fw/0.1.0", -1))
    assert never["sync"] == -1 and never["q"] == telemetry.Q_CLOCK_UNSYNCED
    assert all(r["q"] & telemetry.Q_CLOCK_UNSYNCED for r in never["r"])
    old = telemetry.parse_body(message.build_body("node-7", 1, 7, 1764480000000, readings, "fw/0.1.0", 3 * 86400))
    assert old["sync"] == 3 * 86400 and old["q"] == telemetry.Q_CLOCK_UNSYNCED


def test_message_bytes_and_signature():
    readings = [("soil_moisture", "%", 23.5, 0, 0)]
    frame = message.build_frame(KEY, "node-7", 1, 42, 1764480000000, readings, "fw/0.1.0", 35)
    body = telemetry.verify(frame, KEY)
    assert frame == telemetry.sign(KEY, body) and len(frame) == telemetry.BODY_OFFSET + len(body) + 1
    assert telemetry.parse_body(body) == {
        "v": 1,
        "k": "tel",
        "dev": "node-7",
        "ep": 1,
        "seq": 42,
        "fw": "fw/0.1.0",
        "bt": 1764480000000,
        "sync": 35,
        "q": 0,
        "r": [{"n": "soil_moisture", "u": "%", "t": 0, "q": 0, "v": 23.5}],
    }
    assert raises(telemetry.ContractError, telemetry.verify, frame, bytes(32)).reason == "bad_signature"


# -- one wake cycle -------------------------------------------------------------------------------


class Node:
    """The pieces one wake cycle uses, on a simulated board with all four sensors."""

    def __init__(self):
        self.board = SimBoard(flash=RamFlash(16 * 4096))
        self.board.adc_uv[34] = [1900000, 1910000, 2900000, 1905000, 1902000]
        self.board.adc_uv[35] = [1850000]
        self.board.onewire[(4, ROM)] = ds18b20_scratchpad(18.5)
        self.board.i2c[0x44] = SimSht3x(21.3, 64.0)
        self.seq = seq.SequenceCounter(self.board, Region(self.board.flash, 0, 2 * 4096))
        self.outbox = outbox.Outbox(Region(self.board.flash, 2 * 4096, 14 * 4096), record_size=512)
        self.reporter = sampling.DeltaReporter({"soil_moisture": 1.0}, heartbeat_s=3600)
        self.calibration = {"soil_moisture": {"scale": -0.0787401575, "offset": 200}}
        self.synced_at_ms = self.board.time_ms() - 35000


def one_cycle(node):
    """Sample every sensor (median of 5), calibrate, build, sign and enqueue a frame of what is due; return it."""
    board = node.board
    mv, _ = sampling.sample_median(lambda: soil_moisture.read_mv(board, 34), 5)
    moisture, q_moisture = sampling.calibrate("soil_moisture", mv, node.calibration)
    soil_t, _ = sampling.sample_median(lambda: ds18b20.read_c(board, 4, ROM), 1)
    air, _ = sampling.sample_median(lambda: sht3x.measure(board)[0], 1)
    battery_mv, _ = sampling.sample_median(lambda: battery.read_mv(board, 35), 3)
    now_ms = board.time_ms()
    readings = [
        ("soil_moisture", "%", moisture, 0, q_moisture),
        ("soil_temperature", "Cel", soil_t, 0, 0),
        ("air_temperature", "Cel", air, 0, 0),
        ("battery", "mV", battery_mv, 0, 0),
    ]
    due = [r for r in readings if node.reporter.due(r[0], r[2], now_ms // 1000)]
    if not due:
        return None
    frame = message.build_frame(
        KEY, "node-7", 1, node.seq.next(), now_ms, due, "fw/0.1.0", message.sync_age_s(now_ms, node.synced_at_ms)
    )
    node.outbox.append(frame)
    for name, _unit, value, _t, _q in due:
        node.reporter.sent(name, value, now_ms // 1000)
    return frame


def test_one_cycle_sends_a_verified_frame():
    node = Node()
    frame = one_cycle(node)
    body = telemetry.parse_body(telemetry.verify(frame, KEY))
    assert (body["seq"], body["sync"], body["q"]) == (0, 35, 0)
    values = dict((r["n"], r.get("v")) for r in body["r"])
    assert close(values["soil_moisture"], 50, 1e-5) and values["soil_temperature"] == 18.5
    assert values["battery"] == 3700 and abs(values["air_temperature"] - 21.3) < 0.003
    _ref, stored = node.outbox.oldest()
    assert stored == frame and len(node.outbox) == 1
    node.board.sleep_ms(60000)
    assert one_cycle(node) is None  # nothing moved by its delta, no heartbeat due: nothing to send
    node.board.i2c[0x44].temperature_c = 22.0
    node.board.sleep_ms(60000)
    second = telemetry.parse_body(telemetry.verify(one_cycle(node), KEY))
    assert second["seq"] == 1 and [r["n"] for r in second["r"]] == ["air_temperature"]
    assert len(node.outbox) == 2
