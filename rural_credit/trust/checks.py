"""Per-reading trust checks: each a function over the readings of a farm-season window.

Every check takes the frame :func:`prepare` returns (normalised as ``frames.readings_frame`` says,
sorted by device, metric and time, index 0..n-1) and returns a boolean Series on that index: True
where the reading fails the check.  Nothing is dropped or changed; :mod:`rural_credit.trust.score`
turns the flags into parts of a farm's trust.  All work is groupby/numpy over the whole frame.

The checks here look at one device at a time (range, rate of change, flat line, clock, maintenance
history); the checks that compare sensors or farms live in ``cross_sensor`` and ``duplicates``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from contract.telemetry import Q_CLOCK_UNSYNCED, Q_OUT_OF_RANGE, Q_STALE
from rural_credit.trust.frames import FrameError, events_frame, readings_frame

#: the largest plausible change per hour of a metric; faster changes are glitches or spliced data.
#: A shower front cools the air by a few degrees within minutes (hardware.signals models 2.5 °C at once);
#: Soil moisture may rise ~15 %-points in the 40 minutes of an irrigation run; rain counters take
#: a 45 mm cloudburst in half an hour.
MAX_RATE_PER_H: dict[str, float] = {
    "air_temperature": 20.0, "soil_temperature": 6.0, "air_humidity": 60.0, "relative_humidity": 60.0,
    "soil_moisture": 40.0, "air_pressure": 10.0, "rainfall": 200.0, "rainfall_total": 200.0,
}
#: polls in a row with one value that mean a frozen sensor, for metrics whose spec says nothing;
#: counters (rain totals) are absent on purpose: they stand still for days without rain
STUCK_AFTER: dict[str, int] = {"air_temperature": 60, "soil_temperature": 18, "soil_moisture": 36,
                               "air_humidity": 60, "relative_humidity": 60, "air_pressure": 120}
#: metrics with a daily cycle whose phase tells a shifted clock
DIURNAL_METRICS = ("air_temperature",)
#: hours of difference between a device's daily-cycle peak and its cohort's that flag its clock
CLOCK_PHASE_TOLERANCE_H = 2.5
#: how far a maintenance event may lie from the change it explains
MAINTENANCE_TOLERANCE = pd.Timedelta(days=2)
#: a device whose first reading comes this long after the window opened is new and needs an event
NEW_DEVICE_GRACE = pd.Timedelta(days=2)

LIMIT_COLUMNS = ("device_id", "metric", "low", "high", "stuck_after", "interval_s")


@dataclass(frozen=True)
class Window:
    """The farm-season window the readings were taken for: ``start <= ts < end`` (UTC)."""

    start: pd.Timestamp
    end: pd.Timestamp

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = pd.Timestamp(getattr(self, name))
            if value.tzinfo is None:
                raise FrameError(f"window {name} has no time zone; give UTC times")
            object.__setattr__(self, name, value.tz_convert("UTC"))
        if self.end <= self.start:
            raise FrameError(f"window end {self.end} is not after its start {self.start}")


def prepare(readings: pd.DataFrame) -> pd.DataFrame:
    """The readings frame checked, normalised and sorted as every check expects it."""
    out = readings_frame(readings)
    return out.sort_values(["device_id", "metric", "ts"], kind="stable").reset_index(drop=True)


def limits_from_specs(device_specs: Mapping[str, str], interval_s: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Per (device, metric) limits from each device's spec (``{device_id: "model@version"}``).

    Columns: device_id, metric, low, high (the spec's valid range, NaN where it has none),
    stuck_after (the spec's, else :data:`STUCK_AFTER`), interval_s (the device's configured poll
    interval from ``interval_s`` — a gateway polls at what its config says — else the spec's).
    """
    from device_specs.registry import get_spec  # device_specs imports nothing of ours

    rows = []
    for device_id, spec_key in device_specs.items():
        for p in get_spec(spec_key).points:
            low, high = p.range if p.range is not None else (np.nan, np.nan)
            stuck = p.stuck_after if p.stuck_after is not None else STUCK_AFTER.get(p.metric, np.nan)
            poll = (interval_s or {}).get(device_id, p.poll_interval_s)
            rows.append((device_id, p.metric, low, high, stuck, poll))
    return pd.DataFrame(rows, columns=list(LIMIT_COLUMNS))


