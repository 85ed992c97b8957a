"""The rural_credit input frames of farm-seasons, read from the store through the consent gate.

For each farm: its registry row (area, crop, tenure and village from ``ft.farms`` and the season's fields),
the season window (from the fields' season dates), and — for each data scope the farmer consented to for
``credit_assessment`` — the raw readings of the window (for the trust checks), its daily rollups (for the
features, through ``ft.readings_daily_v``), the devices' maintenance events and their limits (device specs
and configured intervals).  Every read of a farmer's data passes ``cloud.consent.check.use_data``:

* ``registry`` is required: without it the assessment is refused (ConsentRequired → 403, audited).
* ``soil`` (metrics named ``soil_*``) and ``weather`` (every other metric) are read only when consented;
  a scope the farmer did not consent to is *withheld* — not read at all, its refusal on record — and the
  assessment goes on without it, as missing data (which the decision rules refer, never decline).

Choices made here (documented for the lead; the library leaves them to the caller):

* **Season window**: the fields of the farm with that season name give ``[min(season_start),
  max(season_end))``; without a season name, the latest season that has begun.  The window is cut at now.
* **seasons_observed**: ``ceil(days with daily rollups of the farm before the window's end /``
  :data:`SEASON_DAYS` ``)`` — seasons' worth of sensor data the platform holds for the farm.
* **Poll intervals** for the coverage check: a node's configured ``interval_s`` (``ft.node_configs``);
  otherwise the readings' own median spacing.  A spec's default poll interval is not used: a gateway polls
  its bus devices at what its own configuration says, which the cloud does not hold.
* **Regions** for the neighbours' weather check: the farm's village.
* **Clock check of a lone farm**: the library compares a device's daily temperature peak with the other
  devices' (three or more); one farm's station has no such cohort, and its neighbours' readings are other
  farmers' data, not to be used without their consent.  So the expected peak comes from the farm's
  longitude instead: :data:`PEAK_SOLAR_H` local solar time, ``PEAK_SOLAR_H - longitude / 15`` UTC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from cloud.auth.principal import Principal
from cloud.consent.check import use_data
from cloud.consent.errors import ConsentRequired
from cloud.credit.errors import CreditInvalid, CreditNotFound
from device_specs.registry import SpecError
from rural_credit.trust import checks
from rural_credit.trust.frames import EVENTS, READINGS, ROLLUPS

PURPOSE = "credit_assessment"
SENSOR_SCOPES = ("soil", "weather")
#: days of sensor data that make one season observed
SEASON_DAYS = 120
#: local solar hour at which air temperature peaks (mid-afternoon), for the clock check of a lone farm
PEAK_SOLAR_H = 15.0
#: raw readings before the window that the maintenance check looks at
LOOKBACK = checks.MAINTENANCE_TOLERANCE.to_pytimedelta()


@dataclass(frozen=True)
class Window:
    season: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class FarmData:
    """Frames of one or more farm-seasons (shapes: ``rural_credit.trust.frames``)."""

    farms: dict[str, dict[str, Any]]  # farm id → registry row (FARM_FIELDS, farmer_id, village)
    windows: dict[str, Window]
    readings: pd.DataFrame
    rollups: pd.DataFrame
    events: pd.DataFrame
    limits: pd.DataFrame
    scopes: dict[str, list[str]] = field(default_factory=dict)  # farm id → sensor scopes read
    withheld: dict[str, list[str]] = field(default_factory=dict)  # farm id → sensor scopes not consented

    def season(self, farm_id: str) -> dict[str, Any]:
        w = self.windows[farm_id]
        return {"season_id": w.season, "start": pd.Timestamp(w.start), "end": pd.Timestamp(w.end)}


def expected_peak_h(longitudes: list[float]) -> float | None:
    """The UTC hour of the daily temperature peak at these longitudes (their circular mean), None without any."""
    if not longitudes:
        return None
    angles = np.radians([(PEAK_SOLAR_H - lon / 15.0) * 15.0 for lon in longitudes])
    return float(np.degrees(np.arctan2(np.sin(angles).mean(), np.cos(angles).mean())) / 15.0 % 24.0)


def metric_scope(metric: str) -> str:
    return "soil" if metric.startswith("soil_") else "weather"


# -- the registry row and the season ----------------------------------------------------------------------------

_FARM = """
SELECT f.id, f.farmer_id, f.village, f.tenure, f.area_ha, f.crop, f.longitude,
       (SELECT sum(area_ha) FROM ft.fields x WHERE x.tenant_id = f.tenant_id AND x.farm_id = f.id) AS fields_area
