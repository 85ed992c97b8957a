"""What "My farm" shows a farmer: their farms, fields and sensors in plain words, two charts, open alerts.

Everything is read as the farmer, in their tenant's scope, narrowed to their own farms (the registry's
``farmer_id`` filters); a farmer reading their own data is not a data use that needs consent.

A field's soil state comes from the hourly means of the soil probes on the field (each probe's hourly
rollup, averaged per hour): the condition of the last hour with data and since when it has held
(:mod:`cloud.web.terminal.conditions`).  The charts show the farm's soil moisture and temperature over
:data:`CHART_DAYS` days in :data:`CHART_STEP` buckets, gaps as gaps and buckets with flagged readings
marked.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg

from cloud.fleet import alerts as fleet_alerts
from cloud.fleet import presence
from cloud.store import fields as store_fields
from cloud.store import registry, series
from cloud.store.rollups import HOUR, floor
from cloud.web import charts, readings
from cloud.web.i18n import Formats
from cloud.web.terminal.conditions import BANDS, SOIL_MOISTURE, Band, State, battery_low, current_state

CHART_DAYS = 14
CHART_STEP = timedelta(hours=3)


@dataclass(frozen=True)
class FieldView:
    id: str | None  # None: sensors on the farm but on no field
    name: str
    crop: str | None
    area_ha: float | None
    states: dict[str, State]  # metric -> state


@dataclass(frozen=True)
class SensorView:
    id: str
    field_name: str | None
    online: bool | None  # None: no health report yet
    last_seen_at: datetime | None
    battery_low: bool
    latest: list[series.Latest]


@dataclass(frozen=True)
class FarmView:
    farm: registry.Farm
    fields: list[FieldView]
    sensors: list[SensorView]
    charts: dict[str, charts.Chart]  # metric -> chart
    alerts: list[fleet_alerts.Alert] = field(default_factory=list)


def my_farms(conn: psycopg.Connection, tenant: str, farmer_id: str, now: datetime, fmt: Formats) -> list[FarmView]:
    return [farm_view(conn, tenant, farm, farmer_id, now, fmt)
            for farm in registry.list_farms(conn, tenant, farmer_id=farmer_id)]


def farm_view(conn: psycopg.Connection, tenant: str, farm: registry.Farm, farmer_id: str, now: datetime,
              fmt: Formats) -> FarmView:
    devices = registry.list_devices(conn, tenant, farm.id, farmer_id=farmer_id)
    farm_fields = store_fields.list_fields(conn, tenant, farm_id=farm.id, farmer_id=farmer_id)
    names = {f.id: f.name for f in farm_fields}
    start = floor(now, HOUR) - timedelta(days=CHART_DAYS)
    hourly = _hourly_means(conn, devices, start, now)
    views = []
    for f in farm_fields:
        on_field = [d.id for d in devices if d.field_id == f.id]
        views.append(FieldView(f.id, f.name, f.crop, f.area_ha, _states(hourly, on_field, now)))
    loose = [d.id for d in devices if d.field_id is None]
    loose_states = _states(hourly, loose, now)
    if any(s.condition != "no_data" for s in loose_states.values()):
        views.append(FieldView(None, farm.name, farm.crop, farm.area_ha, loose_states))
    sensors = []
    for d in devices:
        state = presence.get_state(conn, tenant, "device", d.id)
        sensors.append(SensorView(
            d.id, names.get(d.field_id or ""), state.online if state else None,
            (state.last_seen_at if state else None) or d.last_seen_at,
            battery_low(state.battery, state.battery_unit) if state else False, series.latest(conn, d.id)))
    subjects = {("device", d.id) for d in devices} | {("gateway", d.gateway_id) for d in devices if d.gateway_id}
    open_alerts = [a for a in fleet_alerts.list_alerts(conn, tenant, active_only=True)
                   if (a.subject_kind, a.subject_id) in subjects]
    farm_charts = {band.metric: _chart(conn, farm.id, [d.id for d in devices], band, now, fmt) for band in BANDS}
    return FarmView(farm, views, sensors, farm_charts, open_alerts)


def _hourly_means(conn: psycopg.Connection, devices: list[registry.Device], start: datetime, now: datetime
                  ) -> dict[str, dict[str, list[tuple[datetime, float | None]]]]:
    """metric -> device -> hourly (bucket, mean) over the chart's days, for the soil metrics."""
    out: dict[str, dict[str, list[tuple[datetime, float | None]]]] = defaultdict(dict)
    for band in BANDS:
        for device in devices:
            try:
                points = series.series(conn, device.id, band.metric, start, now, HOUR)
            except series.NotFound:  # no device anywhere has sent this metric yet
                break
            if any(p.n for p in points):
                out[band.metric][device.id] = [(p.ts, p.value) for p in points]
    return out


def _states(hourly: dict[str, dict[str, list[tuple[datetime, float | None]]]], device_ids: list[str],
            now: datetime) -> dict[str, State]:
    """Each soil metric's state over the devices given (the mean of their hourly means, per hour)."""
    out = {}
    for band in BANDS:
        per_hour: dict[datetime, list[float]] = defaultdict(list)
        for device_id in device_ids:
            for ts, value in hourly.get(band.metric, {}).get(device_id, []):
                if value is not None:
                    per_hour[ts].append(value)
        points = [(ts, sum(v) / len(v)) for ts, v in sorted(per_hour.items())]
        # an hourly bucket's time is its start; it speaks for the hour up to its end
        out[band.metric] = current_state(band, [(ts + HOUR, v) for ts, v in points], now)
    return out


def _chart(conn: psycopg.Connection, farm_id: str, device_ids: list[str], band: Band, now: datetime,
           fmt: Formats) -> charts.Chart:
    end = floor(now, CHART_STEP) + CHART_STEP
    start = end - timedelta(days=CHART_DAYS)
    try:
        points = series.farm_series(conn, farm_id, band.metric, start, end, CHART_STEP)
    except series.NotFound:
        points = []
    flagged = readings.flagged_buckets(conn, device_ids, band.metric, start, end, CHART_STEP)
    samples = [charts.Sample(p.ts, p.value, p.min, p.max, flagged=bool(flagged.get(p.ts))) for p in points]
    digits = 0 if band is SOIL_MOISTURE else 1
    return charts.time_chart(samples, start=start, end=end, step=CHART_STEP, x_label=fmt.day,
                             y_label=lambda v: fmt.number(v, digits))
