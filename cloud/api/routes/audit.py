"""The audit log over HTTP: a farmer sees who used their data, when and why; tenant admins search the log.

Pages run newest first; the next page is asked for with ``before_id`` = the answer's ``next_before_id``.
Staff looking at what was done with one farmer's data is itself an audit entry (``audit.read``, naming the
farmer), which the farmer sees in turn.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel

from cloud.api.deps import PrincipalDep, TenantConnDep, require
from cloud.api.models import Ident
from cloud.audit import log
from cloud.auth.principal import Principal

router = APIRouter(tags=["audit"])

Limit = Annotated[int, Query(ge=1, le=log.MAX_PAGE)]
BeforeId = Annotated[int | None, Query(ge=1, description="the next_before_id of the previous page")]


class DataAccess(BaseModel):
    """One use of the farmer's data (or of their consents), as the farmer sees it."""

    id: int
    at: datetime
    actor_kind: str
    actor_name: str | None
    actor_roles: list[str]
    action: str
    purpose: str | None
    target_type: str
    target_id: str


class DataAccessPage(BaseModel):
    entries: list[DataAccess]
    next_before_id: int | None


class AuditPage(BaseModel):
    entries: list[log.AuditEntry]
    next_before_id: int | None


def _next(entries: list, limit: int) -> int | None:
    return entries[-1].id if len(entries) == limit else None


def _access_page(entries: list[log.AuditEntry], limit: int) -> DataAccessPage:
    return DataAccessPage(entries=[DataAccess(id=e.id, at=e.at, actor_kind=e.actor_kind, actor_name=e.actor_name,
                                              actor_roles=e.actor_roles, action=e.action, purpose=e.purpose,
                                              target_type=e.target_type, target_id=e.target_id) for e in entries],
                          next_before_id=_next(entries, limit))


@router.get("/me/data-access", response_model=DataAccessPage,
            summary="Who used the signed-in farmer's data, when and why (newest first)")
def my_data_access(principal: PrincipalDep, conn: TenantConnDep, before_id: BeforeId = None,
                   limit: Limit = 50) -> DataAccessPage:
    if principal.farmer_id is None or principal.tenant_id is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "only a farmer has a data-access history of their own")
    entries = log.search(conn, principal.tenant_id, log.Filters(farmer_id=principal.farmer_id),
                         before_id=before_id, limit=limit)
    return _access_page(entries, limit)


@router.get("/tenants/{tenant}/farmers/{farmer}/data-access", response_model=DataAccessPage,
            summary="Who used a farmer's data, when and why (audit:read; this look is audited too)")
def farmer_data_access(tenant: str, farmer: Ident, principal: Annotated[Principal, require("audit:read")],
                       conn: TenantConnDep, before_id: BeforeId = None, limit: Limit = 50) -> DataAccessPage:
    entries = log.search(conn, tenant, log.Filters(farmer_id=farmer), before_id=before_id, limit=limit)
    log.record(conn, principal, log.AUDIT_READ, "farmer", farmer, farmer_id=farmer, tenant_id=tenant,
               detail={"view": "data-access"})
    return _access_page(entries, limit)


@router.get("/tenants/{tenant}/audit", response_model=AuditPage,
            summary="Search the tenant's audit log (newest first)")
def search_audit(tenant: str, principal: Annotated[Principal, require("audit:read")], conn: TenantConnDep,
                 actor: str | None = None,
                 action: Annotated[str | None, Query(description="an action, or a prefix ending in '.'")] = None,
                 target_type: str | None = None, target_id: str | None = None, farmer: str | None = None,
                 since: datetime | None = None, until: datetime | None = None, before_id: BeforeId = None,
                 limit: Limit = 50) -> AuditPage:
    filters = log.Filters(actor_id=actor, action=action, target_type=target_type, target_id=target_id,
                          farmer_id=farmer, since=since, until=until)
    entries = log.search(conn, tenant, filters, before_id=before_id, limit=limit)
    if farmer is not None:  # what was done with one farmer's data: the farmer will see that someone looked
        log.record(conn, principal, log.AUDIT_READ, "farmer", farmer, farmer_id=farmer, tenant_id=tenant,
                   detail={"view": "audit-search"})
    return AuditPage(entries=entries, next_before_id=_next(entries, limit))
