"""Entry point on a board: wire the real hardware layer to the wake cycle and run it forever.

The board's own ``/main.py`` is one line, ``import firmware.main as m; m.run()``.  Settings and
secrets come from ``/ft_node.json`` written at provisioning::

    {"id": "node-7", "key": "<64 hex>", "host": "192.168.4.1", "port": 1883,
     "wifi": {"ssid": "farm", "password": "..."}, "ota_port": 8080, "ntp_port": 123,
     "sensors": {"sht3x": true, "battery_pin": 35, "soil_pin": 34, "ds18b20": {"pin": 4, "rom": "<16 hex>"},
                 "modbus": {"uart": 2, "tx": 17, "rx": 16, "de": 4, "baud": 9600, "parity": "E", "slave": 1,
                            "spec": <compact spec>}}}

``host`` is the gateway: its broker (``port``), OTA files (``ota_port``) and time server (``ntp_host``,
default ``host``; ``ntp_port``, default 123).

``modbus`` is one Modbus RTU device on the RS485 port: UART id and pins (``de`` drives the
transceiver's DE and /RE), line settings (``baud``, ``parity`` N/E/O, optional ``bits`` 8 and
``stop`` 1), the device's unit id (``slave``) and the compact form of its device spec
(``device_specs/compact.py``, ``fieldtrust spec compact MODEL``).  Each of the spec's metrics
becomes a sensor; one poll of the device per wake serves them all.

A crash ends the wake without clearing the boot counter, so repeated crashes lead to safe mode.
"""

import binascii
import json
import sys

from firmware import ota
from firmware.cycle import Node
from firmware.drivers import battery, ds18b20, modbus_rtu, sht3x, soil_moisture
from firmware.hal import Esp32Board, Esp32Network

SETTINGS_FILE = "/ft_node.json"
WATCHDOG_MS = 30000
CRASH_SLEEP_MS = 10000
FW = "fw/0.2.0"


def build_sensors(board, spec):
    """``(metric, unit, read, samples)`` for each sensor present in the settings."""
    found = []  # type: list[tuple]
    if "soil_pin" in spec:
        found.append(("soil_moisture", "%", lambda: soil_moisture.read_mv(board, spec["soil_pin"]), None))
    if "ds18b20" in spec:
        pin, rom = spec["ds18b20"]["pin"], binascii.unhexlify(spec["ds18b20"]["rom"])
        found.append(("soil_temperature", "Cel", lambda: ds18b20.read_c(board, pin, rom), 1))
    if spec.get("sht3x"):
        found.append(("air_temperature", "Cel", lambda: sht3x.measure(board)[0], 1))
    if "battery_pin" in spec:
        found.append(("battery", "mV", lambda: battery.read_mv(board, spec["battery_pin"]), 3))
    if "modbus" in spec:
        found.extend(modbus_sensors(board, spec["modbus"]))
    return found


def modbus_sensors(board, bus):
    """One sensor per metric of the RS485 Modbus device; the first read of a wake polls the whole device."""
    port = board.rs485(
        bus["uart"], bus["tx"], bus["rx"], bus["de"], bus["baud"], bus.get("bits", 8), bus["parity"], bus.get("stop", 1)
    )
    poller = modbus_rtu.Poller(port, bus["slave"], bus["spec"])
    return [(metric, unit, _reader(poller, metric), 1) for metric, unit in poller.metrics()]


def _reader(poller, metric):
    return lambda: poller.read(metric)


def node_from_settings(settings, board, net, watchdog, updater):
    identity = {
        "id": settings["id"],
        "key": binascii.unhexlify(settings["key"]),
        "fw": FW,
        "host": settings["host"],
        "port": settings.get("port", 1883),
    }
    return Node(board, net, identity, build_sensors(board, settings.get("sensors", {})), watchdog, updater)


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
                updater = ota.Updater("/", board.mark_app_valid)
                node = node_from_settings(settings, board, net, watchdog, updater)
            mode, ms = node.run()
        except Exception as exc:  # a crash: sleep without clearing the boot counter (safe mode counts these)
            sys.print_exception(exc)
            board.deep_sleep(CRASH_SLEEP_MS)
            node = None  # not reached on a board: deep sleep ends in a reset
            continue
        if mode == "awake":
            board.sleep_ms(ms)
        else:
            board.deep_sleep(ms)


if __name__ == "__main__":
    run()
