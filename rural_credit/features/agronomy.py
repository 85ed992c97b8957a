"""Agronomic features of farm-seasons from daily rollups: degree days, stress days, rain, irrigation.

Input: daily rollups (``frames.ROLLUPS``; hourly rollups are folded into days with
:func:`daily_from_hourly`, the same sums the store makes) and seasons (``frames.SEASONS``).  Per
farm-season and day the farm's value of each quantity is the mean over its devices of the
device's daily figure: the day's min and max (temperature), mean (``sum / n``) and max (soil
moisture), and the rain gauge's daily increase (its counter's max minus the previous day's max;
the day's own max minus min when the day before is missing or the counter went down).

Counts are per season: a count over the observed days scaled by ``season days / observed days``, so
that missing days neither hide stress nor inflate it; a quantity observed on fewer than
:data:`MIN_OBSERVED_SHARE` of the season's days gives NaN (missing).  Everything is numpy/groupby
over all farm-seasons at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rural_credit.trust.frames import ROLLUPS, SEASONS, FrameError, require, utc


@dataclass(frozen=True)
class Crop:
    """Thresholds of a crop: GDD base and cap (°C), heat limit (°C, daily max), soil moisture stress (%)."""

    base_c: float
    cap_c: float
    heat_c: float
    moisture_stress_pct: float


CROPS: dict[str, Crop] = {
    "maize": Crop(10.0, 30.0, 35.0, 18.0),
    "rice": Crop(10.0, 35.0, 35.0, 25.0),
    "sorghum": Crop(10.0, 38.0, 38.0, 18.0),
    "cassava": Crop(12.0, 35.0, 37.0, 18.0),
}
#: thresholds for a crop not in :data:`CROPS`
DEFAULT_CROP = Crop(10.0, 30.0, 35.0, 18.0)
FROST_C = 0.0
#: a wetting of at least this many %-points (day's max over the previous day's mean) ...
IRRIGATION_JUMP_PCT = 2.0
#: ... on a day with less rain than this (mm) is an irrigation event
IRRIGATION_MAX_RAIN_MM = 2.0
MIN_OBSERVED_SHARE = 0.5
#: which metrics feed which quantity
TEMPERATURE_METRICS = ("air_temperature",)
MOISTURE_METRICS = ("soil_moisture",)
RAIN_METRICS = ("rainfall", "rainfall_total")
SOURCES = {"temperature": TEMPERATURE_METRICS, "moisture": MOISTURE_METRICS, "rain": RAIN_METRICS}

AGRONOMY_COLUMNS = ("gdd", "heat_days", "frost_days", "moisture_stress_days", "soil_moisture_mean",
                    "rainfall_mm", "irrigation_events", "irrigation_regularity", "season_days",
                    "temperature_coverage", "moisture_coverage", "rain_coverage", "data_coverage")


def daily_from_hourly(hourly: pd.DataFrame) -> pd.DataFrame:
    """Hourly rollups folded into daily ones (UTC days), as ``cloud.store.rollups`` folds them."""
    require(hourly, ROLLUPS, "hourly rollups")
    day = utc(hourly["bucket"], "rollups.bucket").dt.floor("D")
    keys = [hourly["farm_id"], hourly["device_id"], hourly["metric"], day.rename("bucket")]
    daily = hourly.groupby(keys, observed=True).agg(n=("n", "sum"), sum=("sum", "sum"), min=("min", "min"),
                                                    max=("max", "max"))
    return daily.reset_index()


def season_keys(seasons: pd.DataFrame) -> pd.DataFrame:
    """Seasons checked, with UTC start/end, their length in days and a row number ``key``."""
    require(seasons, SEASONS, "seasons")
    out = seasons[list(SEASONS)].reset_index(drop=True).copy()
    out["start"], out["end"] = utc(out["start"], "seasons.start"), utc(out["end"], "seasons.end")
    if (out["end"] <= out["start"]).any():
        raise FrameError("seasons: every end must be after its start")
    if out.duplicated(["farm_id", "season_id"]).any():
        raise FrameError("seasons: (farm_id, season_id) must be unique")
    out["days"] = ((out["end"] - out["start"]) / pd.Timedelta(days=1)).to_numpy().round().astype(int)
    out["key"] = np.arange(len(out))
    return out


def farm_days(rollups: pd.DataFrame, seasons: pd.DataFrame) -> pd.DataFrame:
    """One row per (season key, day index) with the farm's tmin, tmax, moisture mean/max and rain (mm).

    ``seasons`` as :func:`season_keys` returns it.  Keys are turned into integer codes first (farm,
    device, metric class), so the groupbys run on numbers, not strings.
    """
    require(rollups, ROLLUPS, "rollups")
    classes = list(SOURCES)
    metric = rollups["metric"].astype("category")
    lookup = np.array([next((i for i, c in enumerate(classes) if m in SOURCES[c]), -1)
                       for m in metric.cat.categories] + [-1])
    cls = lookup[metric.cat.codes.to_numpy()]  # code -1 (missing metric) picks the trailing -1
    farm_cats = pd.Index(seasons["farm_id"].astype(str).unique())
    farm = pd.Categorical(rollups["farm_id"], categories=farm_cats).codes
    keep = (farm >= 0) & (cls >= 0) & (rollups["n"].to_numpy() > 0)
    bucket_ns = utc(rollups["bucket"], "rollups.bucket").dt.as_unit("ns").astype("int64").to_numpy()
    rows = pd.DataFrame({"farm": farm[keep], "cls": cls[keep],
                         "device": rollups["device_id"].astype("category").cat.codes.to_numpy()[keep],
                         "bucket": bucket_ns[keep], "n": rollups["n"].to_numpy()[keep],
                         "sum": rollups["sum"].to_numpy()[keep], "min": rollups["min"].to_numpy()[keep],
                         "max": rollups["max"].to_numpy()[keep]})
    season_farm = pd.Categorical(seasons["farm_id"].astype(str), categories=farm_cats).codes
    start_ns = seasons["start"].dt.as_unit("ns").astype("int64").to_numpy()
    if len(farm_cats) == len(seasons):  # one season per farm: a lookup instead of a join
        key_of_farm = np.empty(len(farm_cats), dtype=np.int64)
        key_of_farm[season_farm] = seasons["key"].to_numpy()
        rows["key"] = key_of_farm[rows["farm"].to_numpy()]
    else:
        rows = rows.merge(pd.DataFrame({"farm": season_farm, "key": seasons["key"].to_numpy()}), on="farm")
    key = rows["key"].to_numpy()
    rows["day"] = (rows["bucket"].to_numpy() - start_ns[key]) // 86_400_000_000_000
    rows = rows[(rows["day"] >= 0) & (rows["day"] < seasons["days"].to_numpy()[key])]

    # per (season, day) cell: the mean over the farm's devices, by bincount over one integer cell code
    width = int(seasons["days"].max())
    cells = len(seasons) * width
    cell = rows["key"].to_numpy() * width + rows["day"].to_numpy()
    cls = rows["cls"].to_numpy()

    def cell_mean(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
        count = np.bincount(cell[mask], minlength=cells)
        total = np.bincount(cell[mask], weights=values[mask], minlength=cells)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / count, np.nan)

    is_t, is_m, is_r = (cls == classes.index(c) for c in ("temperature", "moisture", "rain"))
    low, high = rows["min"].to_numpy(float), rows["max"].to_numpy(float)
    out = {"tmin": cell_mean(is_t, low), "tmax": cell_mean(is_t, high),
           "m_mean": cell_mean(is_m, rows["sum"].to_numpy(float) / rows["n"].to_numpy(float)),
           "m_max": cell_mean(is_m, high), "rain": cell_mean(is_r, _rain_increase(rows, is_r))}
    present = ~np.all(np.isnan(np.vstack(list(out.values()))), axis=0)
    index = np.nonzero(present)[0]
    return pd.DataFrame({k: v[index] for k, v in out.items()},
                        index=pd.MultiIndex.from_arrays([index // width, index % width], names=["key", "day"]))


def _rain_increase(rows: pd.DataFrame, is_rain: np.ndarray) -> np.ndarray:
    """Each rain row's daily increase: its max minus the same device's max the day before (its own
    max - min when that day is missing or the counter went down); NaN for rows that are not rain."""
    device, day = rows["device"].to_numpy(), rows["day"].to_numpy()
    key, high, low = rows["key"].to_numpy(), rows["max"].to_numpy(float), rows["min"].to_numpy(float)
    order = np.lexsort((day, key, device))
    order = order[is_rain[order]]
    d, k, dv, h = day[order], key[order], device[order], high[order]
    follows = np.zeros(len(order), dtype=bool)
    follows[1:] = (dv[1:] == dv[:-1]) & (k[1:] == k[:-1]) & (d[1:] == d[:-1] + 1)
    step = np.full(len(order), np.nan)
    step[1:] = h[1:] - h[:-1]
    increase = np.full(len(rows), np.nan)
    increase[order] = np.where(follows & (step >= 0), step, h - low[order])
    return increase


def agronomy(rollups: pd.DataFrame, seasons: pd.DataFrame) -> pd.DataFrame:
    """The agronomic features (:data:`AGRONOMY_COLUMNS`) of every season in ``seasons``, in its row order."""
    s = season_keys(seasons)
    days = farm_days(rollups, s).reset_index()
    table = pd.DataFrame([(name, c.base_c, c.cap_c, c.heat_c, c.moisture_stress_pct) for name, c in CROPS.items()],
                         columns=["crop", "base", "cap", "heat", "stress"]).set_index("crop")
    default = pd.Series({"base": DEFAULT_CROP.base_c, "cap": DEFAULT_CROP.cap_c, "heat": DEFAULT_CROP.heat_c,
                         "stress": DEFAULT_CROP.moisture_stress_pct})
    params = table.reindex(s["crop"].astype(str).str.lower().to_numpy()).fillna(default).reset_index(drop=True)
    p = params.iloc[days["key"].to_numpy()].reset_index(drop=True)
    key = days["key"]
    season_days = s["days"].astype(float)

    t_ok = days["tmin"].notna() & days["tmax"].notna()
    m_ok = days["m_mean"].notna()
    r_ok = days["rain"].notna()
    observed = pd.DataFrame({"t": t_ok, "m": m_ok, "r": r_ok}).groupby(key).sum().reindex(s["key"], fill_value=0)
    observed.index = s.index

    gdd_day = ((np.minimum(days["tmax"], p["cap"]) + np.maximum(days["tmin"], p["base"])) / 2 - p["base"]).clip(0)
    follows = key.eq(key.shift()) & days["day"].eq(days["day"].shift() + 1)  # the row before is the day before
    prev_mean = days["m_mean"].shift().where(follows)
    dry = days["rain"].fillna(0.0) < IRRIGATION_MAX_RAIN_MM
    irrigation = (days["m_max"] - prev_mean >= IRRIGATION_JUMP_PCT) & dry
    per_day = pd.DataFrame({
        "gdd": gdd_day.where(t_ok, 0.0),
        "heat_days": (days["tmax"] > p["heat"]) & t_ok,
        "frost_days": (days["tmin"] < FROST_C) & t_ok,
        "moisture_stress_days": (days["m_mean"] < p["stress"]) & m_ok,
        "soil_moisture_mean": days["m_mean"].fillna(0.0),
        "rainfall_mm": days["rain"].fillna(0.0),
        "irrigation_events": irrigation,
    })
    totals = per_day.groupby(key).sum().reindex(s["key"], fill_value=0)
    totals.index = s.index

    def scaled(column: str, source: str) -> pd.Series:
        seen = observed[source]
        value = totals[column] * season_days / seen.where(seen > 0)
        return value.where(seen >= MIN_OBSERVED_SHARE * season_days)

    out = pd.DataFrame(index=s.index)
    out["gdd"] = scaled("gdd", "t")
    out["heat_days"] = scaled("heat_days", "t")
    out["frost_days"] = scaled("frost_days", "t")
    out["moisture_stress_days"] = scaled("moisture_stress_days", "m")
    out["soil_moisture_mean"] = scaled("soil_moisture_mean", "m") / season_days
    out["rainfall_mm"] = scaled("rainfall_mm", "r")
    out["irrigation_events"] = scaled("irrigation_events", "m")
    out["irrigation_regularity"] = _regularity(days.loc[irrigation, ["key", "day"]]).reindex(s["key"]).to_numpy()
    out["irrigation_regularity"] = out["irrigation_regularity"].where(out["irrigation_events"].notna())
    out["season_days"] = season_days
    out["temperature_coverage"] = observed["t"] / season_days
    out["moisture_coverage"] = observed["m"] / season_days
    out["rain_coverage"] = observed["r"] / season_days
    out["data_coverage"] = out[["temperature_coverage", "moisture_coverage", "rain_coverage"]].mean(axis=1)
    return out[list(AGRONOMY_COLUMNS)]


def _regularity(events: pd.DataFrame) -> pd.Series:
    """Per season key: 1 / (1 + coefficient of variation of the days between irrigation events); needs 3 events."""
    gap = events["day"].diff().where(events["key"].eq(events["key"].shift()))
    stats = gap.groupby(events["key"]).agg(["mean", "std", "count"])
    cv = stats["std"] / stats["mean"]
    return (1.0 / (1.0 + cv)).where(stats["count"] >= 2)
