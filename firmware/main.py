"""Entry point on a board: wire the real hardware layer to the wake cycle and run it forever.

The board's own ``/main.py`` is one line, ``import firmware.main as m; m.run()``.  Settings and
secrets come from ``/ft_node.json`` written at provisioning::

    {"id": "node-7", "key": "<64 hex>", "ep": 1, "host": "192.168.4.1", "port": 1883,
     "wifi": {"ssid": "farm", "password": "..."}, "ota_port": 8080, "ntp_port": 123,
     "power": {"pin": 26, "active": 0, "settle_ms": 200},
     "sensors": {"sht3x": true, "battery_pin": 35, "soil_pin": 34, "ds18b20": {"pin": 4, "rom": "<16 hex>"},
                 "modbus": {"uart": 2, "tx": 17, "rx": 16, "de": 4, "baud": 9600, "parity": "E", "slave": 1,
                            "spec": <compact spec>}}}

``ep`` is the epoch of ``key`` (default 1, the cloud's first epoch for a node's key): every message
carries it, and the cloud checks the signature with that epoch's key, so a node given a new key
after a rotation says so.  ``host`` is the gateway: its broker (``port``), OTA files (``ota_port``)
and time server (``ntp_host``, default ``host``; ``ntp_port``, default 123).

``power`` is the sensors' switched supply (the reference build's load switch Q1: GPIO26, low = on):
the GPIO, the level that turns the rail on (``active``, 0 or 1) and the time the sensors need after
power-up before they are read (``settle_ms``; the capacitive probe's output takes about 150 ms).
The rail is switched on just before sampling and off after it, and off again on a crash before the
crash's deep sleep.  Without ``power`` the sensors are taken to be always powered.

``modbus`` is one Modbus RTU device on the RS485 port: UART id and pins (``de`` drives the
transceiver's DE and /RE), line settings (``baud``, ``parity`` N/E/O, optional ``bits`` 8 and
``stop`` 1), the device's unit id (``slave``) and the compact form of its device spec
(``device_specs/compact.py``, ``fieldtrust spec compact MODEL``).  Each of the spec's metrics
becomes a sensor; one poll of the device per wake serves them all, and a point outside the spec's
range (or not a number) carries the driver's ``Q_OUT_OF_RANGE``.

Only the capacitive soil probe needs a field calibration from the node's config (its millivolts
mean nothing without the probe's two points); the DS18B20, the SHT3x, the battery divider and
Modbus points are physical units as read (a config entry for one is applied as a correction).

The firmware's version and build come from ``firmware/version.py``, which a bundle writes
(``provisioning/bundle.py``): ``FW`` is what births and frames say, and OTA manifests must name a
build above ``version.BUILD``.

A crash ends the wake without clearing the boot counter, so repeated crashes lead to safe mode.
"""

import binascii
import json
import sys

from firmware import ota, version
from firmware.cycle import Node
from firmware.drivers import battery, ds18b20, modbus_rtu, sht3x, soil_moisture
from firmware.hal import Esp32Board, Esp32Network, SensorRail
from firmware.sampling import sensor

SETTINGS_FILE = "/ft_node.json"
WATCHDOG_MS = 30000
CRASH_SLEEP_MS = 10000
FW = "fw/" + version.VERSION
FIRST_KEY_EPOCH = 1  # the cloud's first epoch for a node's key (cloud/store/registry.py FIRST_EPOCH)


def build_sensors(board, spec):
    """``sampling.sensor(...)`` for each sensor present in the settings; only the soil probe needs calibrating."""
    found = []  # type: list[tuple]
    if "soil_pin" in spec:
        found.append(sensor("soil_moisture", "%", lambda: soil_moisture.read_mv(board, spec["soil_pin"]), None, True))
    if "ds18b20" in spec:
        pin, rom = spec["ds18b20"]["pin"], binascii.unhexlify(spec["ds18b20"]["rom"])
        found.append(sensor("soil_temperature", "Cel", lambda: ds18b20.read_c(board, pin, rom), 1))
    if spec.get("sht3x"):
        found.append(sensor("air_temperature", "Cel", lambda: sht3x.measure(board)[0], 1))
    if "battery_pin" in spec:
        found.append(sensor("battery", "mV", lambda: battery.read_mv(board, spec["battery_pin"]), 3))
    if "modbus" in spec:
        found.extend(modbus_sensors(board, spec["modbus"]))
    return found