FROM ft.farms f WHERE f.tenant_id = %s AND f.id = %s
"""


def farm_owner(conn: psycopg.Connection, tenant: str, farm_id: str) -> tuple[str, str | None]:
    """The farm's farmer and village (no farm data: what the consent check itself needs to know)."""
    row = conn.execute("SELECT farmer_id, village FROM ft.farms WHERE tenant_id = %s AND id = %s",
                       (tenant, farm_id)).fetchone()
    if row is None:
        raise CreditNotFound(f"farm {farm_id!r} not found in tenant {tenant!r}")
    if row[0] is None:
        raise CreditInvalid(f"farm {farm_id!r} has no farmer on record: a loan application needs the farmer")
    return row[0], row[1]


def season_window(conn: psycopg.Connection, tenant: str, farm_id: str, season: str | None,
                  now: datetime | None = None) -> Window:
    """The farm-season window (see the module docstring); CreditInvalid naming what is missing."""
    now = now or datetime.now(UTC)
    rows = conn.execute(
        "SELECT season, min(season_start), max(season_end) FROM ft.fields"
        " WHERE tenant_id = %s AND farm_id = %s AND season_start IS NOT NULL AND (%s::text IS NULL OR season = %s)"
        " GROUP BY season ORDER BY min(season_start) DESC", (tenant, farm_id, season, season)).fetchall()
    begun = [r for r in rows if _utc(r[1]) <= now]
    if not begun:
        named = f"season {season!r}" if season else "a season"
        raise CreditInvalid(f"farm {farm_id!r} has no field with {named} that has begun (season name and dates are "
                            "set on the farm's fields)")
    name, start, end = begun[0]
    return Window(name, _utc(start), min(_utc(end), now))


def _utc(day: Any) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _registry_rows(conn: psycopg.Connection, tenant: str, windows: dict[str, Window],
                   observed_days: dict[str, int]) -> dict[str, dict[str, Any]]:
    out = {}
    for farm_id, window in windows.items():
        row = conn.execute(_FARM, (tenant, farm_id)).fetchone()
        if row is None:
            raise CreditNotFound(f"farm {farm_id!r} not found in tenant {tenant!r}")
        fid, farmer, village, tenure, area, crop, longitude, fields_area = row
        season_crop = conn.execute(
            "SELECT crop FROM ft.fields WHERE tenant_id = %s AND farm_id = %s AND season = %s AND crop IS NOT NULL"
            " ORDER BY area_ha DESC NULLS LAST, id LIMIT 1", (tenant, farm_id, window.season)).fetchone()
        out[fid] = {"farm_id": fid, "farmer_id": farmer, "village": village, "tenure": tenure, "longitude": longitude,
                    "area_ha": area if area is not None else fields_area,
                    "crop": season_crop[0] if season_crop else crop,
                    "seasons_observed": math.ceil(observed_days.get(fid, 0) / SEASON_DAYS)}
    return out


# -- the farm data, through the consent gate ------------------------------------------------------------------


def load(conn: psycopg.Connection, principal: Principal, tenant: str, windows: dict[str, Window], *,
         target_type: str, target_id: str, farmers: dict[str, str] | None = None,
         refused: dict[str, str] | None = None) -> FarmData:
    """The frames of ``windows``' farm-seasons.  Consent per farmer: ``registry`` required — ConsentRequired
    propagates, or, given a ``refused`` dict, the farm is left out and its refusal reason put there — and the
    sensor scopes read when consented, else withheld.  ``farmers``: farm → farmer when known."""
    farmers = dict(farmers or {})
    allowed: dict[str, list[str]] = {}
    withheld: dict[str, list[str]] = {}
    for farm_id in list(windows):
        farmer = farmers.get(farm_id) or farm_owner(conn, tenant, farm_id)[0]
        try:
            use_data(conn, principal, farmer, PURPOSE, "registry", target_type, target_id, tenant_id=tenant)
        except ConsentRequired as exc:
            if refused is None:
                raise
            refused[farm_id] = f"no consent: {exc.reason}"
            continue
        allowed[farm_id], withheld[farm_id] = [], []
        for scope in SENSOR_SCOPES:
            try:
                use_data(conn, principal, farmer, PURPOSE, scope, target_type, target_id, tenant_id=tenant)
                allowed[farm_id].append(scope)
            except ConsentRequired:  # its refusal is on record; the assessment goes on without this data
                withheld[farm_id].append(scope)
    windows = {f: w for f, w in windows.items() if f in allowed}
    params = _window_params(tenant, windows, allowed)
    readings = _frame(conn, _READINGS, params, [*READINGS, "epoch"])
    rollups = _frame(conn, _ROLLUPS, params, list(ROLLUPS))
    observed: dict[str, int] = dict(conn.execute(_OBSERVED, params).fetchall())  # type: ignore[arg-type]
    for column in ("ts",):
        readings[column] = pd.to_datetime(readings[column], utc=True)
    rollups["bucket"] = pd.to_datetime(rollups["bucket"], utc=True)
    for column in ("value", "sum", "min", "max"):
        frame = readings if column == "value" else rollups
        frame[column] = frame[column].astype(float)
    events = _frame(conn, _EVENTS, params, list(EVENTS))
    events["at"] = pd.to_datetime(events["at"], utc=True)
    return FarmData(_registry_rows(conn, tenant, windows, observed), windows, readings, rollups, events,
                    _limits(conn, params), allowed, withheld)


