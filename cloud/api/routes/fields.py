"""Fields of a tenant's farms: register, list (by farm, crop or season), read, change, remove."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from cloud.api.deps import TenantConnDep
from cloud.api.pagination import PAGED, PageDep
from cloud.api.routes.registry import CREATED, Reader, Writer, own_farmer
from cloud.api.schemas.registry import FieldCreate, FieldPublic, FieldUpdate
from cloud.store import fields, registry

router = APIRouter(prefix="/tenants/{tenant}/fields", tags=["registry"])


@router.post("", status_code=CREATED, response_model=FieldPublic, summary="Register a field of a farm")
def create_field(tenant: str, body: FieldCreate, principal: Writer, conn: TenantConnDep) -> fields.Field:
    return fields.register_field(conn, tenant, body.id, body.farm_id, body.model_dump(exclude={"id", "farm_id"}),
                                 actor=principal)


@router.get("", response_model=list[FieldPublic], responses=PAGED, summary="List fields")
def read_fields(tenant: str, principal: Reader, conn: TenantConnDep, page: PageDep, response: Response,
                farm_id: str | None = None, crop: str | None = None, season: str | None = None) -> list[fields.Field]:
    rows = fields.list_fields(conn, tenant, farm_id=farm_id, crop=crop, season=season,
                              farmer_id=own_farmer(principal), limit=page.fetch, after=page.after)
    return page.answer(rows, response)


@router.get("/{field_id}", response_model=FieldPublic, summary="One field")
def read_field(tenant: str, field_id: str, principal: Reader, conn: TenantConnDep) -> fields.Field:
    return fields.get_field(conn, tenant, field_id, farmer_id=own_farmer(principal))


@router.patch("/{field_id}", response_model=FieldPublic, summary="Change a field (a new season's crop, ...)")
def update_field(tenant: str, field_id: str, body: FieldUpdate, principal: Writer, conn: TenantConnDep) -> fields.Field:
    return fields.update_field(conn, tenant, field_id, body.model_dump(exclude_unset=True), actor=principal)


@router.delete("/{field_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Remove a field registered by mistake (refused while devices or claim codes refer to it)")
def delete_field(tenant: str, field_id: str, principal: Writer, conn: TenantConnDep) -> None:
    field = fields.get_field(conn, tenant, field_id)
    registry.delete_row(conn, "fields", tenant, field_id, f"field {field_id!r}")
    registry.audit(conn, principal, "field.deleted", "field", field_id, tenant, detail={"farm_id": field.farm_id})
