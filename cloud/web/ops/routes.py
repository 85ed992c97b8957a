"""The ops console's pages: the fleet overview, a device's page and a gateway's page; the alerts, remote
configuration, campaigns and service metrics pages are routers of their own (alerts.py, config.py,
campaigns.py, service_metrics.py), included here under ``/ops``.

Read in the ops user's tenant scope.  Health trends come from the fleet history (15-minute buckets,
cloud/fleet/presence.py), shown as hourly means over :data:`TREND_DAYS` days with gaps as gaps: a device's
battery and signal, a gateway's outbox backlog and heartbeats per hour.  (The history keeps no CPU or
memory figures yet, so there is no chart of them.)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from cloud.fleet import presence
from cloud.store import device_events, downlink, registry, series
from cloud.store.rollups import HOUR, floor
from cloud.web import charts, readings, session
from cloud.web.i18n import Formats
from cloud.web.ops import actions, fleet, service_metrics
from cloud.web.ops import alerts as ops_alerts
from cloud.web.ops import campaigns as ops_campaigns
from cloud.web.ops import config as ops_config
from cloud.web.session import OpsUser
from cloud.web.staff import staff_router
from cloud.web.templates import language_of, render

router = APIRouter(prefix="/ops", include_in_schema=False)
router.include_router(staff_router("ops"))
for _part in (ops_alerts.router, ops_config.router, ops_campaigns.router, service_metrics.router):
    router.include_router(_part)
TREND_DAYS = 7
MAP_SIZE = (320, 200)


@router.get("")
def overview(request: Request, user: OpsUser,
             kind: Annotated[fleet.Kind | None, Query()] = None,
             state: Annotated[fleet.State | None, Query()] = None,
             low_battery: bool = False, backlog: bool = False,
             firmware: Annotated[str | None, Query(max_length=64)] = None,
             farm: Annotated[str | None, Query(max_length=64)] = None,
             after: Annotated[str | None, Query(max_length=140, pattern=r"^(gateway|device):.+$")] = None) -> Response:
    filters = fleet.Filters(kind, state, low_battery, backlog, firmware or None, farm or None)
    key = tuple(after.split(":", 1)) if after else None
    with session.tenant_conn(request, user) as conn:
        rows, next_key = fleet.page(conn, user.tenant_id, filters, key)  # type: ignore[arg-type]
        counts = fleet.counts(conn, user.tenant_id)
        versions = fleet.firmware_versions(conn, user.tenant_id)
        farms = fleet.farm_points(conn, user.tenant_id)
    positions = charts.map_positions([(f.latitude, f.longitude) for f in farms], *MAP_SIZE)
    query = {k: v for k, v in request.query_params.items() if k not in ("after", "lang") and v}
    next_url = f"/ops?{urlencode(query | {'after': f'{next_key[0]}:{next_key[1]}'})}" if next_key else None
    return render(request, "ops/overview.html", {
        "user": user, "rows": rows, "counts": counts, "filters": filters, "versions": versions,
        "next_url": next_url, "first_url": f"/ops?{urlencode(query)}" if after else None,
        "farms": list(zip(farms, positions, strict=True)), "map_size": MAP_SIZE})


def _hourly(points: Sequence[presence.HistoryPoint], value: Callable[[presence.HistoryPoint], float | None]
            ) -> list[charts.Sample]:
    per_hour: dict[datetime, list[float]] = defaultdict(list)
    for point in points:
        v = value(point)
        if v is not None:
            per_hour[floor(point.bucket, HOUR)].append(v)
    return [charts.Sample(ts, sum(vs) / len(vs), min(vs), max(vs)) for ts, vs in sorted(per_hour.items())]


def _trend(samples: list[charts.Sample], start: datetime, end: datetime, fmt: Formats, digits: int) -> charts.Chart:
    return charts.time_chart(samples, start=start, end=end, step=HOUR, x_label=fmt.day,
                             y_label=lambda v: fmt.number(v, digits), width=560, height=180)


@router.get("/devices/{device_id}")
def device_page(request: Request, device_id: str, user: OpsUser,
                notice: Annotated[str | None, Query(max_length=40)] = None) -> Response:
    now = datetime.now(UTC)
    end = floor(now, HOUR) + HOUR
    start = end - timedelta(days=TREND_DAYS)
    fmt = Formats(language_of(request))
    with session.tenant_conn(request, user) as conn:
        try:
            device = registry.get_device(conn, user.tenant_id, device_id)
        except registry.NotFound:
            return _not_found(request, user)
        state = presence.get_state(conn, user.tenant_id, "device", device_id)
        history = presence.history(conn, user.tenant_id, "device", device_id, start, end)
        latest = series.latest(conn, device_id)
        messages = readings.last_messages(conn, device_id)
        events = device_events.list_events(conn, user.tenant_id, device_id)[-10:]
        configs = downlink.config_history(conn, user.tenant_id, device_id) if device.kind == "node" else []
        reported = downlink.reported(conn, user.tenant_id, device_id)
        alerts = [a for a in ops_alerts.find_alerts(conn, user.tenant_id, "active", subject=device_id)
                  if a.subject_kind == "device"]
        notes = ops_alerts.notes(conn, user.tenant_id, alerts)
    trends = {
        "battery": _trend(_hourly(history, lambda p: p.battery), start, end, fmt, 2),
        "rssi": _trend(_hourly(history, lambda p: p.rssi), start, end, fmt, 0),
    }
    return render(request, "ops/device.html", {
        "user": user, "device": device, "state": state, "trends": trends, "latest": latest, "messages": messages,
        "events": list(reversed(events)), "desired": configs[0] if configs else None, "reported": reported,
        "alerts": alerts, "notes": notes, "battery_unit": state.battery_unit if state else None,
        "here": request.url.path, "can_write": user.principal.can(actions.WRITE), "notice": notice})


@router.get("/gateways/{gateway_id}")
def gateway_page(request: Request, gateway_id: str, user: OpsUser,
                 notice: Annotated[str | None, Query(max_length=40)] = None) -> Response:
    now = datetime.now(UTC)
    end = floor(now, HOUR) + HOUR
    start = end - timedelta(days=TREND_DAYS)
    fmt = Formats(language_of(request))
    with session.tenant_conn(request, user) as conn:
        try:
            gateway = registry.get_gateway(conn, user.tenant_id, gateway_id)
        except registry.NotFound:
            return _not_found(request, user)
        state = presence.get_state(conn, user.tenant_id, "gateway", gateway_id)
        history = presence.history(conn, user.tenant_id, "gateway", gateway_id, start, end)
        devices, more = fleet.page(conn, user.tenant_id, fleet.Filters(kind="device", gateway=gateway_id), limit=200)
        alerts = [a for a in ops_alerts.find_alerts(conn, user.tenant_id, "active", subject=gateway_id)
                  if a.subject_kind == "gateway"]
        notes = ops_alerts.notes(conn, user.tenant_id, alerts)
    outbox = _hourly(history, lambda p: float(p.outbox_max) if p.outbox_max is not None else None)
    return render(request, "ops/gateway.html", {
        "user": user, "gateway": gateway, "state": state, "outbox": _trend(outbox, start, end, fmt, 0),
        "heartbeats": _trend(_per_hour(history), start, end, fmt, 0), "devices": devices,
        "more_devices": more is not None, "alerts": alerts, "notes": notes, "here": request.url.path,
        "can_write": user.principal.can(actions.WRITE), "notice": notice})


def _per_hour(points: Sequence[presence.HistoryPoint]) -> list[charts.Sample]:
    """Heartbeats received per hour (a gateway that is up sends them steadily: dips are trouble)."""
    per_hour: dict[datetime, int] = defaultdict(int)
    for point in points:
        per_hour[floor(point.bucket, HOUR)] += point.heartbeats
    return [charts.Sample(ts, float(n)) for ts, n in sorted(per_hour.items())]


def _not_found(request: Request, user: session.PageUser) -> Response:
    return render(request, "base/not_found.html", {"user": user, "area": "ops"}, status_code=404)
