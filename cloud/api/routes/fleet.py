"""Fleet status: which gateways and devices are online, their battery, signal, firmware and backlog, their trends,
and the data gaps (samples expected from the device specs against samples stored).  Scope ``fleet:read``.

``GET /fleet/status`` is the platform's: the fleet loop itself (which process owns it, its last evaluation,
alerts open, campaigns running, lag) across every tenant, for platform admins only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from cloud.api.deps import AdminDep, ConnDep, TenantConnDep, require
from cloud.auth.principal import Principal
from cloud.fleet import presence
from cloud.fleet import status as loop_status
from cloud.store import registry

router = APIRouter(tags=["fleet"])
TENANT_FLEET = "/tenants/{tenant}/fleet"
FleetReader = Annotated[Principal, require("fleet:read")]
Kind = Literal["gateway", "device"]


@router.get(TENANT_FLEET, response_model=list[presence.SubjectState],
            summary="Presence and health of the tenant's gateways and devices")
def read_fleet(tenant: str, principal: FleetReader, conn: TenantConnDep, kind: Kind | None = None,
               online: bool | None = None) -> list[presence.SubjectState]:
    registry.get_tenant(conn, tenant)
    return presence.list_states(conn, tenant, kind, online)


@router.get(TENANT_FLEET + "/{kind}/{subject_id}", response_model=presence.SubjectState,
            summary="One gateway's or device's presence and health")
def read_subject(tenant: str, kind: Kind, subject_id: str, principal: FleetReader,
                 conn: TenantConnDep) -> presence.SubjectState:
    state = presence.get_state(conn, tenant, kind, subject_id)
    if state is None:
        raise registry.NotFound(f"no fleet state for {kind} {subject_id!r} in tenant {tenant!r}")
    return state


@router.get(TENANT_FLEET + "/{kind}/{subject_id}/history", response_model=list[presence.HistoryPoint],
            summary="A gateway's or device's trend, one point per 15 minutes")
def read_history(tenant: str, kind: Kind, subject_id: str, principal: FleetReader, conn: TenantConnDep,
                 hours: Annotated[int, Query(ge=1, le=24 * 90)] = 24) -> list[presence.HistoryPoint]:
    return presence.history(conn, tenant, kind, subject_id, datetime.now(UTC) - timedelta(hours=hours))


@router.get(TENANT_FLEET + "/gaps", response_model=list[presence.DataGap],
            summary="Samples expected (from each device's spec) against samples stored, over the last hours")
def read_gaps(tenant: str, principal: FleetReader, conn: TenantConnDep,
              hours: Annotated[int, Query(ge=1, le=24 * 31)] = 24) -> list[presence.DataGap]:
    registry.get_tenant(conn, tenant)
    now = datetime.now(UTC)
    return presence.data_gaps(conn, tenant, now - timedelta(hours=hours), now)


@router.get("/fleet/status", response_model=loop_status.FleetStatus, dependencies=[AdminDep],
            summary="The fleet loop: its processes, last evaluation, alerts open, campaigns running, lag "
                    "(platform admins)")
def read_loop_status(conn: ConnDep) -> loop_status.FleetStatus:
    return loop_status.overview(conn)
