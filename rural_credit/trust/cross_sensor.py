"""Checks that compare sensors with each other: rain must wet the soil, neighbours' weather must agree.

A single sensor can be plausible on its own and still be wrong (a moisture probe lying in a bucket,
a weather mast fed with another place's data).  These checks compare what should move together.
Both take the frame ``checks.prepare`` returns and return a boolean Series on its index.

Rain gauges report cumulative totals (``rainfall`` on the weather mast, ``rainfall_total`` on the
gauge), so rain per hour is the increase of a device's total over the hour.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

RAIN_COUNTERS = ("rainfall", "rainfall_total")
MOISTURE_METRICS = ("soil_moisture",)
#: a day with at least this much rain (mm) must show in the soil moisture
RAIN_DAY_MM = 8.0
#: the smallest rise (%-points) of hourly mean moisture within 3 h of the day's heaviest rain hour
MIN_WETTING_RISE = 0.5
#: soil this wet (%) may be saturated already and need not rise
NEAR_SATURATION = 40.0
#: a farm is inconsistent when at least this share of its (at least two) rain days left the soil dry
INCONSISTENT_SHARE = 0.5
#: daily means further than this from the neighbours' median are flagged (by metric)
NEIGHBOUR_TOLERANCE: dict[str, float] = {"air_temperature": 4.0, "air_humidity": 25.0, "air_pressure": 6.0}
#: a day's median needs this many farms reporting
MIN_NEIGHBOURS = 3


def hourly_rain(r: pd.DataFrame, rain_metrics: tuple[str, ...] = RAIN_COUNTERS) -> pd.DataFrame:
    """Rain (mm) per farm and UTC hour: each counter's increase over the hour, averaged over a farm's gauges.

    A counter that went down (reset, replaced gauge) counts no rain for that hour.
    """
    rain = r[r["metric"].isin(rain_metrics) & r["value"].notna()]
    if rain.empty:
        return pd.DataFrame(columns=["farm_id", "hour", "rain_mm"])
    per_device = (rain.assign(hour=rain["ts"].dt.floor("h"))
                  .groupby(["farm_id", "device_id", "metric", "hour"], sort=True)["value"].max().reset_index())
    step = per_device.groupby(["farm_id", "device_id", "metric"])["value"].diff()
    per_device["rain_mm"] = step.clip(lower=0).fillna(0.0)
    return per_device.groupby(["farm_id", "hour"], as_index=False)["rain_mm"].mean()


def rain_moisture(r: pd.DataFrame, rain_metrics: tuple[str, ...] = RAIN_COUNTERS,
                  moisture_metrics: tuple[str, ...] = MOISTURE_METRICS) -> pd.Series:
    """Rain days that left the soil moisture flat, on a farm where most rain days did.

    For each farm-day with at least :data:`RAIN_DAY_MM` of rain, the hourly mean moisture before the
    day's heaviest rain hour is compared with its highest value in the three hours from it; a rise
    under :data:`MIN_WETTING_RISE` in soil drier than :data:`NEAR_SATURATION` is a miss.  A farm with at
    least two rain days, :data:`INCONSISTENT_SHARE` of them missed, has the moisture and rain readings
    of the missed days flagged.
    """
    flags = pd.Series(False, index=r.index, name="rain_moisture")
    rain = hourly_rain(r, rain_metrics)
    moist = r[r["metric"].isin(moisture_metrics) & r["value"].notna()]
    if rain.empty or moist.empty:
        return flags
    moisture = (moist.assign(hour=moist["ts"].dt.floor("h"))
                .groupby(["farm_id", "hour"], as_index=False)["value"].mean())
    rain["day"] = rain["hour"].dt.floor("D")
    daily = rain.groupby(["farm_id", "day"])["rain_mm"].agg(["sum", "idxmax"])
    wet = daily[daily["sum"] >= RAIN_DAY_MM]
    if wet.empty:
        return flags
    events = rain.loc[wet["idxmax"], ["farm_id", "day", "hour"]].rename(columns={"hour": "t0"})
    pairs = events.merge(moisture, on="farm_id")
    offset = (pairs["hour"] - pairs["t0"]) / pd.Timedelta(hours=1)
    before = pairs[offset == -1].set_index(["farm_id", "day"])["value"]
    after = pairs[(offset >= 0) & (offset <= 3)].groupby(["farm_id", "day"])["value"].max()
    judged = pd.DataFrame({"before": before, "after": after}).dropna()
    judged = judged[judged["before"] < NEAR_SATURATION]
    if judged.empty:
        return flags
    judged["missed"] = (judged["after"] - judged["before"]) < MIN_WETTING_RISE
    per_farm = judged.groupby(level="farm_id")["missed"].agg(["size", "mean"])
    bad_farms = per_farm[(per_farm["size"] >= 2) & (per_farm["mean"] >= INCONSISTENT_SHARE)].index
    missed = judged[judged["missed"] & judged.index.get_level_values("farm_id").isin(bad_farms)].index
    if len(missed) == 0:
        return flags
    key = pd.MultiIndex.from_arrays([r["farm_id"], r["ts"].dt.floor("D")])
    involved = r["metric"].isin(rain_metrics + moisture_metrics).to_numpy()
    flags[:] = key.isin(missed) & involved
    return flags


def neighbour_weather(r: pd.DataFrame, regions: Mapping[str, str] | None = None,
                      tolerance: Mapping[str, float] | None = None) -> pd.Series:
    """Daily weather means that disagree with the neighbouring farms' median.

    Neighbours are the farms of the same region (``regions`` maps farm to region; without it every
    farm in the frame is one region).  Per metric in ``tolerance`` (default
    :data:`NEIGHBOUR_TOLERANCE`) and UTC day, a farm's mean more than the tolerance from the median of
    at least :data:`MIN_NEIGHBOURS` farms flags that farm's readings of the metric on that day.
    """
    limits = NEIGHBOUR_TOLERANCE if tolerance is None else tolerance
    flags = pd.Series(False, index=r.index, name="neighbour_weather")
    weather = r[r["metric"].isin(list(limits)) & r["value"].notna()]
    if weather.empty:
        return flags
    region = weather["farm_id"].map(regions) if regions is not None else pd.Series("all", index=weather.index)
    daily = (weather.assign(day=weather["ts"].dt.floor("D"), region=region.fillna("?"))
             .groupby(["region", "metric", "day", "farm_id"], as_index=False)["value"].mean())
    cohort = daily.groupby(["region", "metric", "day"])["value"]
    daily["median"] = cohort.transform("median")
    daily["count"] = cohort.transform("size")
    daily["limit"] = daily["metric"].map(limits)
    off = daily[(daily["count"] >= MIN_NEIGHBOURS) & ((daily["value"] - daily["median"]).abs() > daily["limit"])]
    if off.empty:
        return flags
    key = pd.MultiIndex.from_arrays([r["farm_id"], r["metric"], r["ts"].dt.floor("D")])
    flags[:] = np.asarray(key.isin(pd.MultiIndex.from_frame(off[["farm_id", "metric", "day"]])))
    return flags
