"""Duplicated series across farms: the same data under two farms is a fraud signal for both.

Two ways to notice a copy, both over the frame ``checks.prepare`` returns (the farm-season window of
a farm and the farms it is compared with):

* **exact daily profiles**: each (farm, device, metric, day) is fingerprinted from its readings'
  times of day and values (rounded to 0.01); the same fingerprint on another farm is a copied day.
  Days with one constant value (a dry rain counter, a frozen sensor) prove nothing and are skipped.
* **correlated residuals**: a copy that was shifted or scaled no longer matches exactly.  Per metric,
  each series' hourly means minus the median of all series at that hour (the weather they share)
  and minus its own mean leaves what is particular to that place; two farms whose residuals
  correlate at :data:`RESIDUAL_CORRELATION` or more over at least :data:`MIN_COMMON_HOURS` hours carry
  the same particular data.  Needs at least three series of the metric for a median.

Both farms of a pair are flagged: the data cannot tell which one is the original.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: readings a day needs before its fingerprint counts
MIN_READINGS_PER_DAY = 12
RESIDUAL_CORRELATION = 0.98
MIN_COMMON_HOURS = 48
#: residual correlation is computed for these metrics (those whose shared part a median removes)
RESIDUAL_METRICS = ("air_temperature", "air_humidity", "soil_moisture", "soil_temperature", "air_pressure")


def duplicated_series(r: pd.DataFrame) -> pd.Series:
    """Readings of a series that another farm carries too (exact days or correlated residuals)."""
    return (copied_days(r) | correlated_residuals(r)).rename("duplicates")


def copied_days(r: pd.DataFrame) -> pd.Series:
    """Readings of (farm, device, metric, day) groups whose exact profile appears on another farm."""
    valid = r[r["value"].notna()]
    flags = pd.Series(False, index=r.index, name="copied_days")
    if valid.empty:
        return flags
    day = valid["ts"].dt.floor("D")
    elements = pd.DataFrame({"sod": (valid["ts"] - day).dt.total_seconds().round().astype("int64"),
                             "v": (valid["value"] * 100).round().astype("int64")})
    row_hash = pd.util.hash_pandas_object(elements, index=False).to_numpy()
    parts = pd.DataFrame({"farm_id": valid["farm_id"], "device_id": valid["device_id"], "metric": valid["metric"],
                          "day": day, "h_min": row_hash, "h_max": row_hash,
                          "h_sum": (row_hash % (1 << 40)).astype("int64"), "v_min": valid["value"],
                          "v_max": valid["value"]})
    keys = ["farm_id", "device_id", "metric", "day"]
    groups = parts.groupby(keys).agg(n=("h_min", "size"), h_min=("h_min", "min"), h_max=("h_max", "max"),
                                     h_sum=("h_sum", "sum"), v_min=("v_min", "min"), v_max=("v_max", "max"))
    groups = groups[(groups["n"] >= MIN_READINGS_PER_DAY) & (groups["v_min"] < groups["v_max"])].reset_index()
    fingerprint = ["metric", "day", "n", "h_min", "h_max", "h_sum"]
    farms_per_print = groups.groupby(fingerprint)["farm_id"].transform("nunique")
    copied = groups.loc[farms_per_print >= 2, keys]
    if copied.empty:
        return flags
    key = pd.MultiIndex.from_arrays([r["farm_id"], r["device_id"], r["metric"], r["ts"].dt.floor("D")])
    flags[:] = np.asarray(key.isin(pd.MultiIndex.from_frame(copied)))
    return flags


def residual_correlations(r: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Pairs of series (on different farms) of ``metric``: their residual correlation and common hours."""
    rows = r[(r["metric"] == metric) & r["value"].notna()]
    empty = pd.DataFrame(columns=["farm_a", "device_a", "farm_b", "device_b", "correlation", "hours"])
    if rows.empty:
        return empty
    hourly = rows.groupby(["farm_id", "device_id", rows["ts"].dt.floor("h")])["value"].mean().unstack("ts")
    if len(hourly) < 3:
        return empty
    x = hourly.to_numpy(dtype=float)
    with np.errstate(all="ignore"):
        resid = x - np.nanmedian(x, axis=0, keepdims=True)
        resid -= np.nanmean(resid, axis=1, keepdims=True)
    mask = ~np.isnan(resid)
    z = np.where(mask, resid, 0.0)
    m = mask.astype(float)
    cov = z @ z.T
    sq = (z * z) @ m.T  # sum of a's squares over the hours both series have
    common = m @ m.T
    with np.errstate(all="ignore"):
        corr = cov / np.sqrt(sq * sq.T)
    farms = hourly.index.get_level_values("farm_id").to_numpy()
    devices = hourly.index.get_level_values("device_id").to_numpy()
    a, b = np.triu_indices(len(hourly), k=1)
    keep = farms[a] != farms[b]
    a, b = a[keep], b[keep]
    return pd.DataFrame({"farm_a": farms[a], "device_a": devices[a], "farm_b": farms[b], "device_b": devices[b],
                         "correlation": corr[a, b], "hours": common[a, b].astype(int)})


def correlated_residuals(r: pd.DataFrame) -> pd.Series:
    """Readings of series whose residuals match another farm's series (see the module docstring)."""
    flags = pd.Series(False, index=r.index, name="correlated_residuals")
    for metric in sorted(set(r["metric"].unique()) & set(RESIDUAL_METRICS)):
        pairs = residual_correlations(r, metric)
        hit = pairs[(pairs["correlation"] >= RESIDUAL_CORRELATION) & (pairs["hours"] >= MIN_COMMON_HOURS)]
        if hit.empty:
            continue
        series = pd.concat([hit[["farm_a", "device_a"]].set_axis(["farm_id", "device_id"], axis=1),
                            hit[["farm_b", "device_b"]].set_axis(["farm_id", "device_id"], axis=1)])
        key = pd.MultiIndex.from_arrays([r["farm_id"], r["device_id"]])
        flags |= np.asarray(key.isin(pd.MultiIndex.from_frame(series))) & (r["metric"] == metric).to_numpy()
    return flags
