"""Power cases that run unchanged under CPython (collected by pytest) and real MicroPython.

Two things a real board needs that a bench board hides: after power-on the ESP32's clock reads
2000-01-01, so the first wake must set it before it stamps anything (or say it could not); and the
reference build's sensors sit on a rail switched by GPIO26 (active low), which the firmware must
switch on, let settle, and switch off again.  ``SimBoard.switched_rail`` models that rail: the
sensors answer only while the pin is driven to its active level and the settle time has passed.
tests/test_firmware_power.py runs every ``test_*`` here on MicroPython.
"""

import binascii

from test_firmware_node_cases import (
    FULL_TRACE,
    KEY,
    NODE,
    POWER_ON_TRACE,
    T0,
    FakeNet,
    Watchdog,
    bodies,
    raises,
    sim_board,
    up_bodies,
    wake,
)

from contract import telemetry
from firmware import cycle, hal, main, sampling
from firmware.drivers import battery, sht3x
from firmware.hal_sim import POWER_ON_CLOCK_MS

YEAR_2001_MS = 978307200000
RAIL_PIN, SOIL_PIN, SETTLE_MS = 26, 34, 200
POWER = {"pin": RAIL_PIN, "active": 0, "settle_ms": SETTLE_MS}


def powered_on_board():
    """A board just powered on: RTC memory empty, clock at 2000-01-01."""
    board = sim_board()
    board.power_cycle()
    assert board.time_ms() == POWER_ON_CLOCK_MS
    return board


# -- the clock at power-on -------------------------------------------------------------------------


def test_the_first_wake_after_power_on_sets_the_clock_before_sampling():
    board = powered_on_board()
    net = FakeNet(board)
    net.true_time_ms = T0  # what the gateway's time server says
    node, (mode, ms) = wake(board, net)
    assert node.trace == POWER_ON_TRACE and node.errors == [] and net.ntp_calls == 1
    first = up_bodies(net)[0]
    assert T0 <= first["bt"] < T0 + 5000 and first["sync"] == 0 and first["q"] == 0
    assert [r["q"] for r in first["r"]] == [0, 0]
    board.deep_sleep(ms)
    board.i2c[0x44].temperature_c = 25.0
    node, _ = wake(board, net)  # deep sleep keeps the clock and the sync time: no clock step, no NTP
    assert node.trace == FULL_TRACE and net.ntp_calls == 1 and up_bodies(net)[-1]["sync"] > 0


def test_a_failed_sync_at_power_on_still_samples_and_flags_the_readings_unsynced():
    board = powered_on_board()
    net = FakeNet(board)
    net.ntp_ok = False
    node, _ = wake(board, net)
    assert node.trace == POWER_ON_TRACE and node.errors == [] and node.ntp_error is not None
    assert net.ntp_calls == 1  # not asked again once connected: one time-server timeout per wake
    first = up_bodies(net)[0]
    assert first["bt"] < YEAR_2001_MS and first["sync"] == -1 and first["q"] & telemetry.Q_CLOCK_UNSYNCED
    assert [r["n"] for r in first["r"]] == ["air_temperature", "battery"]  # nothing lost
    assert all(r["q"] & telemetry.Q_CLOCK_UNSYNCED for r in first["r"])


def test_frames_stamped_before_the_first_sync_are_sent_as_signed_never_restamped():
    board = powered_on_board()
    net = FakeNet(board)
    net.link_up = False  # no Wi-Fi at power-on: no time, no broker
    node, (mode, ms) = wake(board, net)
    assert node.trace == ["boot", "clock", "sample", "enqueue", "connect", "sleep"]
    assert [e[0] for e in node.errors] == ["connect"] and net.ntp_calls == 0  # the link is not waited for twice
    _ref, stored = node.outbox.oldest()
    board.deep_sleep(ms)
    net.link_up, net.true_time_ms = True, T0
    node, _ = wake(board, net)
    assert node.trace == POWER_ON_TRACE and node.synced_at == T0  # still never synced: the clock step again
    ups = [p[1] for p in net.published() if p[0].endswith("/up")]
    assert ups[0] == stored  # byte for byte: the signature covers the old stamp
    old, new = bodies(ups)
    assert old["bt"] < YEAR_2001_MS and old["sync"] == -1 and old["q"] & telemetry.Q_CLOCK_UNSYNCED
    assert T0 <= new["bt"] < T0 + 5000 and new["sync"] == 0 and new["q"] == 0


