"""Key epochs of gateways and nodes: list, rotate (a new epoch, its key returned once), revoke."""

from __future__ import annotations

from enum import StrEnum

from fastapi import APIRouter, status

from cloud.api.deps import AdminDep, ConnDep, KekDep
from cloud.api.models import KeyRotate, KeyRotated
from cloud.keys import new_key
from cloud.store import registry

router = APIRouter(prefix="/tenants/{tenant}", tags=["keys"], dependencies=[AdminDep])


class Owner(StrEnum):
    gateways = "gateways"
    devices = "devices"

    @property
    def kind(self) -> str:
        return "gateway" if self is Owner.gateways else "device"


@router.get("/{owner}/{owner_id}/keys", response_model=list[registry.KeyEpoch],
            summary="Key epochs (never the keys)")
def read_keys(tenant: str, owner: Owner, owner_id: str, conn: ConnDep) -> list[registry.KeyEpoch]:
    (registry.get_gateway if owner is Owner.gateways else registry.get_device)(conn, tenant, owner_id)
    return registry.list_keys(conn, tenant, owner.kind, owner_id)


@router.post("/{owner}/{owner_id}/keys", status_code=status.HTTP_201_CREATED, response_model=KeyRotated,
             summary="Rotate: add the next key epoch; older epochs stay valid until revoked")
def rotate_key(tenant: str, owner: Owner, owner_id: str, body: KeyRotate, conn: ConnDep, kek: KekDep) -> KeyRotated:
    key = bytes.fromhex(body.key_hex) if body.key_hex else new_key()
    epoch = registry.rotate_key(conn, tenant, owner.kind, owner_id, key, kek)
    return KeyRotated(owner_kind=owner.kind, owner_id=owner_id, key_epoch=epoch, key_hex=key.hex())


@router.delete("/{owner}/{owner_id}/keys/{epoch}", response_model=registry.KeyEpoch, summary="Revoke one key epoch")
def revoke_key(tenant: str, owner: Owner, owner_id: str, epoch: int, conn: ConnDep) -> registry.KeyEpoch:
    return registry.revoke_key(conn, tenant, owner.kind, owner_id, epoch)
