"""SYNTHETIC farms for the credit demo and tests: registry, sensor data, applications and repayment.

Nothing here is real data.  Every table this module returns carries ``attrs["synthetic"] = True``,
and the small tables (registry, seasons, applications, outcomes) also a ``synthetic`` column, so a
synthetic row cannot pass for a real one further down.

Two kinds of sensor data, both from the demo's signal model (:mod:`hardware.signals`):

* :func:`farm_readings` — raw readings of a few farms, minute by minute from :class:`SignalModel`
  itself (air temperature from the region's model, so neighbours share weather; rain and soil
  moisture from the farm's own), in the shape ``rural_credit.trust`` reads, with the corruption
  injectors below to prove the trust checks.
* :func:`generate_world` — many farm-seasons at once as **daily rollups** (the shape
  ``ft.readings_daily`` has), drawn with numpy from the same model statistically: seasonal
  temperature with day-to-day anomalies shared by a region, rain on about one day in four, an
  irrigation timer every 2 or 3 days at 06:00 that skips after a wet day, soil that dries with the
  model's time constant between wettings and closes the model's share of its gap to saturation per
  mm of water.  Rain and irrigation are taken to fall at 06:00 (a day's min/max/mean follow from that).

The causal model behind outcomes (documented so the lift it should show can be argued):

1. Each farm has a hidden **management quality** ``M ~ N(0, 1)``.
2. Management drives **irrigation**: each scheduled run is skipped with probability
   ``sigmoid(-1 - 1.5 M)`` (8 % at M = 1, 62 % at M = -1), so poorly managed farms irrigate
   irregularly and their soil spends more days in moisture stress.
3. **Yield index** ``Y = exp(-0.03 stress - 0.02 heat - 0.04 frost) * (1 + 0.08 e)`` from the season's
   soil-moisture stress days (< 18 %, rice < 25 %), heat days (max above the crop's limit) and frost
   days (min below 0 °C).
4. **Repayment**: ``logit P(default) = -2.6 + 3.5 (0.7 - Y) + application part``, where the application
   part is ``0.6 log(amount / 400) + 0.03 (term - 12) + 0.5 [no prior loans] - 1.2 (repaid share - 0.8)
   + purpose effect``.  Application fields are drawn independently of the farm.
5. ``null_world=True`` replaces ``Y`` by its mean over the world (the default rate stays alike):
   outcomes then depend on the application alone, and farm data can add no information (the
   assessment shows its lift at or below 0.01 AUC there).  Everything else is drawn identically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hardware.signals import DAY, SignalModel

# the signal model's soil constants (hardware.signals), repeated here by name for the vectorised world
WILTING, SATURATION, START_MOISTURE = 12.0, 46.0, 28.0
DRYING_TAU_DAYS = 3.5
WETTING_PER_MM = 0.045
IRRIGATION_MM = 14.0
RAIN_DAY_PROBABILITY = 0.27

CROPS = ("maize", "rice", "cassava", "sorghum")
CROP_SHARES = (0.4, 0.2, 0.2, 0.2)
#: heat limit (°C, daily max above it is a heat day) and moisture stress (%, daily mean below) per crop
HEAT_LIMIT = {"maize": 35.0, "rice": 35.0, "cassava": 37.0, "sorghum": 38.0}
MOISTURE_STRESS = {"maize": 18.0, "rice": 25.0, "cassava": 18.0, "sorghum": 18.0}
TENURES = ("owned", "leased", "communal")
PURPOSES = ("inputs", "equipment", "irrigation", "livestock")
PURPOSE_EFFECT = {"inputs": 0.0, "equipment": 0.2, "irrigation": -0.2, "livestock": 0.3}
SAMPLES_PER_DAY = 144  # one reading every 10 minutes
FARMS_PER_REGION = 50
#: the devices of a synthetic farm: (device suffix, spec, origin, metrics)
DEVICES = (("weather", "renke-weather-fsxcs-n01", "gateway", ("air_temperature", "rainfall")),
           ("soil", "capacitive-soil-moisture-v1-2", "node", ("soil_moisture",)))


def _synthetic(frame: pd.DataFrame, column: bool = True) -> pd.DataFrame:
    if column:
        frame["synthetic"] = True
    frame.attrs["synthetic"] = True
    return frame


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# -- raw readings of a few farms (trust) ---------------------------------------------------------


def device_specs(farm_ids: list[str]) -> dict[str, str]:
    """``{device_id: spec}`` of the synthetic farms' devices (for ``trust.checks.limits_from_specs``)."""
    return {f"{farm}-{suffix}": spec for farm in farm_ids for suffix, spec, _, _ in DEVICES}


