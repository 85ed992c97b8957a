"""The fleet overview's reads: every gateway and device of a tenant with its presence and health, filtered,
in pages, and counted by state.

The registry says what exists (``ft.gateways``, ``ft.devices``), the fleet service what it last heard
(``ft.fleet_state``, cloud/fleet/presence.py); a subject the fleet service never heard of is *unknown*,
not offline.  Pages are keyset pages over (kind, id), so the 200th page of 10,000 devices costs what
the first does; filters run in the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import psycopg
from psycopg.rows import class_row

from cloud.web.terminal.conditions import BATTERY_LOW_V

State = Literal["online", "offline", "unknown"]
Kind = Literal["gateway", "device"]
PAGE = 50
#: a gateway whose outbox holds more batches than this has a backlog
BACKLOG_BATCHES = 10


@dataclass(frozen=True)
class Filters:
    kind: Kind | None = None
    state: State | None = None
    low_battery: bool = False
    backlog: bool = False
    firmware: str | None = None
    farm: str | None = None
    gateway: str | None = None


@dataclass(frozen=True)
class Row:
    kind: str
    id: str
    farm_id: str | None
    gateway_id: str | None
    online: bool | None
    last_seen_at: datetime | None
    battery: float | None
    battery_unit: str | None
    rssi: float | None
    firmware: str | None
    outbox_depth: int | None
    low_battery: bool

    @property
    def state(self) -> State:
        return "unknown" if self.online is None else ("online" if self.online else "offline")


@dataclass(frozen=True)
class Counts:
    by_state: dict[tuple[str, str], int]  # (kind, state) -> count
    low_battery: int
    backlog: int

    def of(self, kind: str, state: str) -> int:
        return self.by_state.get((kind, state), 0)


_SUBJECTS = """
WITH subjects AS (
    SELECT 'gateway' AS kind, g.id, g.farm_id, NULL::text AS gateway_id, g.last_seen_at AS seen, NULL::text AS firmware
    FROM ft.gateways g WHERE g.tenant_id = %(t)s
    UNION ALL
    SELECT 'device', d.id, d.farm_id, d.gateway_id, d.last_seen_at, d.firmware_version
    FROM ft.devices d WHERE d.tenant_id = %(t)s
), rows AS (
    SELECT s.kind, s.id, s.farm_id, coalesce(f.gateway_id, s.gateway_id) AS gateway_id, f.online,
           greatest(f.last_seen_at, s.seen) AS last_seen_at, f.battery, f.battery_unit, f.rssi,
           coalesce(f.software, s.firmware) AS firmware, f.outbox_depth,
           coalesce(CASE WHEN lower(f.battery_unit) = 'mv' OR f.battery > 100 THEN f.battery / 1000
                         ELSE f.battery END < %(low_v)s, false) AS low_battery
    FROM subjects s LEFT JOIN ft.fleet_state f ON f.subject_kind = s.kind AND f.subject_id = s.id
)
"""


def _where(filters: Filters) -> tuple[str, dict[str, object]]:
    conditions: list[str] = ["true"]
    params: dict[str, object] = {}
    if filters.kind is not None:
        conditions.append("kind = %(kind)s")
        params["kind"] = filters.kind
    if filters.state == "online":
        conditions.append("online")
    elif filters.state == "offline":
        conditions.append("NOT online")
    elif filters.state == "unknown":
        conditions.append("online IS NULL")
    if filters.low_battery:
        conditions.append("low_battery")
    if filters.backlog:
        conditions.append("outbox_depth > %(backlog)s")
        params["backlog"] = BACKLOG_BATCHES
    if filters.firmware:
        conditions.append("firmware = %(firmware)s")
        params["firmware"] = filters.firmware
    if filters.farm:
        conditions.append("farm_id = %(farm)s")
        params["farm"] = filters.farm
    if filters.gateway:
        conditions.append("gateway_id = %(gateway)s")
        params["gateway"] = filters.gateway
    return " AND ".join(conditions), params


def page(conn: psycopg.Connection, tenant: str, filters: Filters, after: tuple[str, str] | None = None,
         limit: int = PAGE) -> tuple[list[Row], tuple[str, str] | None]:
    """One page of subjects in (kind, id) order after ``after``, and the key of the next page (None: last)."""
    where, params = _where(filters)
    keyset = "AND (kind, id COLLATE \"C\") > (%(after_kind)s, %(after_id)s COLLATE \"C\")" if after else ""
    query = (f"{_SUBJECTS} SELECT kind, id, farm_id, gateway_id, online, last_seen_at, battery, battery_unit, rssi,"
             f" firmware, outbox_depth, low_battery FROM rows WHERE {where} {keyset}"
             f" ORDER BY kind, id COLLATE \"C\" LIMIT %(limit)s")
    values = {"t": tenant, "low_v": BATTERY_LOW_V, "limit": limit + 1, **params}
    if after:
        values |= {"after_kind": after[0], "after_id": after[1]}
    with conn.cursor(row_factory=class_row(Row)) as cur:
        rows = cur.execute(query, values).fetchall()  # type: ignore[arg-type]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, ((rows[-1].kind, rows[-1].id) if more and rows else None)


def counts(conn: psycopg.Connection, tenant: str) -> Counts:
    rows = conn.execute(
        f"{_SUBJECTS} SELECT kind, CASE WHEN online IS NULL THEN 'unknown' WHEN online THEN 'online' ELSE 'offline'"
        f" END, count(*), count(*) FILTER (WHERE low_battery), count(*) FILTER (WHERE outbox_depth > %(backlog)s)"
        f" FROM rows GROUP BY 1, 2", {"t": tenant, "low_v": BATTERY_LOW_V, "backlog": BACKLOG_BATCHES}).fetchall()
    return Counts({(kind, state): int(n) for kind, state, n, _, _ in rows}, sum(int(r[3]) for r in rows),
                  sum(int(r[4]) for r in rows))


def firmware_versions(conn: psycopg.Connection, tenant: str) -> list[str]:
    """The firmware and agent versions in the fleet, for the filter's choices."""
    rows = conn.execute(f"{_SUBJECTS} SELECT DISTINCT firmware FROM rows WHERE firmware IS NOT NULL ORDER BY 1",
                        {"t": tenant, "low_v": BATTERY_LOW_V}).fetchall()
    return [r[0] for r in rows]


@dataclass(frozen=True)
class FarmPoint:
    id: str
    name: str
    latitude: float
    longitude: float
    devices: int
    offline: int


def farm_points(conn: psycopg.Connection, tenant: str) -> list[FarmPoint]:
    """Farms with coordinates, with their device counts, for the map."""
    rows = conn.execute(
        "SELECT f.id, f.name, f.latitude, f.longitude, count(d.id), count(d.id) FILTER (WHERE NOT s.online)"
        " FROM ft.farms f LEFT JOIN ft.devices d ON d.farm_id = f.id AND d.tenant_id = f.tenant_id"
        " LEFT JOIN ft.fleet_state s ON s.subject_kind = 'device' AND s.subject_id = d.id"
        " WHERE f.tenant_id = %s AND f.latitude IS NOT NULL GROUP BY f.id ORDER BY f.id", (tenant,)).fetchall()
    return [FarmPoint(*row) for row in rows]
