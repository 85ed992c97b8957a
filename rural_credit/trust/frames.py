"""The tables rural_credit reads, by name and column: one place that says what the cloud must hand over.

rural_credit never queries the store.  The cloud reads its tables and hands over plain pandas frames
of exactly these shapes; every public function checks its frame with :func:`require` first, so a
wrong column is reported by name instead of surfacing as a KeyError deep in a groupby.

``readings`` (trust checks, one farm-season window, raw rows of ``ft.readings``):
    farm_id str, device_id str, metric str, ts datetime64[UTC], value float (NaN: no number),
    quality int (contract.telemetry ``Q_*`` bit mask), origin (``"node"`` signed by the node,
    ``"gateway"`` attested by the gateway, ``"manual"`` entered by hand; the store's ``trust``
    column 1/2 is accepted and mapped), and optionally epoch int (the key epoch, for re-key checks).
``events`` (maintenance history, ``ft.device_events``):
    device_id str, kind str (provisioned, replaced, rekeyed, moved), at datetime64[UTC].
``rollups`` (features; ``ft.readings_daily`` or ``ft.readings_hourly`` rows joined to their metric
    name and the device's farm): farm_id str, device_id str, metric str, bucket datetime64[UTC],
    n int, sum float, min float, max float (the bucket's mean is sum / n).
``seasons`` (which window is a farm-season): farm_id, season_id, start, end (UTC, end exclusive), crop.
``registry`` (one row per farm): farm_id, area_ha, crop, tenure, seasons_observed.
``applications`` (one row per farm-season applied for): farm_id, season_id, amount, term_months,
    purpose, prior_loans, prior_repaid (loans repaid on time among ``prior_loans``).
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

READINGS = ("farm_id", "device_id", "metric", "ts", "value", "quality", "origin")
EVENTS = ("device_id", "kind", "at")
ROLLUPS = ("farm_id", "device_id", "metric", "bucket", "n", "sum", "min", "max")
SEASONS = ("farm_id", "season_id", "start", "end", "crop")
REGISTRY = ("farm_id", "area_ha", "crop", "tenure", "seasons_observed")
APPLICATIONS = ("farm_id", "season_id", "amount", "term_months", "purpose", "prior_loans", "prior_repaid")

#: where a reading's trust comes from, by the names used in frames
ORIGINS = ("node", "gateway", "manual")
#: the store's ``ft.readings.trust`` codes
STORE_ORIGIN_CODES = {1: "node", 2: "gateway", 3: "manual"}


class FrameError(ValueError):
    """A frame handed to rural_credit does not have the shape documented in this module."""


def require(frame: pd.DataFrame, columns: Iterable[str], name: str) -> None:
    """Raise FrameError naming the frame and every missing column."""
    if not isinstance(frame, pd.DataFrame):
        raise FrameError(f"{name} must be a pandas DataFrame; got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise FrameError(f"{name} lacks column(s) {', '.join(missing)}; it has {', '.join(map(str, frame.columns))}")


def utc(column: pd.Series, name: str) -> pd.Series:
    """A time column as UTC datetimes; naive times are refused (their zone is a guess)."""
    if not pd.api.types.is_datetime64_any_dtype(column):
        column = pd.to_datetime(column, utc=False)
    if getattr(column.dt, "tz", None) is None:
        raise FrameError(f"{name} has times without a time zone; give UTC times")
    return column.dt.tz_convert("UTC")


def readings_frame(readings: pd.DataFrame) -> pd.DataFrame:
    """The readings frame checked and normalised: UTC ``ts``, float ``value``, int ``quality``, origin names."""
    require(readings, READINGS, "readings")
    out = readings.copy()
    out["ts"] = utc(out["ts"], "readings.ts")
    out["value"] = pd.to_numeric(out["value"], errors="coerce").astype(float)
    out["quality"] = out["quality"].fillna(0).astype("int64")
    origin = out["origin"]
    if pd.api.types.is_numeric_dtype(origin):
        origin = origin.map(STORE_ORIGIN_CODES)
    bad = ~origin.isin(ORIGINS)
    if bad.any():
        shown = sorted(map(str, readings["origin"][bad].unique()))[:5]
        raise FrameError(f"readings.origin must be one of {', '.join(ORIGINS)} (or store codes 1, 2, 3); got {shown}")
    out["origin"] = origin.astype(str)
    return out


def events_frame(events: pd.DataFrame | None) -> pd.DataFrame:
    """The maintenance events frame checked (an absent history is an empty one)."""
    if events is None:
        return pd.DataFrame({"device_id": pd.Series(dtype=str), "kind": pd.Series(dtype=str),
                             "at": pd.Series(dtype="datetime64[ns, UTC]")})
    require(events, EVENTS, "events")
    out = events.copy()
    out["at"] = utc(out["at"], "events.at")
    return out
