"""Tenants, farms, gateways and devices: register, read (with when each was last seen), change, remove.

Registering a gateway or a node answers with its secrets once (key, broker password), generated
here unless the request brings them; afterwards only their epochs can be read.  Tenants are made and
listed by platform admins; everything under ``/tenants/{tenant}`` needs a scope (cloud.auth.scopes):
``registry:read`` to read, ``registry:write`` for farms, ``devices:admin`` for gateways and devices.  A
farmer's own account reads only the farmer's farms and what stands on them (:func:`own_farmer`).
Every change is audited by the store, in the request's transaction.  Lists are paged (cloud.api.pagination).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response, status

from cloud.api.deps import AdminDep, ConnDep, KekDep, TenantConnDep, require
from cloud.api.pagination import PAGED, PageDep
from cloud.api.schemas.registry import (
    DeviceCreate,
    DeviceCreated,
    DevicePublic,
    DeviceUpdate,
    FarmCreate,
    FarmPublic,
    FarmUpdate,
    GatewayCreate,
    GatewayCreated,
    GatewayPublic,
    GatewayUpdate,
    TenantCreate,
    TenantPublic,
)
from cloud.auth.principal import Principal
from cloud.auth.scopes import self_only
from cloud.broker_acl import new_password
from cloud.keys import new_key
from cloud.store import registry

router = APIRouter(prefix="/tenants", tags=["registry"])
CREATED = status.HTTP_201_CREATED
Reader = Annotated[Principal, require("registry:read")]
Writer = Annotated[Principal, require("registry:write")]
DeviceAdmin = Annotated[Principal, require("devices:admin")]


def own_farmer(principal: Principal) -> str | None:
    """The farmer whose records alone ``principal`` may read (a farmer's own account), else None: all of the
    tenant's.  A farmer account without a farmer record sees nothing."""
    if not self_only(principal):
        return None
    return principal.farmer_id or ""


# -- tenants -----------------------------------------------------------------------------------------------


@router.post("", status_code=CREATED, response_model=TenantPublic, summary="Register a tenant (platform admins)",
             dependencies=[AdminDep])
def create_tenant(body: TenantCreate, conn: ConnDep) -> registry.Tenant:
    from cloud.auth.scopes import admin_principal

    return registry.register_tenant(conn, body.id, body.name, actor=admin_principal())


@router.get("", response_model=list[TenantPublic], summary="List tenants (platform admins)", dependencies=[AdminDep])
def read_tenants(conn: ConnDep) -> list[registry.Tenant]:
    return registry.list_tenants(conn)


@router.get("/{tenant}", response_model=TenantPublic, summary="One tenant")
def read_tenant(tenant: str, principal: Reader, conn: TenantConnDep) -> registry.Tenant:
    return registry.get_tenant(conn, tenant)


# -- farms -------------------------------------------------------------------------------------------------


@router.post("/{tenant}/farms", status_code=CREATED, response_model=FarmPublic, summary="Register a farm")
def create_farm(tenant: str, body: FarmCreate, principal: Writer, conn: TenantConnDep) -> registry.Farm:
    return registry.register_farm(conn, tenant, body.id, actor=principal, **body.model_dump(exclude={"id"}))


@router.get("/{tenant}/farms", response_model=list[FarmPublic], responses=PAGED, summary="List a tenant's farms")
def read_farms(tenant: str, principal: Reader, conn: TenantConnDep, page: PageDep, response: Response,
               farmer_id: str | None = None) -> list[registry.Farm]:
    own = own_farmer(principal)
    if own is not None and farmer_id not in (None, own):
        return []
    rows = registry.list_farms(conn, tenant, farmer_id=own if own is not None else farmer_id, limit=page.fetch,
                               after=page.after)
    return page.answer(rows, response)


@router.get("/{tenant}/farms/{farm_id}", response_model=FarmPublic, summary="One farm")
def read_farm(tenant: str, farm_id: str, principal: Reader, conn: TenantConnDep) -> registry.Farm:
    return registry.get_farm(conn, tenant, farm_id, farmer_id=own_farmer(principal))


@router.patch("/{tenant}/farms/{farm_id}", response_model=FarmPublic,
              summary="Change a farm (its farmer, tenure, village, place, crop, ...)")
def update_farm(tenant: str, farm_id: str, body: FarmUpdate, principal: Writer, conn: TenantConnDep) -> registry.Farm:
    return registry.update_farm(conn, tenant, farm_id, body.model_dump(exclude_unset=True), actor=principal)


@router.delete("/{tenant}/farms/{farm_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Remove a farm registered by mistake (refused while fields or devices are on it)")
def delete_farm(tenant: str, farm_id: str, principal: Writer, conn: TenantConnDep) -> None:
    farm = registry.get_farm(conn, tenant, farm_id)
    registry.delete_row(conn, "farms", tenant, farm_id, f"farm {farm_id!r}")
    registry.audit(conn, principal, "farm.deleted", "farm", farm_id, tenant, farmer_id=farm.farmer_id,
                   detail={"name": farm.name})


# -- gateways ----------------------------------------------------------------------------------------------


@router.post("/{tenant}/gateways", status_code=CREATED, response_model=GatewayCreated,
             summary="Register a gateway: its key and broker password are returned this once")
def create_gateway(tenant: str, body: GatewayCreate, principal: DeviceAdmin, conn: TenantConnDep,
                   kek: KekDep) -> GatewayCreated:
    key = bytes.fromhex(body.key_hex) if body.key_hex else new_key()
    password = body.mqtt_password or new_password()
    gateway = registry.register_gateway(conn, tenant, body.id, body.farm_id, key, kek, body.mqtt_username, password,
                                        name=body.name, actor=principal)
    assert gateway.key_epoch is not None  # just registered with its first key
    return GatewayCreated(gateway=GatewayPublic.model_validate(gateway), key_epoch=gateway.key_epoch,
                          key_hex=key.hex(), mqtt_password=password)


@router.get("/{tenant}/gateways", response_model=list[GatewayPublic], responses=PAGED,
            summary="List gateways with last-seen")
def read_gateways(tenant: str, principal: Reader, conn: TenantConnDep, page: PageDep, response: Response,
                  farm_id: str | None = None) -> list[registry.Gateway]:
    rows = registry.list_gateways(conn, tenant, farm_id, farmer_id=own_farmer(principal), limit=page.fetch,
                                  after=page.after)
    return page.answer(rows, response)


@router.get("/{tenant}/gateways/{gateway_id}", response_model=GatewayPublic, summary="One gateway")
def read_gateway(tenant: str, gateway_id: str, principal: Reader, conn: TenantConnDep) -> registry.Gateway:
    return registry.get_gateway(conn, tenant, gateway_id, farmer_id=own_farmer(principal))


@router.patch("/{tenant}/gateways/{gateway_id}", response_model=GatewayPublic,
              summary="Rename a gateway or move it to another farm")
def update_gateway(tenant: str, gateway_id: str, body: GatewayUpdate, principal: DeviceAdmin,
                   conn: TenantConnDep) -> registry.Gateway:
    changes = body.model_dump(exclude_unset=True)
    if "name" in changes and changes["name"] is None:
        changes["name"] = ""
    return registry.update_gateway(conn, tenant, gateway_id, changes, actor=principal)


# -- devices -----------------------------------------------------------------------------------------------


@router.post("/{tenant}/devices", status_code=CREATED, response_model=DeviceCreated,
             summary="Register a sensor node (its key is returned this once) or a bus device behind a gateway")
def create_device(tenant: str, body: DeviceCreate, principal: DeviceAdmin, conn: TenantConnDep,
                  kek: KekDep) -> DeviceCreated:
    key = None
    if body.kind == "node":
        key = bytes.fromhex(body.key_hex) if body.key_hex else new_key()
    elif body.key_hex is not None:
        raise registry.Invalid(f"device {body.id!r}: a bus device is attested by its gateway and takes no key")
    details = body.model_dump(exclude_none=True, exclude={"id", "kind", "spec", "key_hex", "farm_id", "gateway_id"})
    device = registry.register_device(conn, tenant, body.id, body.kind, body.farm_id, body.gateway_id, body.spec,
                                      key, kek, actor=principal, details=details)
    return DeviceCreated(device=DevicePublic.model_validate(device), key_epoch=device.key_epoch,
                         key_hex=key.hex() if key is not None else None)


@router.get("/{tenant}/devices", response_model=list[DevicePublic], responses=PAGED,
            summary="List devices with last-seen")
def read_devices(tenant: str, principal: Reader, conn: TenantConnDep, page: PageDep, response: Response,
                 farm_id: str | None = None, gateway_id: str | None = None,
                 field_id: str | None = None) -> list[registry.Device]:
    rows = registry.list_devices(conn, tenant, farm_id, gateway_id, field_id=field_id, farmer_id=own_farmer(principal),
                                 limit=page.fetch, after=page.after)
    return page.answer(rows, response)


@router.get("/{tenant}/devices/{device_id}", response_model=DevicePublic, summary="One device")
def read_device(tenant: str, device_id: str, principal: Reader, conn: TenantConnDep) -> registry.Device:
    return registry.get_device(conn, tenant, device_id, farmer_id=own_farmer(principal))


@router.patch("/{tenant}/devices/{device_id}", response_model=DevicePublic,
              summary="Change a device's spec, firmware, installation, or move it (a 'moved' event is recorded)")
def update_device(tenant: str, device_id: str, body: DeviceUpdate, principal: DeviceAdmin,
                  conn: TenantConnDep) -> registry.Device:
    return registry.update_device(conn, tenant, device_id, body.model_dump(exclude_unset=True), actor=principal)