def farm_readings(farms: int = 4, days: int = 21, start: str = "2025-04-01", interval_s: int = 600,
                  seed: int = 7, region_seed: int = 1000) -> pd.DataFrame:
    """Raw readings of ``farms`` neighbouring farms for ``days`` days, every ``interval_s`` seconds.

    Columns as ``rural_credit.trust.frames`` documents (with ``epoch`` 1).  The farms share the
    region's weather (air temperature, plus a fixed microclimate offset and their own sensor noise);
    rain and soil moisture come from each farm's own signal model.  Values are rounded to the
    sensors' 0.1 resolution.
    """
    t0 = pd.Timestamp(start, tz="UTC").timestamp()
    times = t0 + np.arange(0, days * DAY, interval_s, dtype=float)
    region = SignalModel(region_seed)
    air = np.array([region.air_temperature(t) for t in times])
    rng = np.random.default_rng(seed)
    ts = pd.to_datetime(times, unit="s", utc=True)
    frames = []
    for k in range(farms):
        farm = f"syn-farm-{k + 1}"
        model = SignalModel(seed * 100 + k)
        values = {
            "air_temperature": air + rng.normal(0.0, 0.6) + rng.normal(0.0, 0.15, len(times)),
            "rainfall": np.array([model.rain_total(t) for t in times]) - model.rain_total(times[0]),
            "soil_moisture": np.array([model.soil_moisture(t) for t in times]) + rng.normal(0.0, 0.15, len(times)),
        }
        for suffix, _, origin, metrics in DEVICES:
            for metric in metrics:
                frames.append(pd.DataFrame({"farm_id": farm, "device_id": f"{farm}-{suffix}", "metric": metric,
                                            "ts": ts, "value": np.round(values[metric], 1), "quality": 0,
                                            "origin": origin, "epoch": 1}))
    return _synthetic(pd.concat(frames, ignore_index=True), column=False)


def provisioning_events(readings: pd.DataFrame) -> pd.DataFrame:
    """A ``provisioned`` event for each device, a day before its first reading (the technician's record)."""
    first = readings.groupby("device_id")["ts"].min()
    events = pd.DataFrame({"device_id": first.index, "kind": "provisioned", "at": first.to_numpy()})
    events["at"] = events["at"] - pd.Timedelta(days=1)
    return _synthetic(events, column=False)


# -- corruption injectors (each returns a corrupted copy; the input is left alone) ----------------


def _rows(readings: pd.DataFrame, device_id: str, metric: str | None = None, since: str | None = None) -> pd.Series:
    rows = readings["device_id"] == device_id
    if metric is not None:
        rows &= readings["metric"] == metric
    if since is not None:
        rows &= readings["ts"] >= pd.Timestamp(since, tz="UTC")
    if not rows.any():
        raise ValueError(f"no readings of device {device_id!r}" + (f" metric {metric!r}" if metric else ""))
    return rows


def flat_line(readings: pd.DataFrame, device_id: str, metric: str, since: str) -> pd.DataFrame:
    """The sensor freezes at ``since``: every later reading repeats the value it had then."""
    out = readings.copy()
    rows = _rows(out, device_id, metric, since)
    out.loc[rows, "value"] = out.loc[rows, "value"].iloc[0]
    return out


