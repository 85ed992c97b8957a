"""On-site work with a provisioned node: verify, calibrate, info — the board's own firmware does the reading.

A reading on site is taken by the firmware modules already on the board (``firmware.main.build_sensors``
with the board's ``/ft_node.json``), so the technician sees what the node itself will send, not what a
second implementation thinks.  Each is shown next to the plausible range of its spec: a capacitive
probe's raw millivolts against the spec's ``soil_moisture_mv`` range and, through the node's
calibration (the cloud's config, else the spec's default scale and offset), as percent against
``soil_moisture``'s.  Interrupting the firmware to ask stops it, so every command resets the board
when done: the node goes back to work.

Calibration is the spec's two-point method (``capacitive-soil-moisture-v1-2``: dry air, then water
to the line) with ``firmware.drivers.soil_moisture.two_point``; the result goes to the cloud as the
node's config, which reaches the node signed (``PUT …/devices/{id}/config``, merged into the config the
node has: :mod:`provisioning.node_config`).  Every reading switches the sensors' rail on first (the
settings' ``power``) and off after, as the firmware's wake does: unpowered, the probe reads nothing.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from typing import Any

from device_specs.schema import DeviceSpec, Interface
from firmware.drivers.soil_moisture import two_point
from provisioning.board import MANIFEST_PATH, SETTINGS_PATH, Board
from provisioning.errors import ProvisioningError, SensorNotFound

#: the probe's output falls by more than this from dry air to water (about 1270 mV on the spec's sample)
MIN_AIR_WATER_SPAN_MV = 300.0
#: the metric a capacitive probe reports, as the firmware names it (``firmware.main.build_sensors``)
SOIL_METRIC = "soil_moisture"
#: Wi-Fi signal bands (dBm) for a node that should send reliably
RSSI_GOOD, RSSI_FAIR = -67, -80

# The sensors are on the switched rail (the settings' ``power``): on (and settled) before the first read, off
# after the last, also when a read crashed, as the firmware's own wake does.
_READINGS = """
import json
from firmware.hal import Esp32Board
from firmware.main import build_sensors, sensor_rail
with open(@SETTINGS@) as f:
    settings = json.load(f)
board = Esp32Board()
rail = sensor_rail(board, settings.get('power'))
out = {}
try:
    if rail is not None:
        rail.on()
    for item in build_sensors(board, settings.get('sensors', {})):
        metric, unit, read = item[0], item[1], item[2]
        values, error = [], None
        for _ in range(@SAMPLES@):
            try:
                values.append(read())
            except Exception as exc:
                error = repr(exc)
        out[metric] = {'unit': unit, 'values': values, 'error': error}
finally:
    if rail is not None:
        rail.off()
print('FT:' + json.dumps(out))
"""

_WIFI = """
import json, time, network
with open(@SETTINGS@) as f:
    wifi = json.load(f)['wifi']
w = network.WLAN(network.STA_IF)
w.active(True)
if not w.isconnected():
    w.connect(wifi['ssid'], wifi['password'])
    t = time.ticks_ms()
    while not w.isconnected() and time.ticks_diff(time.ticks_ms(), t) < 10000:
        time.sleep_ms(200)
r = {'ssid': wifi['ssid'], 'connected': w.isconnected(), 'rssi': None}
if r['connected']:
    try:
        r['rssi'] = w.status('rssi')
    except Exception:
        pass
print('FT:' + json.dumps(r))
"""


@dataclass(frozen=True)
class Reading:
    metric: str
    value: float | None
    unit: str
    low: float | None
    high: float | None
    error: str | None = None
    derived_from: str | None = None
    """the raw reading this one was computed from (``1650 mV``), when it is a calibrated value"""

    @property
    def plausible(self) -> bool | None:
        """None when there is no value or no range to judge it by."""
        if self.value is None or self.low is None or self.high is None:
            return None
        return self.low <= self.value <= self.high


def readings(board: Board, samples: int = 1) -> dict[str, dict[str, Any]]:
    """``metric -> {unit, values, error}`` read by the firmware on the board."""
    code = _READINGS.replace("@SETTINGS@", repr(SETTINGS_PATH)).replace("@SAMPLES@", str(int(samples)))
    return board.eval_json(code)


def wifi(board: Board) -> dict[str, Any]:
    """``{ssid, connected, rssi}``: joins the node's Wi-Fi first when it is not connected (10 s at most)."""
    return board.eval_json(_WIFI.replace("@SETTINGS@", repr(SETTINGS_PATH)))


