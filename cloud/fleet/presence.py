"""Who is online, and how each gateway and device is doing: the SQL behind ``ft.fleet_state`` and its history.

A gateway's presence comes from three messages (cloud.fleet.consumer verifies them first): its birth
(retained on ``state`` when it connects), its last will (the broker publishes it on ``state`` when the
connection is lost) and its heartbeats (``health``, every few seconds to minutes).  A gateway that
neither sends a heartbeat nor says goodbye is declared offline by :func:`mark_timeouts` once its last
sign of life is older than the heartbeat timeout.  A device's state is what its gateway's heartbeat
says of it (last good frame, battery, signal, firmware, errors, refusals); a device whose last good
frame is older than the device timeout is offline.

Times: births and wills count in the order the cloud receives them (a will's own time is that of the
connection it belongs to, earlier than the birth that followed it, so the bodies' times cannot order
them).  A gateway's ``last_seen_at`` is when the cloud received a heartbeat (the gateway's clock may be
off), or a birth's own time (never later than now): a stale retained birth replayed when the fleet
service subscribes thus leaves an old ``last_seen_at``, and :func:`mark_timeouts` declares that
gateway offline at its next cycle unless heartbeats follow.

History is downsampled to :data:`HISTORY_BUCKET` buckets: one row per subject and bucket, the last
values of the bucket and its largest outbox depth, so trends cost a few rows a day per device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from cloud.store.db import ROW_SCHEMA
from cloud.store.rollups import HOUR, floor
from contract import models

SubjectKind = Literal["gateway", "device"]
HISTORY_BUCKET = timedelta(minutes=15)


@dataclass(frozen=True)
class SubjectState:
    """The latest known state of one gateway or device."""

    __pydantic_config__ = ROW_SCHEMA
    subject_kind: str
    """gateway or device"""
    subject_id: str
    gateway_id: str | None
    """a device's gateway"""
    online: bool
    presence: str
    """what decided ``online`` last: birth, will, heartbeat, timeout or unknown"""
    presence_at: datetime | None
    last_seen_at: datetime | None
    software: str | None
    """a gateway's agent version, a device's firmware"""
    health_state: str | None
    battery: float | None
    battery_unit: str | None
    rssi: float | None
    outbox_depth: int | None
    outbox_oldest_s: float | None
    outbox_dropped: int | None
    disk_free_mb: float | None
    errors: int | None
    refused: dict[str, int]
    updated_at: datetime


@dataclass(frozen=True)
class HistoryPoint:
    """One downsampled bucket of a subject's history."""

    __pydantic_config__ = ROW_SCHEMA
    bucket: datetime
    online: bool
    battery: float | None
    rssi: float | None
    outbox_depth: int | None
    outbox_max: int | None
    heartbeats: int


def _ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def history_bucket(at: datetime) -> datetime:
    return floor(at, HISTORY_BUCKET)


# -- writing ----------------------------------------------------------------------------------------


def record_presence(conn: psycopg.Connection, tenant: str, gateway_id: str, presence: models.Presence,
                    now: datetime | None = None) -> None:
    """A gateway's birth or will, in the order the cloud receives them."""
    now = now or datetime.now(UTC)
    online = presence.k == "birth"
    conn.execute(
        "INSERT INTO ft.fleet_state AS s (tenant_id, subject_kind, subject_id, online, presence, presence_at,"
        " last_seen_at, software) VALUES (%(t)s, 'gateway', %(id)s, %(online)s, %(k)s, %(now)s,"
        " CASE WHEN %(online)s THEN %(at)s END, nullif(%(sw)s, ''))"
        " ON CONFLICT (subject_kind, subject_id) DO UPDATE SET online = excluded.online,"
        " presence = excluded.presence, presence_at = excluded.presence_at,"
        " last_seen_at = greatest(s.last_seen_at, excluded.last_seen_at),"
        " software = coalesce(excluded.software, s.software), updated_at = now()"
        " WHERE s.tenant_id = excluded.tenant_id",
        {"t": tenant, "id": gateway_id, "online": online, "k": presence.k, "now": now,
         "at": min(_ms(presence.at), now), "sw": presence.sw},
    )
    _history(conn, tenant, "gateway", [(gateway_id, online, None, None, None)], now)