def modbus_sensors(board, bus):
    """One sensor per metric of the RS485 Modbus device; the first read of a wake polls the whole device.

    Values are in the spec's units (no field calibration); each carries the poll's flags for it."""
    port = board.rs485(
        bus["uart"], bus["tx"], bus["rx"], bus["de"], bus["baud"], bus.get("bits", 8), bus["parity"], bus.get("stop", 1)
    )
    poller = modbus_rtu.Poller(port, bus["slave"], bus["spec"])
    return [_point_sensor(poller, metric, unit) for metric, unit in poller.metrics()]


def _point_sensor(poller, metric, unit):
    return sensor(metric, unit, lambda: poller.read(metric), 1, False, lambda: poller.flags(metric))


def node_from_settings(settings, board, net, watchdog, updater):
    ep = settings.get("ep", FIRST_KEY_EPOCH)
    if not isinstance(ep, int) or isinstance(ep, bool) or ep < 0:
        raise ValueError("%s: ep must be a key epoch, a whole number >= 0; got %r" % (SETTINGS_FILE, ep))
    identity = {
        "id": settings["id"],
        "key": binascii.unhexlify(settings["key"]),
        "ep": ep,
        "fw": FW,
        "host": settings["host"],
        "port": settings.get("port", 1883),
    }
    sensors = build_sensors(board, settings.get("sensors", {}))
    return Node(board, net, identity, sensors, watchdog, updater, sensor_rail(board, settings.get("power")))


def sensor_rail(board, power):
    """The ``SensorRail`` of the settings' ``power`` object, or None when the sensors are always powered."""
    if power is None:
        return None
    if not isinstance(power, dict) or "pin" not in power:
        raise ValueError(
            '%s: power must be {"pin": GPIO, "active": 0 or 1, "settle_ms": ms}; got %r' % (SETTINGS_FILE, power)
        )
    return SensorRail(board, power["pin"], power.get("active", 0), power.get("settle_ms", 0))


def sleep_after_crash(board, node):
    """Switch the sensors off and deep-sleep without clearing the boot counter (safe mode counts crashes)."""
    rail = node.rail if node is not None else None
    if rail is not None:
        try:  # noqa: SIM105 - MicroPython has no contextlib
            rail.off()
        except Exception:  # nothing may keep the board from its deep sleep: the reset releases the pin anyway
            pass
    board.deep_sleep(CRASH_SLEEP_MS)


def run(settings_file=SETTINGS_FILE):
    """Wake after wake until the board resets; a crash anywhere (storage scans included) sleeps and retries."""
    board = Esp32Board()
    watchdog = board.watchdog(WATCHDOG_MS)
    node = None
    while True:
        try:
            if node is None:
                with open(settings_file) as f:
                    settings = json.load(f)
                wifi = settings["wifi"]
                net = Esp32Network(wifi["ssid"], wifi["password"], settings["host"], settings.get("ota_port", 8080),
                                   ntp_host=settings.get("ntp_host"), ntp_port=settings.get("ntp_port", 123))
                updater = ota.Updater("/", board.mark_app_valid, version.BUILD)
                node = node_from_settings(settings, board, net, watchdog, updater)
            mode, ms = node.run()
        except Exception as exc:  # a crash: sleep without clearing the boot counter (safe mode counts these)
            sys.print_exception(exc)
            sleep_after_crash(board, node)
            node = None  # not reached on a board: deep sleep ends in a reset
            continue
        if mode == "awake":
            board.sleep_ms(ms)
        else:
            board.deep_sleep(ms)


if __name__ == "__main__":
    run()