def copy_series(readings: pd.DataFrame, from_farm: str, to_farm: str, metric: str, offset: float = 0.0) -> pd.DataFrame:
    """``to_farm``'s series of ``metric`` replaced by ``from_farm``'s (plus ``offset``): the same data on two farms."""
    out = readings.copy()
    source = out[(out["farm_id"] == from_farm) & (out["metric"] == metric)].set_index("ts")["value"]
    rows = (out["farm_id"] == to_farm) & (out["metric"] == metric)
    if source.empty or not rows.any():
        raise ValueError(f"{metric!r} missing on {from_farm!r} or {to_farm!r}")
    out.loc[rows, "value"] = out.loc[rows, "ts"].map(source).to_numpy() + offset
    return out


def out_of_range(readings: pd.DataFrame, device_id: str, metric: str, value: float, every: int = 50) -> pd.DataFrame:
    """Every ``every``-th reading of the series replaced by ``value`` (outside the spec's range)."""
    out = readings.copy()
    index = out.index[_rows(out, device_id, metric)][::every]
    out.loc[index, "value"] = value
    return out


def clock_off(readings: pd.DataFrame, device_id: str, hours: float) -> pd.DataFrame:
    """The device's clock runs ``hours`` off: its readings are stamped that much late."""
    out = readings.copy()
    rows = _rows(out, device_id)
    out.loc[rows, "ts"] = out.loc[rows, "ts"] + pd.Timedelta(hours=hours)
    return out


def rekey(readings: pd.DataFrame, device_id: str, at: str) -> pd.DataFrame:
    """The device's key epoch steps up at ``at`` (without an event unless the caller records one)."""
    out = readings.copy()
    rows = _rows(out, device_id, since=at)
    out.loc[rows, "epoch"] = out.loc[rows, "epoch"] + 1
    return out


