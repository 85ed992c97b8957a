"""Tenants, farms, gateways and devices: register and list (with when each was last seen).

Registering a gateway or a node answers with its secrets once (key, broker password), generated
here unless the request brings them; afterwards only their epochs can be read.
"""

from __future__ import annotations

from fastapi import APIRouter, status

from cloud.api.deps import AdminDep, ConnDep, KekDep
from cloud.api.models import DeviceCreate, DeviceCreated, FarmCreate, GatewayCreate, GatewayCreated, TenantCreate
from cloud.broker_acl import new_password
from cloud.keys import new_key
from cloud.store import registry

router = APIRouter(prefix="/tenants", tags=["registry"], dependencies=[AdminDep])
CREATED = status.HTTP_201_CREATED


@router.post("", status_code=CREATED, response_model=registry.Tenant, summary="Register a tenant")
def create_tenant(body: TenantCreate, conn: ConnDep) -> registry.Tenant:
    return registry.register_tenant(conn, body.id, body.name)


@router.get("", response_model=list[registry.Tenant], summary="List tenants")
def read_tenants(conn: ConnDep) -> list[registry.Tenant]:
    return registry.list_tenants(conn)


@router.get("/{tenant}", response_model=registry.Tenant, summary="One tenant")
def read_tenant(tenant: str, conn: ConnDep) -> registry.Tenant:
    return registry.get_tenant(conn, tenant)


@router.post("/{tenant}/farms", status_code=CREATED, response_model=registry.Farm, summary="Register a farm")
def create_farm(tenant: str, body: FarmCreate, conn: ConnDep) -> registry.Farm:
    return registry.register_farm(conn, tenant, body.id, body.name, latitude=body.latitude, longitude=body.longitude,
                                  area_ha=body.area_ha, crop=body.crop)


@router.get("/{tenant}/farms", response_model=list[registry.Farm], summary="List a tenant's farms")
def read_farms(tenant: str, conn: ConnDep) -> list[registry.Farm]:
    return registry.list_farms(conn, tenant)


@router.get("/{tenant}/farms/{farm_id}", response_model=registry.Farm, summary="One farm")
def read_farm(tenant: str, farm_id: str, conn: ConnDep) -> registry.Farm:
    return registry.get_farm(conn, tenant, farm_id)


@router.post("/{tenant}/gateways", status_code=CREATED, response_model=GatewayCreated,
             summary="Register a gateway: its key and broker password are returned this once")
def create_gateway(tenant: str, body: GatewayCreate, conn: ConnDep, kek: KekDep) -> GatewayCreated:
    key = bytes.fromhex(body.key_hex) if body.key_hex else new_key()
    password = body.mqtt_password or new_password()
    gateway = registry.register_gateway(conn, tenant, body.id, body.farm_id, key, kek, body.mqtt_username, password,
                                        name=body.name)
    assert gateway.key_epoch is not None  # just registered with its first key
    return GatewayCreated(gateway=gateway, key_epoch=gateway.key_epoch,
                          key_hex=key.hex(), mqtt_password=password)


@router.get("/{tenant}/gateways", response_model=list[registry.Gateway], summary="List gateways with last-seen")
def read_gateways(tenant: str, conn: ConnDep, farm_id: str | None = None) -> list[registry.Gateway]:
    return registry.list_gateways(conn, tenant, farm_id)


@router.get("/{tenant}/gateways/{gateway_id}", response_model=registry.Gateway, summary="One gateway")
def read_gateway(tenant: str, gateway_id: str, conn: ConnDep) -> registry.Gateway:
    return registry.get_gateway(conn, tenant, gateway_id)


@router.post("/{tenant}/devices", status_code=CREATED, response_model=DeviceCreated,
             summary="Register a sensor node (its key is returned this once) or a bus device behind a gateway")
def create_device(tenant: str, body: DeviceCreate, conn: ConnDep, kek: KekDep) -> DeviceCreated:
    key = None
    if body.kind == "node":
        key = bytes.fromhex(body.key_hex) if body.key_hex else new_key()
    elif body.key_hex is not None:
        raise registry.Invalid(f"device {body.id!r}: a bus device is attested by its gateway and takes no key")
    device = registry.register_device(conn, tenant, body.id, body.kind, body.farm_id, body.gateway_id, body.spec,
                                      key, kek)
    return DeviceCreated(device=device, key_epoch=device.key_epoch,
                         key_hex=key.hex() if key is not None else None)


@router.get("/{tenant}/devices", response_model=list[registry.Device], summary="List devices with last-seen")
def read_devices(tenant: str, conn: ConnDep, farm_id: str | None = None,
                 gateway_id: str | None = None) -> list[registry.Device]:
    return registry.list_devices(conn, tenant, farm_id, gateway_id)


@router.get("/{tenant}/devices/{device_id}", response_model=registry.Device, summary="One device")
def read_device(tenant: str, device_id: str, conn: ConnDep) -> registry.Device:
    return registry.get_device(conn, tenant, device_id)