def limits_of(r: pd.DataFrame, limits: pd.DataFrame | None) -> pd.DataFrame:
    """The limits row of each reading (NaN where none is known), on the readings' index."""
    if limits is None:
        limits = pd.DataFrame(columns=list(LIMIT_COLUMNS))
    missing = [c for c in ("device_id", "metric") if c not in limits.columns]
    if missing:
        raise FrameError(f"limits lacks column(s) {', '.join(missing)}")
    limits = limits.reindex(columns=list(LIMIT_COLUMNS)).drop_duplicates(["device_id", "metric"])
    joined = r[["device_id", "metric"]].merge(limits, on=["device_id", "metric"], how="left")
    joined.index = r.index
    return joined


def series_starts(r: pd.DataFrame) -> np.ndarray:
    """True at the first reading of each (device, metric) series."""
    dev, met = r["device_id"].to_numpy(), r["metric"].to_numpy()
    first = np.ones(len(r), dtype=bool)
    first[1:] = (dev[1:] != dev[:-1]) | (met[1:] != met[:-1])
    return first


def out_of_range(r: pd.DataFrame, limits: pd.DataFrame | None = None) -> pd.Series:
    """Outside the device spec's physical range, or flagged out of range where it was read."""
    lim = limits_of(r, limits)
    value = r["value"]
    outside = (value < lim["low"].astype(float)) | (value > lim["high"].astype(float))
    return (outside | ((r["quality"] & Q_OUT_OF_RANGE) != 0)).rename("out_of_range")


def rate_of_change(r: pd.DataFrame, max_rate_per_h: Mapping[str, float] | None = None) -> pd.Series:
    """A change from the previous reading of the series faster than :data:`MAX_RATE_PER_H` allows.

    The reading a jump lands on is flagged: a lone spike flags itself and the reading after it (the
    jump back), a step flags its first reading.
    """
    rates = MAX_RATE_PER_H if max_rate_per_h is None else max_rate_per_h
    limit = r["metric"].map(rates).astype(float)
    dv = r["value"].diff().abs().to_numpy()
    dt_h = r["ts"].diff().dt.total_seconds().to_numpy() / 3600.0
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = dv / np.maximum(dt_h, 1 / 60.0)  # readings closer than a minute count as a minute apart
    jump = (rate > limit.to_numpy()) & ~series_starts(r)
    return pd.Series(jump, index=r.index, name="rate_of_change")


def flat_line(r: pd.DataFrame, limits: pd.DataFrame | None = None) -> pd.Series:
    """Runs of one value at least ``stuck_after`` readings long (a frozen sensor), or flagged stale."""
    lim = limits_of(r, limits)
    stuck_after = lim["stuck_after"].astype(float).fillna(r["metric"].map(STUCK_AFTER).astype(float))
    value = r["value"].to_numpy()
    changed = np.ones(len(r), dtype=bool)
    changed[1:] = value[1:] != value[:-1]
    run = np.cumsum(changed | series_starts(r))
    run_length = pd.Series(run).map(pd.Series(run).value_counts()).to_numpy()
    frozen = run_length >= stuck_after.to_numpy()  # NaN (no rule) compares False
    return pd.Series(frozen | ((r["quality"].to_numpy() & Q_STALE) != 0), index=r.index, name="flat_line")


def clock(r: pd.DataFrame, window: Window | None = None, expected_peak_h: float | None = None) -> pd.Series:
    """Readings stamped by an unsynchronised clock, outside the window, or by a device whose clock is off.

    A clock that is off by hours shows in the daily cycle: air temperature peaks mid-afternoon, so a
    device whose mean daily profile peaks more than :data:`CLOCK_PHASE_TOLERANCE_H` from the cohort's
    (the other devices of that metric in the frame; ``expected_peak_h`` UTC where there are fewer
    than three) has all its readings flagged.
    """
    bad = (r["quality"] & Q_CLOCK_UNSYNCED) != 0
    if window is not None:
        bad |= (r["ts"] < window.start) | (r["ts"] >= window.end)
    diurnal = r[r["metric"].isin(DIURNAL_METRICS) & r["value"].notna()]
    if not diurnal.empty:
        angle = 2 * np.pi * (diurnal["ts"].dt.hour + diurnal["ts"].dt.minute / 60.0) / 24.0
        v = diurnal["value"] - diurnal.groupby(["device_id", "metric"])["value"].transform("mean")
        parts = pd.DataFrame({"device_id": diurnal["device_id"], "metric": diurnal["metric"],
                              "c": v * np.cos(angle), "s": v * np.sin(angle)})
        sums = parts.groupby(["device_id", "metric"])[["c", "s"]].sum()
        peak = (np.degrees(np.arctan2(sums["s"], sums["c"])) / 15.0) % 24.0
        shifted: set[str] = set()
        for _, cohort in peak.groupby(level="metric"):
            if len(cohort) >= 3:
                ref = _circular_median_h(cohort.to_numpy())
            elif expected_peak_h is not None:
                ref = expected_peak_h
            else:
                continue
            off = np.abs((cohort.to_numpy() - ref + 12.0) % 24.0 - 12.0)
            shifted |= set(cohort.index.get_level_values("device_id")[off > CLOCK_PHASE_TOLERANCE_H])
        bad |= r["device_id"].isin(shifted)
    return bad.rename("clock")