def record_heartbeat(conn: psycopg.Connection, tenant: str, gateway_id: str, health: models.Health,
                     known_devices: Sequence[str], now: datetime | None = None) -> None:
    """A gateway's heartbeat: the gateway is online; each of its ``known_devices`` named in it is updated."""
    now = now or datetime.now(UTC)
    outbox = health.outbox
    conn.execute(
        "INSERT INTO ft.fleet_state AS s (tenant_id, subject_kind, subject_id, online, presence, presence_at,"
        " last_seen_at, software, outbox_depth, outbox_oldest_s, outbox_dropped, disk_free_mb)"
        " VALUES (%(t)s, 'gateway', %(id)s, true, 'heartbeat', %(now)s, %(now)s, %(sw)s, %(depth)s, %(oldest)s,"
        " %(dropped)s, %(disk)s)"
        " ON CONFLICT (subject_kind, subject_id) DO UPDATE SET"
        " presence = CASE WHEN s.online THEN s.presence ELSE 'heartbeat' END,"
        " presence_at = CASE WHEN s.online THEN s.presence_at ELSE excluded.presence_at END,"
        " online = true, last_seen_at = excluded.last_seen_at, software = excluded.software,"
        " outbox_depth = excluded.outbox_depth, outbox_oldest_s = excluded.outbox_oldest_s,"
        " outbox_dropped = excluded.outbox_dropped, disk_free_mb = excluded.disk_free_mb, updated_at = now()"
        " WHERE s.tenant_id = excluded.tenant_id",
        {"t": tenant, "id": gateway_id, "now": now, "sw": health.sw, "depth": outbox.depth if outbox else None,
         "oldest": outbox.oldest_age_s if outbox else None, "dropped": outbox.dropped if outbox else None,
         "disk": health.disk_free_mb},
    )
    points: list[tuple[str, bool, float | None, float | None, int | None]] = [
        (gateway_id, True, None, None, outbox.depth if outbox else None)]
    device_points = []
    known = set(known_devices)
    for dev, info in sorted(health.devices.items()):
        if dev not in known:
            continue  # a device the registry does not place in this tenant: nothing to say about it
        seen = min(_ms(info.last_good_ms), now) if info.last_good_ms is not None else None
        online = info.state in ("ok", "degraded")
        _upsert_device(conn, tenant, gateway_id, dev, info, seen, online)
        device_points.append((dev, online, info.battery, info.rssi, None))
    _history(conn, tenant, "gateway", points, now)
    _history(conn, tenant, "device", device_points, now)


def _upsert_device(conn: psycopg.Connection, tenant: str, gateway_id: str, dev: str, info: models.DeviceHealth,
                   seen: datetime | None, online: bool) -> None:
    conn.execute(
        "INSERT INTO ft.fleet_state AS s (tenant_id, subject_kind, subject_id, gateway_id, online, presence,"
        " presence_at, last_seen_at, software, health_state, battery, battery_unit, rssi, errors, refused)"
        " VALUES (%(t)s, 'device', %(id)s, %(gw)s, %(online)s, 'heartbeat', now(), %(seen)s, %(fw)s, %(state)s,"
        " %(battery)s, %(unit)s, %(rssi)s, %(errors)s, %(refused)s)"
        " ON CONFLICT (subject_kind, subject_id) DO UPDATE SET gateway_id = excluded.gateway_id,"
        " presence_at = CASE WHEN s.online = excluded.online THEN s.presence_at ELSE now() END,"
        " presence = CASE WHEN s.online = excluded.online THEN s.presence ELSE 'heartbeat' END,"
        " online = excluded.online, last_seen_at = greatest(s.last_seen_at, excluded.last_seen_at),"
        " software = coalesce(excluded.software, s.software), health_state = excluded.health_state,"
        " battery = coalesce(excluded.battery, s.battery), battery_unit = coalesce(excluded.battery_unit,"
        " s.battery_unit), rssi = coalesce(excluded.rssi, s.rssi), errors = excluded.errors,"
        " refused = excluded.refused, updated_at = now() WHERE s.tenant_id = excluded.tenant_id",
        {"t": tenant, "id": dev, "gw": gateway_id, "online": online, "seen": seen, "fw": info.fw,
         "state": info.state, "battery": info.battery, "unit": info.battery_unit, "rssi": info.rssi,
         "errors": info.errors, "refused": Jsonb(info.refused)},
    )


def _history(conn: psycopg.Connection, tenant: str, kind: SubjectKind,
             points: Sequence[tuple[str, bool, float | None, float | None, int | None]], at: datetime) -> None:
    if not points:
        return
    bucket = history_bucket(at)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO ft.fleet_history AS h (tenant_id, subject_kind, subject_id, bucket, online, battery, rssi,"
            " outbox_depth, outbox_max) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (subject_kind, subject_id, bucket) DO UPDATE SET online = excluded.online,"
            " battery = coalesce(excluded.battery, h.battery), rssi = coalesce(excluded.rssi, h.rssi),"
            " outbox_depth = coalesce(excluded.outbox_depth, h.outbox_depth),"
            " outbox_max = greatest(h.outbox_max, excluded.outbox_max), heartbeats = h.heartbeats + 1"
            " WHERE h.tenant_id = excluded.tenant_id",
            [(tenant, kind, sid, bucket, online, battery, rssi, depth, depth)
             for sid, online, battery, rssi, depth in points],
        )


