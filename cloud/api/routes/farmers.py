"""Farmers of a tenant: register, find (by village or national id card), read, change, remove.

A farmer's record is personal data: every read of it by staff or partners is written to the audit log
(``farmer.data_read``, purpose ``registry``), so the farmer can see who looked them up.  A farmer's own
account reads only its own record, unaudited.  National ids are write-only (kept as keyed hashes, see
cloud.store.farmers); finding a farmer by one (``?national_id=``) hashes it the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from fastapi import APIRouter, HTTPException, Response, status

from cloud.api.deps import SettingsDep, TenantConnDep
from cloud.api.pagination import PAGED, PageDep
from cloud.api.routes.registry import CREATED, Reader, Writer, own_farmer
from cloud.api.schemas.registry import FarmerCreate, FarmerPublic, FarmerUpdate
from cloud.audit import log as audit_log
from cloud.auth.principal import Principal
from cloud.config import CloudSettings
from cloud.store import farmers, registry

router = APIRouter(prefix="/tenants/{tenant}/farmers", tags=["registry"])
READ_PURPOSE = "registry"


def _kek(settings: CloudSettings, national_id: str | None) -> bytes | None:
    """The KEK, needed only to hash a national id (503 when none is configured)."""
    if national_id is None:
        return None
    try:
        return settings.kek_bytes()
    except ValueError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"national ids cannot be kept: {exc}") from None


def _audit_reads(conn: psycopg.Connection, principal: Principal, tenant: str, rows: Sequence[farmers.Farmer]) -> None:
    if own_farmer(principal) is not None:
        return  # the farmer's own record
    for farmer in rows:
        audit_log.record(conn, principal, audit_log.DATA_READ, "farmer", farmer.id, farmer_id=farmer.id,
                         purpose=READ_PURPOSE, tenant_id=tenant)


@router.post("", status_code=CREATED, response_model=FarmerPublic, summary="Register a farmer")
def create_farmer(tenant: str, body: FarmerCreate, principal: Writer, conn: TenantConnDep,
                  settings: SettingsDep) -> farmers.Farmer:
    return farmers.register_farmer(conn, tenant, body.id, body.model_dump(exclude={"id"}), actor=principal,
                                   kek=_kek(settings, body.national_id))


@router.get("", response_model=list[FarmerPublic], responses=PAGED,
            summary="List or find farmers (each record read is audited)")
def read_farmers(tenant: str, principal: Reader, conn: TenantConnDep, settings: SettingsDep, page: PageDep,
                 response: Response, village: str | None = None,
                 national_id: str | None = None) -> list[farmers.Farmer]:
    kek = _kek(settings, national_id)
    hashed = farmers.national_id_hash(kek, tenant, national_id) if kek is not None and national_id else None
    rows = page.answer(farmers.list_farmers(conn, tenant, village=village, national_id_hashed=hashed,
                                            only=own_farmer(principal), limit=page.fetch, after=page.after), response)
    _audit_reads(conn, principal, tenant, rows)
    return rows


@router.get("/{farmer_id}", response_model=FarmerPublic, summary="One farmer (audited)")
def read_farmer(tenant: str, farmer_id: str, principal: Reader, conn: TenantConnDep) -> farmers.Farmer:
    own = own_farmer(principal)
    if own is not None and own != farmer_id:
        raise registry.NotFound(f"farmer {farmer_id!r} not found in tenant {tenant!r}")
    farmer = farmers.get_farmer(conn, tenant, farmer_id)
    _audit_reads(conn, principal, tenant, [farmer])
    return farmer


@router.patch("/{farmer_id}", response_model=FarmerPublic, summary="Change a farmer's record")
def update_farmer(tenant: str, farmer_id: str, body: FarmerUpdate, principal: Writer, conn: TenantConnDep,
                  settings: SettingsDep) -> farmers.Farmer:
    return farmers.update_farmer(conn, tenant, farmer_id, body.model_dump(exclude_unset=True), actor=principal,
                                 kek=_kek(settings, body.national_id))


@router.delete("/{farmer_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Remove a farmer registered by mistake (refused while a farm or account refers to them)")
def delete_farmer(tenant: str, farmer_id: str, principal: Writer, conn: TenantConnDep) -> None:
    registry.delete_row(conn, "farmers", tenant, farmer_id, f"farmer {farmer_id!r}")
    registry.audit(conn, principal, "farmer.deleted", "farmer", farmer_id, tenant, farmer_id=farmer_id)