def replace_device(readings: pd.DataFrame, events: pd.DataFrame, device_id: str, at: str,
                   new_device_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A technician's registered node replacement at ``at``: readings from then on come from the new
    device, and both devices get a ``replaced`` event (as ``cloud.store.device_events`` records it)."""
    out = readings.copy()
    out.loc[_rows(out, device_id, since=at), "device_id"] = new_device_id
    when = pd.Timestamp(at, tz="UTC")
    added = pd.DataFrame({"device_id": [device_id, new_device_id], "kind": "replaced", "at": [when, when]})
    return out, _synthetic(pd.concat([events, added], ignore_index=True), column=False)


# -- a world of farm-seasons as daily rollups (features, scorecard) -------------------------------


@dataclass(frozen=True)
class World:
    """A synthetic world: every frame is marked ``attrs["synthetic"]``."""

    registry: pd.DataFrame
    """farm_id, region, crop, area_ha, tenure, seasons_observed, synthetic"""
    seasons: pd.DataFrame
    """farm_id, season_id, start, end, crop, synthetic"""
    rollups: pd.DataFrame
    """daily rollups: farm_id, device_id, metric, bucket, n, sum, min, max (farm_id, device_id categorical)"""
    applications: pd.DataFrame
    """farm_id, season_id, amount, term_months, purpose, prior_loans, prior_repaid, synthetic"""
    outcomes: pd.DataFrame
    """farm_id, season_id, defaulted, yield_index, management (hidden cause), stress_days, synthetic"""
    null_world: bool


def generate_world(farms: int, seed: int = 0, *, null_world: bool = False, season_start: str = "2025-04-01",
                   season_days: int = 120, first_index: int = 0, coverage: float = 0.97) -> World:
    """``farms`` farm-seasons (one season each), deterministic for a seed; see the module docstring.

    ``first_index`` numbers the farms (``syn-0000042``) so chunks of a larger world do not collide;
    ``coverage`` is the mean share of (device, day) rollups present.
    """
    if farms < 1 or season_days < 2:
        raise ValueError(f"need at least one farm and two days; got {farms} farms, {season_days} days")
    rng = np.random.default_rng(seed)
    n, d = farms, season_days
    farm_ids = np.array([f"syn-{first_index + i:07d}" for i in range(n)])
    region = (first_index + np.arange(n)) // FARMS_PER_REGION
    regions = np.unique(region)
    crop = rng.choice(np.array(CROPS), size=n, p=CROP_SHARES)
    management = rng.normal(size=n)

    # weather: a region's daily anomaly and rain days, shared by its farms with a little local variation
    start = pd.Timestamp(season_start, tz="UTC")
    doy = (start.day_of_year - 1 + np.arange(d)) % 365.25
    seasonal = 15.0 + 9.0 * np.cos(2 * np.pi * (doy - 196.0) / 365.25)
    climate = rng.uniform(-2.0, 10.0, size=len(regions))[np.searchsorted(regions, region)]
    anomaly = rng.normal(0.0, 2.5, size=(len(regions), d))[np.searchsorted(regions, region)]
    region_wet = rng.random((len(regions), d))[np.searchsorted(regions, region)] < RAIN_DAY_PROBABILITY
    local = rng.random((n, d))
    rainy = np.where(region_wet, local < 0.85, local < 0.04)
    showers = 1 + (rng.random((n, d)) < 0.35)
    mm = np.minimum(45.0, 0.4 - 6.0 * np.log(1.0 - rng.random((n, d)))) * showers * rainy
    mean_t = seasonal + climate[:, None] + anomaly - 2.0 * rainy + rng.normal(0.0, 0.3, size=(n, d))
    amp = (4.0 + 3.5 * rng.random((n, d))) * np.where(rainy, 0.55, 1.0)

    # irrigation: every 2 or 3 days, skipped after a wet day, and skipped at random by poor managers
    period = rng.integers(2, 4, size=n)
    phase = rng.integers(0, 3, size=n)
    scheduled = (np.arange(d)[None, :] + phase[:, None]) % period[:, None] == 0
    wet_before = np.zeros((n, d), dtype=bool)
    wet_before[:, 1:] = mm[:, :-1] >= 5.0
    skip = rng.random((n, d)) < _sigmoid(-1.0 - 1.5 * management)[:, None]
    irrigated = scheduled & ~wet_before & ~skip

    m_open, m_mean, m_min, m_max = _moisture_days(mm + IRRIGATION_MM * irrigated, rng)
    m_noise = rng.normal(0.0, 0.1, size=(n, d))

    stress_limit = np.vectorize(MOISTURE_STRESS.get)(crop)
    heat_limit = np.vectorize(HEAT_LIMIT.get)(crop)
    stress_days = (m_mean < stress_limit[:, None]).sum(axis=1)
    heat_days = (mean_t + amp > heat_limit[:, None]).sum(axis=1)
    frost_days = (mean_t - amp < 0.0).sum(axis=1)
    yield_index = (np.exp(-0.03 * stress_days - 0.02 * heat_days - 0.04 * frost_days)
                   * (1.0 + 0.08 * rng.normal(size=n)))

    registry = _synthetic(pd.DataFrame({
        "farm_id": farm_ids, "region": [f"region-{r}" for r in region], "crop": crop,
        "area_ha": np.round(np.exp(rng.normal(0.7, 0.6, size=n)), 2),
        "tenure": rng.choice(np.array(TENURES), size=n, p=(0.6, 0.3, 0.1)),
        "seasons_observed": 1 + rng.poisson(2.0, size=n)}))
    end = start + pd.Timedelta(days=d)
    season_id = f"{start.year}-{start.month:02d}"
    seasons = _synthetic(pd.DataFrame({"farm_id": farm_ids, "season_id": season_id, "start": start, "end": end,
                                       "crop": crop}))

    prior_loans = rng.poisson(1.5, size=n)
    prior_repaid = rng.binomial(prior_loans, rng.beta(8.0, 2.0, size=n))
    amount = np.round(np.exp(rng.normal(math.log(400.0), 0.5, size=n)), -1)
    term = rng.choice(np.array([6, 9, 12, 18]), size=n)
    purpose = rng.choice(np.array(PURPOSES), size=n)
    repaid_share = np.where(prior_loans > 0, prior_repaid / np.maximum(prior_loans, 1), 0.8)
    logit = (-2.6 + 0.6 * np.log(amount / 400.0) + 0.03 * (term - 12) + 0.5 * (prior_loans == 0)
             - 1.2 * (repaid_share - 0.8) + np.vectorize(PURPOSE_EFFECT.get)(purpose))
    # the null world keeps the yield term's average (so the default rate stays alike) but not its variation
    logit = logit + 3.5 * (0.7 - (yield_index.mean() if null_world else yield_index))
    defaulted = rng.random(n) < _sigmoid(logit)
    applications = _synthetic(pd.DataFrame({"farm_id": farm_ids, "season_id": season_id, "amount": amount,
                                            "term_months": term, "purpose": purpose, "prior_loans": prior_loans,
                                            "prior_repaid": prior_repaid}))
    outcomes = _synthetic(pd.DataFrame({"farm_id": farm_ids, "season_id": season_id, "defaulted": defaulted,
                                        "yield_index": yield_index, "management": management,
                                        "stress_days": stress_days}))

    rain_total = np.cumsum(mm, axis=1) - mm  # the gauge's total at each midnight
    per_metric = {
        "air_temperature": (mean_t, mean_t - amp, mean_t + amp),
        "rainfall": (rain_total + mm / 2, rain_total, rain_total + mm),
        "soil_moisture": (m_mean + m_noise, m_min + m_noise, m_max + m_noise),
    }
    present = rng.random((n, len(DEVICES), d)) < rng.beta(30.0 * coverage, 30.0 * (1 - coverage) + 1e-9, n)[:, None,
                                                                                                            None]
    rollups = _rollup_frame(farm_ids, start, per_metric, present)
    return World(registry, seasons, rollups, applications, outcomes, null_world)


def _moisture_days(water_mm: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Soil moisture per farm-day: the value at midnight, the day's mean, min and max.

    Dries toward wilting with the model's time constant; the day's water arrives at 06:00.
    """
    n, d = water_mm.shape
    keep_6h, keep_18h = math.exp(-0.25 / DRYING_TAU_DAYS), math.exp(-0.75 / DRYING_TAU_DAYS)
    opening, mean, low, high = (np.empty((n, d)) for _ in range(4))
    m = START_MOISTURE + rng.normal(0.0, 4.0, size=n)
    for day in range(d):  # a loop over days, vectorised over farms
        pre = WILTING + (m - WILTING) * keep_6h
        post = SATURATION - (SATURATION - pre) * np.exp(-WETTING_PER_MM * water_mm[:, day])
        end = WILTING + (post - WILTING) * keep_18h
        opening[:, day] = m
        mean[:, day] = 0.25 * (m + pre) / 2 + 0.75 * (post + end) / 2
        low[:, day] = np.minimum(pre, end)
        high[:, day] = np.maximum(m, post)
        m = end
    return opening, mean, low, high


def _rollup_frame(farm_ids: np.ndarray, start: pd.Timestamp, per_metric: dict[str, tuple[np.ndarray, ...]],
                  present: np.ndarray) -> pd.DataFrame:
    """Daily rollup rows (farm, device, metric, day) of the present (device, day) pairs."""
    d = present.shape[2]
    buckets = pd.date_range(start, periods=d, freq="D")
    frames = []
    device_ids = [f"{farm}-{suffix}" for farm in farm_ids for suffix, *_ in DEVICES]  # as the store names them
    metrics = [m for *_, ms in DEVICES for m in ms]
    for k, (*_, device_metrics) in enumerate(DEVICES):
        farm_idx, day_idx = np.nonzero(present[:, k, :])
        for metric in device_metrics:
            mean, low, high = (a[farm_idx, day_idx] for a in per_metric[metric])
            frames.append(pd.DataFrame({
                "farm_id": pd.Categorical.from_codes(farm_idx, categories=farm_ids),
                "device_id": pd.Categorical.from_codes(farm_idx * len(DEVICES) + k, categories=device_ids),
                "metric": pd.Categorical.from_codes(np.full(len(farm_idx), metrics.index(metric)), categories=metrics),
                "bucket": buckets[day_idx], "n": SAMPLES_PER_DAY,
                "sum": np.round(mean, 2) * SAMPLES_PER_DAY, "min": np.round(low, 1), "max": np.round(high, 1)}))
    rollups = pd.concat(frames, ignore_index=True)  # categoricals with equal categories stay categorical
    return _synthetic(rollups, column=False)
