"""The power cases (clock set at power-on, the sensors' switched rail) on real MicroPython.

tests/test_firmware_power_cases.py runs under CPython as it is; here every one of its cases runs on
the MicroPython WebAssembly build with firmware/ and contract/ installed unchanged.  The rail that
provisioning writes into ``/ft_node.json`` is checked against the reference build's wiring table.
"""

from __future__ import annotations

import test_firmware_power_cases as cases
from test_firmware_micropython import assert_cases_pass_on_micropython, needs_micropython
from test_firmware_node import NODE_BOARD_MODULES

from firmware import main
from firmware.hal_sim import SimBoard
from hardware.reference_build import get_build
from provisioning import node_settings

POWER_BOARD_MODULES = {**NODE_BOARD_MODULES, "test_firmware_power_cases": cases.__file__}


@needs_micropython
def test_every_power_case_passes_on_micropython() -> None:
    assert_cases_pass_on_micropython(cases, POWER_BOARD_MODULES)


def test_provisioning_writes_the_reference_builds_sensor_rail() -> None:
    build = get_build("node-esp32-soil")
    gate = [w for t in build.wiring for w in t.wires if w.to_pin == "Q1.G"]
    rail = node_settings.SENSOR_RAIL
    assert [w.from_pin for w in gate] == [f"U1.GPIO{rail['pin']}"]
    assert "low = sensor rail on" in (gate[0].notes or "") and rail["active"] == 0  # P-MOSFET, gate pulled up
    switched = {p.ref for p in build.parts if p.currents is not None and p.currents.rail == "3v3-switched"}
    assert switched == {"U4", "U5", "U6", "U7"}  # the probe, DS18B20, SHT31 and RS485 transceiver; not the divider
    settings = node_settings.settings_file("node-1", "00" * 32, ("gw", 1883), "farm", "pw", {"soil_pin": 34})
    made = main.sensor_rail(SimBoard(), settings["power"])
    assert (made.pin, made.active, made.settle_ms) == (26, 0, rail["settle_ms"]) and rail["settle_ms"] >= 150