def mark_timeouts(conn: psycopg.Connection, *, gateway_timeout_s: float, device_timeout_s: float,
                  now: datetime | None = None) -> list[tuple[str, str, str]]:
    """Declare offline what has been silent too long; returns (tenant, kind, id) of each subject changed.

    Runs in platform scope (the fleet loop), or a tenant's: it changes only the rows it can see.
    """
    now = now or datetime.now(UTC)
    rows = conn.execute(
        "UPDATE ft.fleet_state SET online = false, presence = 'timeout', presence_at = %(now)s, updated_at = now()"
        " WHERE online AND (last_seen_at IS NULL OR last_seen_at < %(now)s - CASE subject_kind"
        "   WHEN 'gateway' THEN %(gw)s ELSE %(dev)s END * interval '1 second')"
        " RETURNING tenant_id, subject_kind, subject_id",
        {"now": now, "gw": gateway_timeout_s, "dev": device_timeout_s},
    ).fetchall()
    for tenant, kind, sid in rows:
        _history(conn, tenant, kind, [(sid, False, None, None, None)], now)
    return [(r[0], r[1], r[2]) for r in rows]


# -- reading ----------------------------------------------------------------------------------------

_STATE = ("SELECT subject_kind, subject_id, gateway_id, online, presence, presence_at, last_seen_at, software,"
          " health_state, battery, battery_unit, rssi, outbox_depth, outbox_oldest_s, outbox_dropped, disk_free_mb,"
          " errors, refused, updated_at FROM ft.fleet_state")


def list_states(conn: psycopg.Connection, tenant: str, kind: SubjectKind | None = None,
                online: bool | None = None) -> list[SubjectState]:
    query, params = _STATE + " WHERE tenant_id = %s", [tenant]
    if kind is not None:
        query, params = query + " AND subject_kind = %s", [*params, kind]
    if online is not None:
        query, params = query + " AND online = %s", [*params, online]
    return _all(conn, SubjectState, query + " ORDER BY subject_kind, subject_id", params)


def get_state(conn: psycopg.Connection, tenant: str, kind: SubjectKind, subject_id: str) -> SubjectState | None:
    rows = _all(conn, SubjectState, _STATE + " WHERE tenant_id = %s AND subject_kind = %s AND subject_id = %s",
                [tenant, kind, subject_id])
    return rows[0] if rows else None


def history(conn: psycopg.Connection, tenant: str, kind: SubjectKind, subject_id: str, since: datetime,
            until: datetime | None = None) -> list[HistoryPoint]:
    return _all(conn, HistoryPoint,
                "SELECT bucket, online, battery, rssi, outbox_depth, outbox_max, heartbeats FROM ft.fleet_history"
                " WHERE tenant_id = %s AND subject_kind = %s AND subject_id = %s AND bucket >= %s"
                " AND bucket < coalesce(%s, 'infinity'::timestamptz) ORDER BY bucket",
                [tenant, kind, subject_id, since, until])


@dataclass(frozen=True)
class DataGap:
    """Expected against received samples of one device over a period, from the hourly rollups."""

    device_id: str
    expected: int
    """samples its spec's poll interval promises over the period"""
    received: int
    """samples stored (per hour, the count of its most complete metric)"""
    missing: int
    poll_interval_s: float


def data_gaps(conn: psycopg.Connection, tenant: str, since: datetime, until: datetime) -> list[DataGap]:
    """Per device with a known spec, samples expected (whole hours in [since, until)) against received.

    Devices without a spec this installation knows are left out: nothing says what to expect of them.
    """
    from device_specs.registry import SpecError, get_spec

    start, end = floor(since, HOUR), floor(until, HOUR)
    hours = int((end - start) / HOUR)
    devices = conn.execute("SELECT id, spec_key, created_at FROM ft.devices WHERE tenant_id = %s AND spec_key IS NOT"
                           " NULL ORDER BY id", (tenant,)).fetchall()
    received = dict(conn.execute(
        "SELECT device_id, sum(n)::bigint FROM (SELECT device_id, bucket, max(n) AS n FROM ft.readings_hourly_v"
        " WHERE tenant_id = %s AND bucket >= %s AND bucket < %s GROUP BY device_id, bucket) per_hour"
        " GROUP BY device_id", (tenant, start, end)).fetchall())
    gaps = []
    for device_id, spec_key, created_at in devices:
        try:
            interval = min(p.poll_interval_s for p in get_spec(spec_key).points)
        except SpecError:
            continue
        covered = max(0, min(hours, int((end - max(start, floor(created_at, HOUR)))
                                        / HOUR)))
        expected = int(covered * 3600 / interval)
        got = int(received.get(device_id, 0))
        gaps.append(DataGap(device_id, expected, got, max(0, expected - got), interval))
    return gaps


def _all(conn: psycopg.Connection, row_type: type[Any], query: str, params: Sequence[object]) -> list[Any]:
    with conn.cursor(row_factory=class_row(row_type)) as cur:
        return cur.execute(query, params).fetchall()  # type: ignore[arg-type]
