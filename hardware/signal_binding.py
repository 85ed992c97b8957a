"""Which signal a spec point measures, in which unit: by metric name, else by unit and category.

A spec says ``soil_moisture`` in ``%`` or ``air_pressure`` in ``kPa``; the simulator must answer
with the matching quantity of the :class:`~hardware.signals.SignalModel`, converted to the
point's unit.  Names are matched by patterns (first match wins), units are the fallback, and
what matches nothing becomes a slow wave inside the point's range, or a pulse counter.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from device_specs.schema import Point
from hardware.signals import DAY, EPOCH, SignalModel

_RAIN_PER_TIP_MM = 0.2  # tipping-bucket size when a gauge reports tips

@dataclass(frozen=True, slots=True)
class Signal:
    """How to compute one kind of quantity: its function, canonical unit, noise, and whether it only grows."""

    name: str
    unit: str
    noise: float = 0.0
    counter: bool = False


SIGNALS: dict[str, Signal] = {s.name: s for s in (
    Signal("air_temperature", "Cel", 0.05), Signal("soil_temperature", "Cel", 0.03),
    Signal("dew_point", "Cel", 0.05), Signal("relative_humidity", "%", 0.4),
    Signal("soil_moisture", "%", 0.15), Signal("rain_total", "mm", counter=True),
    Signal("rain_rate", "mm/h"), Signal("wind_speed", "m/s"), Signal("wind_direction", "deg"),
    Signal("pressure", "hPa", 0.08), Signal("illuminance", "lx", 50.0), Signal("solar_radiation", "W/m2", 0.5),
    Signal("co2", "ppm", 4.0), Signal("leaf_wetness", "%"), Signal("irrigating", "bool"),
    Signal("pump_power", "W", 3.0), Signal("load_power", "W", 5.0), Signal("energy", "kWh", counter=True),
    Signal("voltage", "V", 0.3), Signal("current", "A", 0.01), Signal("frequency", "Hz", 0.01),
    Signal("power_factor", "", 0.003), Signal("water_flow", "L/min", 0.2), Signal("water_total", "m3", counter=True),
    Signal("soil_ph", "pH", 0.02), Signal("soil_ec", "uS/cm", 3.0), Signal("soil_nitrogen", "mg/kg", 0.5),
    Signal("soil_phosphorus", "mg/kg", 0.3), Signal("soil_potassium", "mg/kg", 1.0),
    Signal("soil_permittivity", "", 0.05), Signal("water_velocity", "m/s", 0.005),
    Signal("water_level", "m", 0.003), Signal("water_pressure", "bar", 0.0003),
    Signal("uptime", "s", counter=True), Signal("counter", "count", counter=True), Signal("generic", "", 0.0),
)}

# metric name patterns, first match wins; "soil" in the category turns plain temperature/% into soil ones
_BY_NAME: list[tuple[str, str]] = [
    (r"soil.*(moist|water|vwc)|moisture|vwc", "soil_moisture"),
    (r"soil.*temp|water.*temp", "soil_temperature"),  # water in a well or tank: damped like soil
    (r"permittiv|dielectric", "soil_permittivity"),
    (r"dew", "dew_point"),
    (r"temp", "air_temperature"),
    (r"humid|(^|_)rh($|_)", "relative_humidity"),
    (r"rain.*(rate|intens)|precip.*(rate|intens)", "rain_rate"),
    (r"rain|precip", "rain_total"),
    (r"wind.*dir|direction", "wind_direction"),
    (r"wind|gust", "wind_speed"),
    (r"water.*press|hydrostat", "water_pressure"),
    (r"press|baro", "pressure"),
    (r"lux|illum|light", "illuminance"),
    (r"radiation|solar|irradi|(^|_)par($|_)", "solar_radiation"),
    (r"co2", "co2"),
    (r"leaf|wetness", "leaf_wetness"),
    (r"energy|kwh", "energy"),
    (r"power_factor|(^|_)pf($|_)|cos_phi", "power_factor"),
    (r"pump.*power", "pump_power"),
    (r"power", "load_power"),
    (r"volt", "voltage"),
    (r"current|amp", "current"),
    (r"freq", "frequency"),
    (r"(water|volume|flow).*(total|sum|cumul)|totali", "water_total"),
    (r"velocity", "water_velocity"),
    (r"flow", "water_flow"),
    (r"level|depth", "water_level"),
    (r"uptime|run_?time|operating_time", "uptime"),
    (r"count|pulse", "counter"),
    (r"(^|_)ph($|_)", "soil_ph"),
    (r"(^|_)ec($|_)|conduct", "soil_ec"),
    (r"nitrogen", "soil_nitrogen"),
    (r"phosph", "soil_phosphorus"),
    (r"potass", "soil_potassium"),
    (r"pump|irrigat|valve|relay", "irrigating"),
]

_BY_UNIT: dict[str, str] = {
    "cel": "air_temperature", "°c": "air_temperature", "degc": "air_temperature", "k": "air_temperature",
    "%": "relative_humidity", "%rh": "relative_humidity",
    "hpa": "pressure", "kpa": "pressure", "pa": "pressure", "mbar": "pressure",
    "mm": "rain_total", "mm/h": "rain_rate", "m/s": "wind_speed", "km/h": "wind_speed",
    "deg": "wind_direction", "°": "wind_direction", "lx": "illuminance", "lux": "illuminance",
    "w/m2": "solar_radiation", "w/m²": "solar_radiation", "ppm": "co2",
    "kwh": "energy", "wh": "energy", "mwh": "energy", "w": "load_power", "kw": "load_power",
    "v": "voltage", "a": "current", "hz": "frequency", "l/min": "water_flow", "m3/h": "water_flow",
    "m3": "water_total", "m³": "water_total", "ph": "soil_ph",
    "us/cm": "soil_ec", "ms/cm": "soil_ec", "ds/m": "soil_ec", "bar": "water_pressure", "count": "counter",
}

# (canonical unit, point unit) -> (factor, offset): point value = canonical * factor + offset
_CONVERSIONS: dict[tuple[str, str], tuple[float, float]] = {
    ("hpa", "kpa"): (0.1, 0.0), ("hpa", "pa"): (100.0, 0.0),
    ("kwh", "wh"): (1000.0, 0.0), ("kwh", "mwh"): (0.001, 0.0),
    ("w", "kw"): (0.001, 0.0), ("m/s", "km/h"): (3.6, 0.0),
    ("us/cm", "ms/cm"): (0.001, 0.0), ("us/cm", "ds/m"): (0.001, 0.0),
    ("l/min", "m3/h"): (0.06, 0.0), ("cel", "k"): (1.0, 273.15),
    ("%", "%rh"): (1.0, 0.0), ("bar", "kpa"): (100.0, 0.0), ("bar", "mbar"): (1000.0, 0.0),
    ("m", "cm"): (100.0, 0.0), ("s", "min"): (1 / 60.0, 0.0), ("s", "h"): (1 / 3600.0, 0.0),
    ("mm", "count"): (1 / _RAIN_PER_TIP_MM, 0.0),
}


@dataclass(frozen=True, slots=True)
class Binding:
    """One spec point tied to a signal, in the point's unit."""

    signal: Signal
    factor: float = 1.0
    offset: float = 0.0

    def value(self, model: SignalModel, t: float, noise_key: int, span: tuple[float, float] | None,
              origin: float) -> float:
        """The value at ``t`` for a point whose valid range is ``span``, on a device running since ``origin``."""
        s = self.signal
        lo, hi = span if span else (0.0, 100.0)
        if s.name == "generic":  # something we have no physics for: a slow wave inside its range
            period = DAY * (0.5 + 3.0 * model.uniform(noise_key, 71))
            phase = 2 * math.pi * model.uniform(noise_key, 72)
            return (lo + hi) / 2 + (hi - lo) / 4 * math.sin(2 * math.pi * t / period + phase)
        if s.name == "counter":  # pulses: fill the range in about 20 years, between one a minute and one a second
            rate = min(1.0, max(1 / 60.0, (hi - lo) / (20 * 365 * DAY) * (0.5 + model.uniform(noise_key, 73))))
            return max(lo, 0.0) + int(rate * max(0.0, t - EPOCH))
        if s.name == "uptime":
            return max(0.0, t - origin) * self.factor
        if s.name == "irrigating":
            return 1.0 if model.irrigating(t) else 0.0
        if s.name == "frequency":
            raw = 50.0
        elif s.name.startswith("soil_") and s.name[5:] in ("nitrogen", "phosphorus", "potassium"):
            raw = model.soil_nutrient(t, ("nitrogen", "phosphorus", "potassium").index(s.name[5:]))
        else:
            raw = getattr(model, s.name)(t)
        if not s.counter:
            raw += model.noise(noise_key, t, s.noise)
        return raw * self.factor + self.offset


def bind(point: Point, category: str) -> Binding:
    """The signal a spec point measures: by metric name, else by unit (and the spec's category)."""
    name = next((sig for pattern, sig in _BY_NAME if re.search(pattern, point.metric)), None)
    unit = point.unit.strip().lower()
    if name is None:
        name = _BY_UNIT.get(unit, "generic")
    if category == "soil" and name in ("air_temperature", "relative_humidity") and "air" not in point.metric:
        name = "soil_temperature" if name == "air_temperature" else "soil_moisture"
    signal = SIGNALS[name]
    canonical = signal.unit.lower()
    factor, offset = _CONVERSIONS.get((canonical, unit), (1.0, 0.0))
    return Binding(signal, factor, offset)