def signal_quality(rssi: int | None) -> str:
    if rssi is None:
        return "no signal"
    return "good" if rssi >= RSSI_GOOD else "fair" if rssi >= RSSI_FAIR else "poor: move the node or the antenna"


def assess(specs: list[DeviceSpec], raw: dict[str, dict[str, Any]],
           calibration: dict[str, tuple[float, float]] | None = None) -> list[Reading]:
    """Each raw reading (median of its samples) with its spec's plausible range; ADC probes also calibrated."""
    points = {p.metric: (p, spec) for spec in specs for p in spec.points}
    out = []
    for metric, found in raw.items():
        values = found.get("values") or []
        value = statistics.median(values) if values else None
        unit, error = found.get("unit", ""), found.get("error") if not values else None
        point = points.get(metric)
        raw_point = points.get(f"{metric}_mv")
        if point is not None and raw_point is not None and point[1].interface == Interface.ADC:
            p_raw = raw_point[0]
            low, high = p_raw.range or (None, None)
            out.append(Reading(f"{metric}_mv", value, p_raw.unit, low, high, error))
            scale, offset = (calibration or {}).get(metric) or (point[0].scale, point[0].offset)
            low, high = point[0].range or (None, None)
            derived = None if value is None else value * scale + offset
            out.append(Reading(metric, derived, point[0].unit, low, high, error, derived_from=f"{value:g} mV"
                               if value is not None else None))
            continue
        low, high = point[0].range if point is not None and point[0].range else (None, None)
        out.append(Reading(metric, value, unit, low, high, error))
    return out


def board_facts(board: Board) -> dict[str, Any]:
    """The node's settings (key hidden) and the firmware manifest's version, as the board has them."""
    settings_raw = board.read_file(SETTINGS_PATH)
    manifest_raw = board.read_file(MANIFEST_PATH)
    settings = json.loads(settings_raw) if settings_raw else None
    if settings and "key" in settings:
        settings["key"] = "(set, hidden)"
    if settings and "wifi" in settings:
        settings["wifi"] = {"ssid": settings["wifi"].get("ssid"), "password": "(hidden)"}
    return {"settings": settings, "firmware": json.loads(manifest_raw).get("version") if manifest_raw else None}


def node_id(board: Board) -> str:
    """The device id in the board's settings; ProvisioningError when the board has none (not provisioned)."""
    raw = board.read_file(SETTINGS_PATH)
    if raw is None:
        raise ProvisioningError(f"the board on {board.port} has no {SETTINGS_PATH}: it is not provisioned",
                                todo="provision it first: `fieldtrust node provision`")
    return str(json.loads(raw)["id"])


def soil_raw_mv(board: Board, samples: int = 5) -> float:
    """The capacitive probe's output now, median of ``samples`` readings taken by the firmware's driver."""
    found = readings(board, samples).get(SOIL_METRIC)
    if found is None:
        raise SensorNotFound("this node has no capacitive soil probe in its settings (soil_pin)",
                             todo="provision it with --spec capacitive-soil-moisture-v1-2")
    if not found["values"]:
        raise SensorNotFound(f"the soil probe gave no reading: {found['error']}",
                             todo="check the probe's plug and cable against the wiring table in the technician's "
                                  "guide: 'no_probe' means no voltage on GPIO34 (unplugged or unpowered)")
    return float(statistics.median(found["values"]))


def two_point_calibration(air_mv: float, water_mv: float) -> tuple[float, float]:
    """``(scale, offset)`` mapping mV to 0-100 %; refused when air and water barely differ."""
    if air_mv - water_mv < MIN_AIR_WATER_SPAN_MV:
        raise ProvisioningError(
            f"dry air gave {air_mv:g} mV and water {water_mv:g} mV: the probe's output should fall by at least "
            f"{MIN_AIR_WATER_SPAN_MV:g} mV in water",
            todo="hold the probe in dry air for the first reading and stand it in water up to the line for the "
                 "second; a probe reading the same in both is broken (a 555 that does not start at 3.3 V)")
    scale, offset = two_point(air_mv, water_mv)
    return float(scale), float(offset)
