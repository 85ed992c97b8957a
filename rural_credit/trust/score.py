"""A farm-season's trust in [0, 1], its parts, its coverage, and the provenance of the data used.

:func:`assess` runs every check over the readings of a farm-season window (the farm's own readings
and, for the cross-farm checks, its neighbours'), and per farm returns:

* **parts**, each in [0, 1]: ``origin`` — the mean weight of the readings' origins (signed by the node
  1.0, attested by the gateway 0.9, entered by hand 0.5: :data:`ORIGIN_WEIGHTS`); ``coverage`` — the
  share of expected samples present (per metric, the window's slots of its poll interval that hold
  a reading, averaged over the farm's metrics: :func:`coverage`);
  and per check ``c`` the share of the farm's readings it did not flag, ``1 - flagged_c / readings``.
* **trust** = ``origin^1 · coverage^0.5 · Π_c part_c^w_c``: a weighted geometric combination, so a
  part at 0 sinks the whole and the weights :data:`CHECK_WEIGHTS` say how hard each kind of fault
  counts.  Copies of another farm's data and unexplained re-keys or moves (fraud signals) weigh 4;
  a shifted clock 2; a frozen sensor 1.5; glitches and cross-sensor misses 1.
* **provenance**: SHA-256 of a canonical serialisation of exactly the farm's rows used (see
  :func:`provenance`), the same whatever order the rows came in.

``metric_trust`` says per farm and metric which share of readings passed every check; features
computed from a metric under :data:`METRIC_TRUSTED` are marked untrusted (``features.build``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rural_credit.trust import checks, cross_sensor, duplicates
from rural_credit.trust.checks import Window

ORIGIN_WEIGHTS: dict[str, float] = {"node": 1.0, "gateway": 0.9, "manual": 0.5}
CHECK_WEIGHTS: dict[str, float] = {
    "out_of_range": 1.0, "rate_of_change": 1.0, "flat_line": 1.5, "clock": 2.0,
    "rain_moisture": 1.0, "neighbour_weather": 1.0, "duplicates": 4.0, "maintenance": 4.0,
}
ORIGIN_WEIGHT_EXPONENT = 1.0
COVERAGE_EXPONENT = 0.5
#: a farm's metric whose readings pass every check at least this often is trusted for features
METRIC_TRUSTED = 0.9
#: the columns, in this order, that provenance serialises (``epoch`` when the frame has it)
PROVENANCE_COLUMNS = ("farm_id", "device_id", "metric", "ts", "value", "quality", "origin", "epoch")


@dataclass(frozen=True)
class TrustReport:
    """What :func:`assess` found.

    ``farms``: one row per farm (index farm_id): trust, coverage, readings, provenance_sha256 and one
    ``part_<name>`` column per part.  ``flags``: one boolean column per check, one row per reading of
    ``readings`` (the prepared readings, same index).  ``metric_trust``: farm_id, metric, readings,
    clean_share, trusted.
    """

    farms: pd.DataFrame
    flags: pd.DataFrame
    metric_trust: pd.DataFrame
    readings: pd.DataFrame

    def parts(self, farm_id: str) -> dict[str, float]:
        """The parts of one farm's trust, by name."""
        row = self.farms.loc[farm_id]
        return {c.removeprefix("part_"): float(row[c]) for c in self.farms.columns if c.startswith("part_")}


def run_checks(r: pd.DataFrame, window: Window | None = None, *, limits: pd.DataFrame | None = None,
               events: pd.DataFrame | None = None, regions: Mapping[str, str] | None = None,
               expected_peak_h: float | None = None) -> pd.DataFrame:
    """Every check's flags over prepared readings ``r`` (``checks.prepare``), one column per check."""
    return pd.DataFrame({
        "out_of_range": checks.out_of_range(r, limits),
        "rate_of_change": checks.rate_of_change(r),
        "flat_line": checks.flat_line(r, limits),
        "clock": checks.clock(r, window, expected_peak_h),
        "rain_moisture": cross_sensor.rain_moisture(r),
        "neighbour_weather": cross_sensor.neighbour_weather(r, regions),
        "duplicates": duplicates.duplicated_series(r),
        "maintenance": checks.maintenance(r, events, window),
    }, index=r.index)


