"""Claim codes: made for a farm (and field) by a clerk or admin, redeemed on site by a technician.

The code is in the answer to its creation only.  Redemption is rate-limited per caller (counted in
PostgreSQL and committed before the answer, so refused attempts count as well) and every refusal is
audited (``claim_code.refused``): guessing codes is slow and visible.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Response, status

from cloud.api.deps import TenantConnDep, require
from cloud.api.pagination import PAGED, PageDep
from cloud.api.routes.registry import CREATED, Reader, Writer
from cloud.api.schemas.registry import (
    ClaimCodeCreate,
    ClaimCodeCreated,
    ClaimCodePublic,
    ClaimRedeem,
    ClaimRedeemed,
    DevicePublic,
)
from cloud.auth.principal import Principal
from cloud.store import claim_codes, registry
from cloud.store.scope import tenant_scope

router = APIRouter(prefix="/tenants/{tenant}/claim-codes", tags=["registry"])
Technician = Annotated[Principal, require("devices:admin")]


@router.post("", status_code=CREATED, response_model=ClaimCodeCreated,
             summary="Make a claim code for a farm (and field): the code is returned this once")
def create_code(tenant: str, body: ClaimCodeCreate, principal: Writer, conn: TenantConnDep) -> ClaimCodeCreated:
    record, code = claim_codes.create_code(conn, tenant, body.farm_id, field_id=body.field_id, note=body.note,
                                           ttl=timedelta(hours=body.valid_hours), actor=principal)
    return ClaimCodeCreated(claim_code=ClaimCodePublic.model_validate(record), code=code)


@router.get("", response_model=list[ClaimCodePublic], responses=PAGED, summary="List claim codes (never the codes)")
def read_codes(tenant: str, principal: Reader, conn: TenantConnDep, page: PageDep, response: Response,
               farm_id: str | None = None) -> list[claim_codes.ClaimCode]:
    registry.get_tenant(conn, tenant)
    rows = claim_codes.list_codes(conn, tenant, farm_id=farm_id, limit=page.fetch, after=page.after)
    return page.answer(rows, response)


@router.delete("/{code_id}", response_model=ClaimCodePublic, summary="Revoke an unused claim code")
def revoke_code(tenant: str, code_id: str, principal: Writer, conn: TenantConnDep) -> claim_codes.ClaimCode:
    return claim_codes.revoke_code(conn, tenant, code_id, actor=principal)


@router.post("/redeem", response_model=ClaimRedeemed,
             summary="Redeem a claim code on site: the device goes to the code's farm and field",
             responses={429: {"description": "too many attempts; retry after Retry-After seconds"}})
def redeem_code(tenant: str, body: ClaimRedeem, principal: Technician, conn: TenantConnDep) -> ClaimRedeemed:
    decision = claim_codes.count_attempt(conn, principal)
    conn.commit()  # the attempt counts whatever follows; the commit ends the tenant scope, so set it again
    tenant_scope(conn, tenant)
    if not decision.allowed:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            f"too many claim code attempts; retry in {decision.retry_after_s} s",
                            headers={"Retry-After": str(decision.retry_after_s)})
    install = claim_codes.Install(note=body.install_note, latitude=body.install_latitude,
                                  longitude=body.install_longitude, gateway_id=body.gateway_id)
    try:
        record, device = claim_codes.redeem(conn, tenant, body.code, body.device_id, install, actor=principal)
    except registry.RegistryError as exc:
        registry.audit(conn, principal, "claim_code.refused", "device", body.device_id, tenant,
                       detail={"reason": str(exc)})
        conn.commit()
        raise
    return ClaimRedeemed(claim_code=ClaimCodePublic.model_validate(record), device=DevicePublic.model_validate(device))
