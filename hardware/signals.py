"""A farm's physical signals as pure functions of a seed and a time, so simulators are repeatable.

Weather and soil follow simple physical shapes: air temperature swings daily around a seasonal
mean with day-to-day anomalies; soil temperature follows it damped and late; humidity comes from
a dew point close to the night's minimum, so it falls as the air warms; showers fall on random
days, raise humidity, cool the air, dim the light and wet the soil; the irrigation timer waters
every few days at 06:00 unless it rained the day before, running a pump; soil dries between
wettings.  Rain, energy and water totals accumulate from :data:`EPOCH` and never decrease.

Every random choice is a hash of (seed, day, purpose), never a stateful generator, so any time
can be evaluated in any order with the same answer; day-by-day state (soil moisture at midnight,
totals up to midnight) is memoised.  Sensor noise is a hash of (seed, noise key, second).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass

EPOCH = 1704067200.0  # 2024-01-01T00:00:00Z: totals (rain, energy, water) count from here
DAY = 86400.0
_MASK = (1 << 64) - 1
_WILTING, _SATURATION, _START_MOISTURE = 12.0, 46.0, 28.0  # soil moisture, % volume
_DRYING_TAU_S = 3.5 * DAY
_WETTING_PER_MM = 0.045  # share of the gap to saturation closed by each mm of water
_IRRIGATION_START_H, _IRRIGATION_MIN, _IRRIGATION_MM = 6.0, 40.0, 14.0
_PUMP_W, _FLOW_L_MIN = 1500.0, 45.0
_PIPE_AREA_M2 = math.pi * 0.025**2  # DN50 irrigation main
_BASE_LOAD_KW, _DAY_LOAD_KW = 0.25, 0.15


def _splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def stable_key(text: str) -> int:
    """A stable integer for a name, e.g. a noise key (Python's own str hash changes between runs)."""
    return zlib.crc32(text.encode())


@dataclass(frozen=True, slots=True)
class Shower:
    start: float
    end: float
    mm: float

    def fraction(self, t: float) -> float:
        return min(1.0, max(0.0, (t - self.start) / (self.end - self.start)))


class SignalModel:
    """The weather, soil and farm machinery of one site, as a function of time.

    ``utc_offset_h`` shifts local solar time (sunrise near 06:00, warmest near 15:00).
    """

    def __init__(self, seed: int = 0, utc_offset_h: float = 0.0) -> None:
        self.seed = seed
        self._offset_s = utc_offset_h * 3600.0
        self._moisture_at_midnight: dict[int, float] = {}
        self._totals_at_midnight: dict[int, tuple[float, float]] = {}  # rain mm, irrigation hours

    # -- seeded randomness --------------------------------------------------------------------
    def uniform(self, *parts: int) -> float:
        """A uniform number in [0, 1) fixed by the seed and ``parts``."""
        h = _splitmix(self.seed & _MASK)
        for p in parts:
            h = _splitmix(h ^ (p & _MASK))
        return (h >> 11) / float(1 << 53)

    def _gauss(self, *parts: int) -> float:
        u1 = max(self.uniform(*parts, 1), 1e-12)
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * self.uniform(*parts, 2))

    def noise(self, key: int, t: float, sigma: float) -> float:
        """Sensor noise: one Gaussian draw per second per key."""
        return sigma * self._gauss(key, int(t // 1.0)) if sigma else 0.0

    # -- calendar -------------------------------------------------------------------------------
    def _local(self, t: float) -> float:
        return t + self._offset_s

    def day(self, t: float) -> int:
        return int(self._local(t) // DAY)

    def hour(self, t: float) -> float:
        return (self._local(t) % DAY) / 3600.0

    def _at(self, day: int, hour: float) -> float:
        return day * DAY + hour * 3600.0 - self._offset_s

    def _smooth_daily(self, t: float, fn: Callable[[int], float]) -> float:
        """Cosine interpolation between daily values pinned at local noon (no jumps at midnight)."""
        x = self._local(t) / DAY - 0.5
        d = math.floor(x)
        w = (1.0 - math.cos(math.pi * (x - d))) / 2.0
        return fn(d) * (1.0 - w) + fn(d + 1) * w

    # -- events ---------------------------------------------------------------------------------
    def showers(self, day: int) -> tuple[Shower, ...]:
        """The day's rain showers (about one day in four has rain)."""
        if self.uniform(day, 11) >= 0.27:
            return ()
        out = []
        for i in range(1 + (self.uniform(day, 12) < 0.35)):
            duration_h = 0.5 + 2.5 * self.uniform(day, 13, i)
            start_h = (24.0 - duration_h) * self.uniform(day, 14, i)
            mm = min(45.0, 0.4 - 6.0 * math.log(1.0 - self.uniform(day, 15, i)))
            out.append(Shower(self._at(day, start_h), self._at(day, start_h + duration_h), mm))
        return tuple(sorted(out, key=lambda s: s.start))

    def irrigation(self, day: int) -> Shower | None:
        """The irrigation run of ``day``: every 2 or 3 days at 06:00, skipped after a wet day."""
        period = 2 + self.seed % 2
        if day % period or sum(s.mm for s in self.showers(day - 1)) >= 5.0:
            return None
        start = self._at(day, _IRRIGATION_START_H)
        return Shower(start, start + _IRRIGATION_MIN * 60.0, _IRRIGATION_MM)

    def irrigating(self, t: float) -> bool:
        run = self.irrigation(self.day(t))
        return run is not None and run.start <= t < run.end

    def _wetting_events(self, day: int) -> list[Shower]:
        events = list(self.showers(day))
        run = self.irrigation(day)
        if run is not None:
            events.append(run)
        return sorted(events, key=lambda s: s.start)

    def rain_influence(self, t: float) -> float:
        """1 while it rains, fading over about two hours after a shower."""
        d = self.day(t)
        best = 0.0
        for s in (*self.showers(d - 1), *self.showers(d)):
            if s.start <= t < s.end:
                return 1.0
            if t >= s.end:
                best = max(best, math.exp(-(t - s.end) / 7200.0))
        return best

    def rain_rate(self, t: float) -> float:
        """mm/h."""
        for s in self.showers(self.day(t)):
            if s.start <= t < s.end:
                return s.mm / ((s.end - s.start) / 3600.0)
        return 0.0

    # -- soil water -----------------------------------------------------------------------------
    def _moisture_through(self, m: float, since: float, events: list[Shower], t: float) -> float:
        """Soil moisture at ``t`` from ``m`` at ``since``, drying between the day's ``events``."""
        for ev in events:
            if ev.start > t:
                break
            m = _WILTING + (m - _WILTING) * math.exp(-(ev.start - since) / _DRYING_TAU_S)
            m = _SATURATION - (_SATURATION - m) * math.exp(-_WETTING_PER_MM * ev.mm * ev.fraction(t))
            since = min(t, ev.end)
        return _WILTING + (m - _WILTING) * math.exp(-(t - since) / _DRYING_TAU_S)

    def _midnight_moisture(self, day: int) -> float:
        """Soil moisture at the start of ``day``: days are chained from EPOCH (memoised), or, before
        EPOCH, from a month earlier (not memoised, so the answer never depends on what was asked first)."""
        known = self._moisture_at_midnight
        if day in known:
            return known[day]
        start = self.day(EPOCH)
        before_epoch = day < start
        d = day - 30 if before_epoch else max((k for k in known if k <= day), default=start)
        m = known.get(d, _START_MOISTURE) if not before_epoch else _START_MOISTURE
        while d < day:
            midnight = self._at(d, 0.0)
            m = self._moisture_through(m, midnight, self._wetting_events(d), midnight + DAY)
            d += 1
            if not before_epoch:
                known[d] = m
        return m

    def soil_moisture(self, t: float) -> float:
        """% volume."""
        d = self.day(t)
        return self._moisture_through(self._midnight_moisture(d), self._at(d, 0.0), self._wetting_events(d), t)

    # -- totals ---------------------------------------------------------------------------------
    def _midnight_totals(self, day: int) -> tuple[float, float]:
        """Rain (mm) and irrigation (hours) from EPOCH to the start of ``day``."""
        start = self.day(EPOCH)
        if day <= start:
            return 0.0, 0.0
        known = self._totals_at_midnight
        if day in known:
            return known[day]
        d = max((k for k in known if k <= day), default=start)
        rain, irrigation_h = known.get(d, (0.0, 0.0))
        while d < day:
            rain += sum(s.mm for s in self.showers(d))
            run = self.irrigation(d)
            irrigation_h += _IRRIGATION_MIN / 60.0 if run else 0.0
            d += 1
            known[d] = (rain, irrigation_h)
        return rain, irrigation_h

    def rain_total(self, t: float) -> float:
        """mm since EPOCH (0 before it)."""
        t = max(t, EPOCH)
        d = self.day(t)
        return self._midnight_totals(d)[0] + sum(s.mm * s.fraction(t) for s in self.showers(d))

    def irrigation_hours(self, t: float) -> float:
        t = max(t, EPOCH)
        d = self.day(t)
        run = self.irrigation(d)
        return self._midnight_totals(d)[1] + (run.fraction(t) * _IRRIGATION_MIN / 60.0 if run else 0.0)

    def energy(self, t: float) -> float:
        """kWh since EPOCH: a base load, a daytime load and the irrigation pump."""
        t = max(t, EPOCH)
        w = 2.0 * math.pi / DAY
        phase = self._offset_s - 3 * 3600.0  # daytime load peaks at 15:00 local
        day_load_h = ((t - EPOCH) - (math.sin(w * (t + phase)) - math.sin(w * (EPOCH + phase))) / w) / 3600.0
        return (_BASE_LOAD_KW * (t - EPOCH) / 3600.0 + _DAY_LOAD_KW * day_load_h
                + _PUMP_W / 1000.0 * self.irrigation_hours(t))

    def water_total(self, t: float) -> float:
        """m³ pumped since EPOCH."""
        return self.irrigation_hours(t) * 60.0 * _FLOW_L_MIN / 1000.0

    # -- weather --------------------------------------------------------------------------------
    def _seasonal(self, day: int) -> float:
        return 15.0 + 9.0 * math.cos(2.0 * math.pi * (day % 365.25 - 196.0) / 365.25)

    def _daily_mean(self, day: int) -> float:
        return self._seasonal(day) + 2.5 * self._gauss(day, 21) - (2.0 if self.showers(day) else 0.0)

    def _daily_amplitude(self, day: int) -> float:
        return (4.0 + 3.5 * self.uniform(day, 22)) * (0.55 if self.showers(day) else 1.0)

    def air_temperature(self, t: float) -> float:
        """°C: warmest near 15:00, coolest near 03:00; showers cool the air."""
        mean = self._smooth_daily(t, self._daily_mean)
        amp = self._smooth_daily(t, self._daily_amplitude)
        return mean + amp * math.cos(2.0 * math.pi * (self.hour(t) - 15.0) / 24.0) - 2.5 * self.rain_influence(t)

    def soil_temperature(self, t: float) -> float:
        """°C at about 10 cm: the air's daily swing damped to a third and three hours late."""
        lagged = t - 3 * 3600.0
        mean = self._smooth_daily(t - DAY, self._daily_mean) + 1.0
        amp = 0.33 * self._smooth_daily(lagged, self._daily_amplitude)
        return mean + amp * math.cos(2.0 * math.pi * (self.hour(lagged) - 15.0) / 24.0)

    def dew_point(self, t: float) -> float:
        return self._smooth_daily(t, lambda d: self._daily_mean(d) - self._daily_amplitude(d) - 1.0
                                  + 0.8 * self._gauss(d, 23))

    def relative_humidity(self, t: float) -> float:
        """%: from the dew point, so it falls as the air warms; near saturation in rain."""
        temp, dew = self.air_temperature(t), self.dew_point(t)
        rh = 100.0 * _vapour_pressure(min(dew, temp)) / _vapour_pressure(temp)
        rh += (97.0 - rh) * self.rain_influence(t)
        return min(100.0, max(10.0, rh))

    def pressure(self, t: float) -> float:
        """hPa at station level: slow synoptic waves, the semidiurnal tide, a dip in rain."""
        p1, p2 = 2 * math.pi * self.uniform(31), 2 * math.pi * self.uniform(32)
        return (1013.0 + 8.0 * math.sin(2 * math.pi * t / (5.3 * DAY) + p1)
                + 4.0 * math.sin(2 * math.pi * t / (2.1 * DAY) + p2)
                + 0.6 * math.cos(4 * math.pi * self.hour(t) / 24.0) - 4.0 * self.rain_influence(t))

    def sun(self, t: float) -> float:
        """0 at night, rising from 06:00 to 1 at noon and back to 0 at 18:00 local."""
        return max(0.0, math.sin(math.pi * (self.hour(t) - 6.0) / 12.0))

    def _cloud(self, day: int) -> float:
        return (0.45 + 0.45 * self.uniform(day, 41)) if self.showers(day) else 0.3 * self.uniform(day, 41)

    def illuminance(self, t: float) -> float:
        """lx: daylight under the day's cloud, darker in rain."""
        clouds = self._smooth_daily(t, self._cloud)
        return 110_000.0 * self.sun(t) ** 1.2 * (1.0 - 0.75 * clouds) * (1.0 - 0.6 * self.rain_influence(t))

    def solar_radiation(self, t: float) -> float:
        """W/m² (global horizontal), about lux / 110."""
        return self.illuminance(t) / 110.0

    def wind_speed(self, t: float) -> float:
        """m/s: a daily base, stronger in the afternoon and in showers, gusty."""
        base = self._smooth_daily(t, lambda d: 1.0 + 4.0 * self.uniform(d, 51))
        diurnal = 0.6 + 0.6 * max(0.0, math.sin(math.pi * (self.hour(t) - 8.0) / 12.0))
        return max(0.0, base * diurnal + 2.0 * self.rain_influence(t) + abs(self.noise(52, t / 5.0, 0.8)))

    def wind_direction(self, t: float) -> float:
        """Degrees from north, veering slowly."""
        heading = self._smooth_daily(t, lambda d: 360.0 * self.uniform(d // 3, 53) + 40.0 * self._gauss(d, 54))
        return (heading + self.noise(55, t, 12.0)) % 360.0

    def co2(self, t: float) -> float:
        """ppm in a greenhouse: respiration raises it at night, photosynthesis draws it down by day."""
        return 420.0 + 180.0 * (1.0 - self.sun(t)) ** 2 - 50.0 * self.sun(t)

    def leaf_wetness(self, t: float) -> float:
        """%: wet in and after rain, and with dew when humidity is high."""
        dew = max(0.0, (self.relative_humidity(t) - 90.0) * 10.0)
        return min(100.0, max(100.0 * self.rain_influence(t), dew))

    def pump_power(self, t: float) -> float:
        """W drawn by the irrigation pump (standby when off)."""
        return _PUMP_W if self.irrigating(t) else 4.0

    def load_power(self, t: float) -> float:
        """W drawn in total: base load, daytime load and pump (the derivative of :meth:`energy`)."""
        w = 2.0 * math.pi / DAY
        day_load = 1.0 - math.cos(w * (t + self._offset_s - 3 * 3600.0))
        return 1000.0 * (_BASE_LOAD_KW + _DAY_LOAD_KW * day_load) + (_PUMP_W if self.irrigating(t) else 0.0)

    def voltage(self, t: float) -> float:
        """V: mains with a slow wander, sagging while the pump runs."""
        return 230.0 + 2.5 * math.sin(2 * math.pi * t / (0.37 * DAY)) - (3.0 if self.irrigating(t) else 0.0)

    def current(self, t: float) -> float:
        return self.load_power(t) / self.voltage(t) / self.power_factor(t)

    def power_factor(self, t: float) -> float:
        return 0.82 if self.irrigating(t) else 0.95

    def water_flow(self, t: float) -> float:
        """L/min through the irrigation line."""
        return _FLOW_L_MIN if self.irrigating(t) else 0.0

    def water_velocity(self, t: float) -> float:
        """m/s in the irrigation main."""
        return self.water_flow(t) / 60_000.0 / _PIPE_AREA_M2

    def pumping_influence(self, t: float) -> float:
        """1 while the pump runs, recovering over about six hours after a run (well drawdown)."""
        for day in (self.day(t), self.day(t) - 1):
            run = self.irrigation(day)
            if run is not None and run.start <= t:
                return 1.0 if t < run.end else math.exp(-(t - run.end) / (6 * 3600.0))
        return 0.0

    def water_level(self, t: float) -> float:
        """m of water above a well or tank sensor: a slow seasonal swing, drawn down by pumping."""
        swing = 0.6 * math.sin(2 * math.pi * t / (23 * DAY) + 6.283 * self.uniform(81))
        return 2.5 + swing - 0.5 * self.pumping_influence(t)

    def water_pressure(self, t: float) -> float:
        """bar (gauge) of that water column."""
        return self.water_level(t) * 0.0980665

    # -- soil chemistry -------------------------------------------------------------------------
    def soil_ph(self, t: float) -> float:
        return 6.4 + 0.6 * self.uniform(61) + 0.1 * math.sin(2 * math.pi * t / (29 * DAY))

    def soil_permittivity(self, t: float) -> float:
        """Relative permittivity of the soil, rising with water content (roughly Topp's curve)."""
        m = self.soil_moisture(t)
        return 3.0 + 0.35 * m + 0.008 * m * m

    def soil_ec(self, t: float) -> float:
        """µS/cm: bulk conductivity grows with water content."""
        return (150.0 + 300.0 * self.uniform(62)) + 18.0 * self.soil_moisture(t)

    def soil_nutrient(self, t: float, which: int) -> float:
        """mg/kg of N (0), P (1) or K (2), tracking conductivity as cheap NPK probes do."""
        level = (30.0, 15.0, 120.0)[which] * (0.7 + 0.6 * self.uniform(63, which))
        return level * self.soil_ec(t) / 800.0


def _vapour_pressure(temp_c: float) -> float:
    """Saturation vapour pressure (hPa), Magnus formula."""
    return 6.112 * math.exp(17.62 * temp_c / (243.12 + temp_c))