# -- the sensors' switched rail ----------------------------------------------------------------------


def railed_board():
    """The reference build's wiring: probe, SHT3x (and 1-Wire, RS485) on the rail; battery divider not."""
    board = powered_on_board()
    board.adc_uv[SOIL_PIN] = [1905000]
    board.switched_rail(RAIL_PIN, 0, SETTLE_MS, adc_pins=(SOIL_PIN,))
    return board


def settings(power=None):
    found = {
        "id": NODE,
        "key": binascii.hexlify(KEY).decode(),
        "host": "127.0.0.1",
        "sensors": {"soil_pin": SOIL_PIN, "sht3x": True, "battery_pin": 35},
    }
    if power is not None:
        found["power"] = power
    return found


def first_records(board, power):
    net = FakeNet(board)
    net.true_time_ms = T0
    node = main.node_from_settings(settings(power), board, net, Watchdog(), None)
    node.run()
    return node, dict((r["n"], (r.get("v"), r["q"])) for r in up_bodies(net)[0]["r"])


def test_the_rail_is_on_and_settled_while_sampling_and_off_after():
    board = railed_board()
    node, records = first_records(board, POWER)
    missing = telemetry.Q_CALIBRATION_MISSING
    assert records["soil_moisture"] == (1905, missing) and records["air_temperature"][1] == 0
    assert abs(records["air_temperature"][0] - 21.3) < 0.01  # one step of the SHT3x's 16-bit word
    assert records["battery"][0] == 3700  # 1850 mV at the divider
    assert [(pin, level) for _t, pin, level in board.pin_log] == [(RAIL_PIN, 0), (RAIL_PIN, 1)]
    on_at, off_at = board.pin_log[0][0], board.pin_log[1][0]
    assert off_at - on_at >= SETTLE_MS and not board.powered() and node.rail.is_on is False


def test_a_firmware_that_forgets_the_rail_or_its_settle_time_reads_no_sensor():
    for power in (None, {"pin": RAIL_PIN, "active": 1, "settle_ms": SETTLE_MS}, dict(POWER, settle_ms=10)):
        _node, records = first_records(railed_board(), power)
        # the unpowered probe's 0 V is refused by its driver (no_probe), never sent as a moisture
        assert records["air_temperature"][0] is None and records["soil_moisture"][0] is None, power
        assert records["battery"][0] == 3700  # the divider hangs on the battery, not on the rail


def test_a_crash_while_sampling_switches_the_rail_off_before_the_crash_sleep():
    board = railed_board()

    def crash():
        raise RuntimeError("a bug in a driver")

    rail = hal.SensorRail(board, RAIL_PIN, 0, SETTLE_MS)
    found = [sampling.sensor("air_temperature", "Cel", lambda: sht3x.measure(board)[0], 1),
             sampling.sensor("x", "", crash, 1)]
    node = cycle.Node(board, FakeNet(board), {"id": NODE, "key": KEY}, found, Watchdog(), None, rail)
    raises(RuntimeError, node.run)
    assert board.pins[RAIL_PIN][0] == 1 and not rail.is_on  # off as the exception left the sampling
    rail.is_on = True  # as if the crash had come while the rail was on
    boots = board.boots
    main.sleep_after_crash(board, node)
    assert board.pin_log[-1][1:] == (RAIL_PIN, 1) and board.boots == boots + 1  # off, then the deep sleep
    assert not rail.is_on


def test_power_settings_are_checked_naming_what_is_wrong():
    board = sim_board()
    assert main.sensor_rail(board, None) is None
    rail = main.sensor_rail(board, POWER)
    assert (rail.pin, rail.active, rail.settle_ms) == (RAIL_PIN, 0, SETTLE_MS)
    bad = [
        (26, "power must be"),
        ({"active": 0}, "power must be"),
        ({"pin": 26, "active": 2}, "active must be"),
        ({"pin": 26, "active": True}, "active must be"),
        ({"pin": 26, "settle_ms": -1}, "settle_ms must be"),
        ({"pin": 26, "settle_ms": 1.5}, "settle_ms must be"),
        ({"pin": "26"}, "pin must be"),
    ]
    for power, named in bad:
        assert named in str(raises(ValueError, main.sensor_rail, board, power)), power
    assert battery.read_mv(board, 35) == 3700  # the board itself is untouched by a refused setting
    assert board.pin_log == []