def _circular_median_h(hours: np.ndarray) -> float:
    """The hour of day closest (on the clock face) to the most others: a median robust to a shifted few."""
    diff = np.abs((hours[:, None] - hours[None, :] + 12.0) % 24.0 - 12.0)
    return float(hours[np.argmin(diff.sum(axis=1))])


REKEY_KINDS = ("rekeyed", "replaced", "provisioned")
MOVE_KINDS = ("moved", "replaced")
NEW_KINDS = ("provisioned", "replaced")


def maintenance(r: pd.DataFrame, events: pd.DataFrame | None = None, window: Window | None = None) -> pd.Series:
    """A device re-keyed (its key epoch changed), moved to another farm, or new in the window
    without a registered maintenance event within :data:`MAINTENANCE_TOLERANCE` of the change.

    The readings from an unexplained change onwards (to the next change) are flagged; a technician's
    recorded replacement, re-key or move explains its change and flags nothing.
    """
    ev = events_frame(events)
    by_time = r.sort_values(["device_id", "ts"], kind="stable")
    dev = by_time["device_id"].to_numpy()
    first = np.ones(len(by_time), dtype=bool)
    first[1:] = dev[1:] != dev[:-1]
    farm = by_time["farm_id"].to_numpy()
    moved = np.zeros(len(by_time), dtype=bool)
    moved[1:] = (farm[1:] != farm[:-1]) & ~first[1:]
    rekeyed = np.zeros(len(by_time), dtype=bool)
    if "epoch" in by_time.columns:
        epoch = by_time["epoch"].to_numpy()
        rekeyed[1:] = (epoch[1:] != epoch[:-1]) & ~first[1:]
    new = first.copy()
    if window is None:
        new[:] = False
    else:
        new &= (by_time["ts"] > window.start + NEW_DEVICE_GRACE).to_numpy()
    changes = pd.DataFrame({"device_id": dev, "at": by_time["ts"], "rekey": rekeyed, "move": moved, "new": new},
                           index=by_time.index)
    changes = changes[changes["rekey"] | changes["move"] | changes["new"]]
    explained = pd.Series(True, index=changes.index)
    for column, kinds in (("rekey", REKEY_KINDS), ("move", MOVE_KINDS), ("new", NEW_KINDS)):
        need = changes[changes[column]]
        if need.empty:
            continue
        near = _nearest_event(need, ev[ev["kind"].isin(kinds)])
        explained.loc[need.index] &= near.to_numpy()
    # every reading from a change to the next one belongs to that change's segment
    segment_start = pd.Series(first, index=by_time.index)
    segment_start.loc[changes.index] = True
    segment = segment_start.cumsum()
    unexplained_segments = segment.loc[explained.index[~explained.to_numpy()]].unique()
    flagged = segment.isin(unexplained_segments)
    return flagged.reindex(r.index).rename("maintenance")


def _nearest_event(changes: pd.DataFrame, events: pd.DataFrame) -> pd.Series:
    """True for each change with an event of its device within the tolerance."""
    if events.empty:
        return pd.Series(False, index=changes.index)
    left = changes[["device_id", "at"]].reset_index().sort_values("at")
    right = events[["device_id", "at"]].rename(columns={"at": "event_at"}).sort_values("event_at")
    matched = pd.merge_asof(left, right, left_on="at", right_on="event_at", by="device_id",
                            direction="nearest", tolerance=MAINTENANCE_TOLERANCE)
    return matched.set_index("index")["event_at"].notna().reindex(changes.index)
