"""Devices' maintenance history: record an event, list them, replace a node by another.

``POST .../devices/{old}/replace`` is how a technician swaps a broken node: the new node (already
registered, e.g. by ``fieldtrust node provision``) takes the old one's farm, field, install place and
gateway, the old node's key is revoked (unless ``revoke_old_key`` is false), and both get a ``replaced``
event, which the credit trust checks read as a registered maintenance.

Writing needs the ``devices:admin`` scope (technicians, ops, platform admins), reading the history
``registry:read``; events are recorded as the caller (``Principal.id``: the user, the API key, or
"admin" for the platform admin's token), in the caller's tenant scope.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from cloud.api.deps import TenantConnDep, require
from cloud.api.models import Ident
from cloud.auth.principal import Principal
from cloud.store import device_events, registry
from cloud.store.device_events import DeviceEvent

router = APIRouter(prefix="/tenants/{tenant}/devices/{device_id}", tags=["maintenance"])
Technician = Annotated[Principal, require("devices:admin")]
Reader = Annotated[Principal, require("registry:read")]


class EventCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID | None = Field(default=None, description="chosen by the client so a retry is recorded once")
    kind: Literal["provisioned", "rekeyed", "moved"] = Field(
        description="'replaced' events are made by the replace endpoint only")
    detail: dict[str, Any] = Field(default_factory=dict, description="what happened (board id, firmware, ...)")


class ReplaceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    new_device: Ident = Field(description="the node that takes the old one's place (registered already)")
    note: str = Field(default="", max_length=500, description="why, for the history (e.g. 'probe cable cut')")
    revoke_old_key: bool = Field(default=True, description="revoke the old node's keys (its messages still waiting "
                                 "at the gateway are then refused); false keeps them valid")


class Replaced(BaseModel):
    """The new node in its new place, and the two events recorded."""

    device: registry.Device
    old_event: DeviceEvent
    new_event: DeviceEvent


@router.post("/events", status_code=status.HTTP_201_CREATED, response_model=DeviceEvent,
             summary="Record a maintenance event (a retry with the same id is recorded once)")
def create_event(tenant: str, device_id: str, body: EventCreate, principal: Technician, conn: TenantConnDep
                 ) -> DeviceEvent:
    return device_events.record_event(conn, tenant, device_id, body.kind, body.detail, principal.id, body.id)


@router.get("/events", response_model=list[DeviceEvent], summary="A device's maintenance history, oldest first")
def read_events(tenant: str, device_id: str, principal: Reader, conn: TenantConnDep) -> list[DeviceEvent]:
    return device_events.list_events(conn, tenant, device_id)


@router.post("/replace", response_model=Replaced,
             summary="Replace a node: the new one takes its farm, field, place, gateway and the series' continuity")
def replace(tenant: str, device_id: str, body: ReplaceRequest, principal: Technician, conn: TenantConnDep
            ) -> Replaced:
    old_event, new_event = device_events.replace_device(conn, tenant, device_id, body.new_device, principal.id,
                                                        body.note, body.revoke_old_key)
    return Replaced(device=registry.get_device(conn, tenant, body.new_device), old_event=old_event,
                    new_event=new_event)