def _window_params(tenant: str, windows: dict[str, Window], allowed: dict[str, list[str]]) -> dict[str, Any]:
    farms = list(windows)
    return {"tenant": tenant, "farms": farms, "lo": [windows[f].start for f in farms],
            "hi": [windows[f].end for f in farms], "soil": ["soil" in allowed[f] for f in farms],
            "weather": ["weather" in allowed[f] for f in farms], "lookback": LOOKBACK}


_WINDOWS = """
WITH w AS (SELECT * FROM unnest(%(farms)s::text[], %(lo)s::timestamptz[], %(hi)s::timestamptz[],
                                %(soil)s::boolean[], %(weather)s::boolean[]) AS w (farm_id, lo, hi, soil, weather))
"""
_CONSENTED = "(CASE WHEN m.name LIKE 'soil\\_%%' THEN w.soil ELSE w.weather END)"
_READINGS = _WINDOWS + f"""
SELECT w.farm_id, r.device_id, m.name AS metric, r.ts, r.value, r.quality, r.trust AS origin, r.epoch
FROM w JOIN ft.devices d ON d.tenant_id = %(tenant)s AND d.farm_id = w.farm_id
JOIN ft.readings r ON r.device_id = d.id AND r.ts >= w.lo - %(lookback)s AND r.ts < w.hi
JOIN ft.metrics m ON m.id = r.metric_id
WHERE {_CONSENTED}
"""
_ROLLUPS = _WINDOWS + f"""
SELECT w.farm_id, r.device_id, m.name AS metric, r.bucket, r.n, r.sum, r.min, r.max
FROM w JOIN ft.devices d ON d.tenant_id = %(tenant)s AND d.farm_id = w.farm_id
JOIN ft.readings_daily_v r ON r.device_id = d.id AND r.bucket >= w.lo AND r.bucket < w.hi
JOIN ft.metrics m ON m.id = r.metric_id
WHERE {_CONSENTED}
"""
_OBSERVED = _WINDOWS + f"""
SELECT w.farm_id, count(DISTINCT r.bucket)::int
FROM w JOIN ft.devices d ON d.tenant_id = %(tenant)s AND d.farm_id = w.farm_id
JOIN ft.readings_daily_v r ON r.device_id = d.id AND r.bucket < w.hi
JOIN ft.metrics m ON m.id = r.metric_id
WHERE {_CONSENTED}
GROUP BY w.farm_id
"""
_EVENTS = _WINDOWS + """
SELECT e.device_id, e.kind, e.at
FROM w JOIN ft.devices d ON d.tenant_id = %(tenant)s AND d.farm_id = w.farm_id
JOIN ft.device_events e ON e.tenant_id = d.tenant_id AND e.device_id = d.id AND e.at < w.hi
"""
_DEVICES = _WINDOWS + """
SELECT d.id, d.spec_key,
       (SELECT (c.config ->> 'interval_s')::double precision FROM ft.node_configs c
        WHERE c.tenant_id = d.tenant_id AND c.device_id = d.id ORDER BY c.version DESC LIMIT 1) AS interval_s
FROM w JOIN ft.devices d ON d.tenant_id = %(tenant)s AND d.farm_id = w.farm_id
"""


def _frame(conn: psycopg.Connection, query: str, params: dict[str, Any], columns: list[str]) -> pd.DataFrame:
    with conn.cursor() as cur:
        rows = cur.execute(query, params).fetchall()  # type: ignore[arg-type]
    return pd.DataFrame(rows, columns=columns)


def _limits(conn: psycopg.Connection, params: dict[str, Any]) -> pd.DataFrame:
    """Per (device, metric): the spec's valid range and stuck-after, the configured poll interval (NaN: none)."""
    specs, intervals = {}, {}
    for device_id, spec_key, interval_s in conn.execute(_DEVICES, params).fetchall():  # type: ignore[arg-type]
        if spec_key:
            specs[device_id] = spec_key
        intervals[device_id] = np.nan if interval_s is None else float(interval_s)
    frames = []
    for device_id, spec_key in specs.items():
        try:
            frames.append(checks.limits_from_specs({device_id: spec_key}))
        except SpecError:  # a spec this installation does not have: the checks run without its limits
            continue
    if not frames:
        return pd.DataFrame(columns=list(checks.LIMIT_COLUMNS))
    limits = pd.concat(frames, ignore_index=True)
    limits["interval_s"] = limits["device_id"].map(intervals).astype(float)
    return limits
