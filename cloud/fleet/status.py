"""The fleet loop's status where the API can read it: each fleet process's row in ``ft.fleet_services``.

The loop runs in its own process (``fieldtrust cloud fleet``), so the API cannot look at its
:class:`Status` in memory.  Each fleet process, owner of the fleet lock or standby, upserts its row after
every cycle (:func:`save`), as the ingest workers do with ``ft.ingest_workers``; :func:`overview` reads the
rows back with the numbers that are facts of the tables themselves (alerts not resolved, campaigns
running), for ``GET /api/v1/fleet/status``.  A process that stopped leaves its row behind, growing old:
``age_s`` says so, and ``lag_s`` (seconds since the owner's last evaluation) grows with it.

The same :class:`Status` is served as Prometheus metrics by the fleet process itself
(cloud.fleet.metrics.FleetCollector, ``fieldtrust cloud fleet --metrics-port``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field


@dataclass
class Status:
    """What one fleet process's loop and consumer have done (counters since it started)."""

    role: str = "starting"  # owner, standby (another process holds the lock), disconnected
    subscribed: bool = False
    cycles: int = 0
    errors: int = 0
    last_cycle_at: datetime | None = None
    last_error: str | None = None
    messages: int = 0
    went_offline: int = 0
    alert_events: int = 0
    campaigns_advanced: int = 0
    updates_published: int = 0
    webhook_attempts: int = 0
    #: when the alert rules were last evaluated (by this process, as the owner)
    last_evaluation_at: datetime | None = None
    #: alerts open / acknowledged and campaigns running, as the last evaluation left them
    alerts_open: int = 0
    alerts_acknowledged: int = 0
    campaigns_active: int = 0
    #: messages received from the broker, not yet stored
    inbox_depth: int = 0
    #: seconds from the broker delivering the last stored message to its being stored
    message_lag_s: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in dataclasses.asdict(self).items()}


def alert_and_campaign_counts(conn: psycopg.Connection) -> tuple[int, int, int]:
    """(alerts open, alerts acknowledged, campaigns running) of every tenant the scope shows."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM ft.alerts WHERE state = 'open'),"
        " (SELECT count(*) FROM ft.alerts WHERE state = 'acknowledged'),"
        " (SELECT count(*) FROM ft.campaigns WHERE state = 'running')").fetchone()
    assert row is not None  # scalar subqueries: always one row
    return int(row[0]), int(row[1]), int(row[2])


def save(conn: psycopg.Connection, service_id: str, host: str, pid: int, started_at: datetime,
         status: Status) -> None:
    conn.execute(
        "INSERT INTO ft.fleet_services (service_id, host, pid, started_at, updated_at, role, status)"
        " VALUES (%s, %s, %s, %s, now(), %s, %s) ON CONFLICT (service_id) DO UPDATE SET host = excluded.host,"
        " pid = excluded.pid, started_at = excluded.started_at, updated_at = now(), role = excluded.role,"
        " status = excluded.status",
        (service_id, host, pid, started_at, status.role, Jsonb(status.as_json())))


class FleetProcess(BaseModel):
    """One fleet process as it last reported itself."""

    service_id: str = Field(description="its MQTT client id (fleet-<host> unless --client-id)")
    host: str
    pid: int | None
    role: str = Field(description="owner (holds the fleet lock and does the loop's work), standby or disconnected")
    started_at: datetime
    updated_at: datetime
    age_s: float = Field(description="seconds since it last reported: a large value is a process that stopped")
    status: dict[str, Any] = Field(description="its counters (cloud.fleet.status.Status)")


class FleetStatus(BaseModel):
    """The fleet loop as a whole: who runs it, when it last evaluated, what is open, how far behind it is."""

    owner: str | None = Field(description="the service id of the process doing the loop's work, if any reported")
    last_evaluation_at: datetime | None = Field(description="when the owner last evaluated the alert rules")
    lag_s: float | None = Field(description="seconds since that evaluation (the loop runs every --interval seconds)")
    message_lag_s: float | None = Field(
        description="the owner's seconds from a heartbeat's delivery by the broker to its being stored")
    inbox_depth: int | None = Field(description="messages the owner received but has not stored yet")
    alerts_open: int
    alerts_acknowledged: int
    campaigns_active: int = Field(description="campaigns running (not paused, halted, done or cancelled)")
    processes: list[FleetProcess]


def overview(conn: psycopg.Connection, now: datetime | None = None) -> FleetStatus:
    """Every fleet process's last report and the live counts; call in platform scope."""
    now = now or datetime.now(UTC)
    rows = conn.execute(
        "SELECT service_id, host, pid, role, started_at, updated_at, status FROM ft.fleet_services"
        " ORDER BY role = 'owner' DESC, updated_at DESC").fetchall()
    processes = [FleetProcess(service_id=r[0], host=r[1], pid=r[2], role=r[3], started_at=r[4], updated_at=r[5],
                              age_s=max(0.0, (now - r[5]).total_seconds()), status=r[6]) for r in rows]
    owner = next((p for p in processes if p.role == "owner"), None)
    last = owner.status.get("last_evaluation_at") if owner else None
    last_at = datetime.fromisoformat(last) if last else None
    open_, acknowledged, active = alert_and_campaign_counts(conn)
    return FleetStatus(
        owner=owner.service_id if owner else None, last_evaluation_at=last_at,
        lag_s=None if last_at is None else max(0.0, (now - last_at).total_seconds()),
        message_lag_s=owner.status.get("message_lag_s") if owner else None,
        inbox_depth=owner.status.get("inbox_depth") if owner else None,
        alerts_open=open_, alerts_acknowledged=acknowledged, campaigns_active=active, processes=processes)