def assess(readings: pd.DataFrame, window: Window, *, limits: pd.DataFrame | None = None,
           events: pd.DataFrame | None = None, regions: Mapping[str, str] | None = None,
           expected_peak_h: float | None = None) -> TrustReport:
    """Trust, parts, coverage and provenance of every farm in ``readings`` for ``window``."""
    r = checks.prepare(readings)
    r = r[(r["ts"] >= window.start - checks.MAINTENANCE_TOLERANCE)].reset_index(drop=True)
    flags = run_checks(r, window, limits=limits, events=events, regions=regions, expected_peak_h=expected_peak_h)
    in_window = (r["ts"] >= window.start) & (r["ts"] < window.end)
    used, used_flags = r[in_window], flags[in_window]

    farm = used["farm_id"]
    flagged_share = used_flags.groupby(farm).mean()
    parts = pd.DataFrame(index=flagged_share.index)
    parts["part_origin"] = used["origin"].map(ORIGIN_WEIGHTS).groupby(farm).mean()
    parts["part_coverage"] = coverage(used, window, limits)
    for check in CHECK_WEIGHTS:
        parts[f"part_{check}"] = 1.0 - flagged_share[check]
    with np.errstate(divide="ignore"):  # a part at 0 gives a trust of 0
        log_parts = np.log(parts)
    log_trust = (ORIGIN_WEIGHT_EXPONENT * log_parts["part_origin"]
                 + COVERAGE_EXPONENT * log_parts["part_coverage"])
    for check, weight in CHECK_WEIGHTS.items():
        log_trust = log_trust + weight * log_parts[f"part_{check}"]
    farms = pd.DataFrame({"trust": np.exp(log_trust).clip(0.0, 1.0), "coverage": parts["part_coverage"],
                          "readings": farm.value_counts()})
    farms["provenance_sha256"] = pd.Series({f: provenance(rows) for f, rows in used.groupby("farm_id")})
    farms = farms.join(parts)
    farms.index.name = "farm_id"

    clean = ~used_flags.any(axis=1)
    metric_trust = (pd.DataFrame({"farm_id": farm, "metric": used["metric"], "clean": clean})
                    .groupby(["farm_id", "metric"])["clean"].agg(readings="size", clean_share="mean").reset_index())
    metric_trust["trusted"] = metric_trust["clean_share"] >= METRIC_TRUSTED
    return TrustReport(farms, flags, metric_trust, r)


def coverage(r: pd.DataFrame, window: Window, limits: pd.DataFrame | None = None) -> pd.Series:
    """Per farm: the mean over its metrics of the share of the window's sampling slots holding a reading.

    A metric's slot is its poll interval (the shortest of its devices' ``interval_s`` in ``limits``,
    else the median spacing of its readings); a slot counts once however many devices filled it, so a
    device replaced mid-season (old one until the swap, new one after) leaves no hole.
    """
    present = r[r["value"].notna()]
    step = present["ts"].diff().dt.total_seconds().where(~checks.series_starts(present))  # r is sorted by series
    interval = step.groupby([present["farm_id"], present["metric"]]).median()
    if limits is not None:
        configured = checks.limits_of(present, limits)["interval_s"].astype(float)
        configured = configured.groupby([present["farm_id"], present["metric"]]).min()
        interval = configured.fillna(interval)
    interval = interval.clip(lower=1.0).rename("interval_s")
    rows = present[["farm_id", "metric", "ts"]].join(interval, on=["farm_id", "metric"])
    rows["slot"] = ((rows["ts"] - window.start).dt.total_seconds() // rows["interval_s"]).astype("int64")
    filled = rows.drop_duplicates(["farm_id", "metric", "slot"]).groupby(["farm_id", "metric"]).size()
    expected = np.ceil((window.end - window.start).total_seconds() / interval)
    return (filled / expected).clip(upper=1.0).fillna(0.0).groupby(level="farm_id").mean()


def provenance(rows: pd.DataFrame) -> str:
    """SHA-256 (hex) of the canonical serialisation of ``rows``: stable under row order.

    Canonical form: CSV (``\\n`` line ends) of the columns :data:`PROVENANCE_COLUMNS` the frame has, in
    that order, with a header; ``ts`` as integer nanoseconds since the Unix epoch (UTC); values in
    the shortest round-trip float form (``repr``), an empty field for no value; rows sorted by
    every column.  Anyone holding the same rows gets the same hash.
    """
    columns = [c for c in PROVENANCE_COLUMNS if c in rows.columns]
    canon = rows[columns].copy()
    canon["ts"] = pd.to_datetime(canon["ts"], utc=True).dt.as_unit("ns").astype("int64")
    canon["value"] = canon["value"].astype(float).astype(str).where(canon["value"].notna(), "")
    canon = canon.sort_values(columns, kind="stable")
    text = canon.to_csv(index=False, lineterminator="\n")
    return hashlib.sha256(text.encode()).hexdigest()
