"""Devices' maintenance history (``ft.device_events``): provisioned, replaced, rekeyed, moved.

The credit trust checks read this history: a step in a series next to a ``replaced`` event is a
registered maintenance, not a tampered sensor.  Events are only ever added.  A client that may
retry (the provisioning tool on a flaky link) sends its own event id, and a retry with the same id
and content is answered with the first row instead of a second event.

:func:`replace_device` moves a node's place to its replacement: the new node takes the old one's
farm, field, install place (note and coordinates) and gateway, is installed now, and both get a
``replaced`` event naming the other, so a series can be followed across the swap
(``detail.replaced_by`` on the old device, ``detail.replaces`` on the new one).  The old node's keys
are revoked by default: the board taken out of the field (and perhaps reused, lost or sold) can no
longer sign readings for a place it has left.  The price is that its messages still waiting at the
gateway are refused as ``revoked_key``; a caller who knows the gateway still holds some keeps the
key (``revoke_old_key=False``) and revokes it once they are in.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from cloud.store.db import ROW_SCHEMA
from cloud.store.registry import Conflict, Invalid, NotFound, get_device

EVENT_KINDS = ("provisioned", "replaced", "rekeyed", "moved")
#: what a replacement node takes over from the node it replaces (``ft.devices`` columns)
PLACE_COLUMNS = ("farm_id", "field_id", "gateway_id", "install_note", "install_latitude", "install_longitude")


@dataclass(frozen=True)
class DeviceEvent:
    """One maintenance event of a device."""

    __pydantic_config__ = ROW_SCHEMA
    id: uuid.UUID
    tenant_id: str
    device_id: str
    kind: str
    """provisioned, replaced, rekeyed or moved"""
    detail: dict[str, Any]
    at: datetime
    by: str
    """who recorded it: the caller's id (a user, an API key, "admin" for the platform admin's token), or a service"""


_EVENT = "SELECT id, tenant_id, device_id, kind, detail, at, by FROM ft.device_events"


def record_event(
    conn: psycopg.Connection, tenant: str, device_id: str, kind: str, detail: dict[str, Any], by: str,
    event_id: uuid.UUID | None = None,
) -> DeviceEvent:
    """Add an event; with ``event_id`` already recorded (a retry) the first row is returned, or
    Conflict when that id was used for a different event."""
    if kind not in EVENT_KINDS:
        raise Invalid(f"event kind must be one of {', '.join(EVENT_KINDS)}; got {kind!r}")
    ident = event_id or uuid.uuid4()
    with conn.transaction():
        get_device(conn, tenant, device_id)
        with conn.cursor(row_factory=class_row(DeviceEvent)) as cur:
            cur.execute(
                "INSERT INTO ft.device_events (id, tenant_id, device_id, kind, detail, by)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING"
                " RETURNING id, tenant_id, device_id, kind, detail, at, by",
                (ident, tenant, device_id, kind, Jsonb(detail), by),
            )
            row = cur.fetchone()
            if row is not None:
                return row
            cur.execute(_EVENT + " WHERE id = %s", (ident,))
            first = cur.fetchone()
    if first is None or (first.tenant_id, first.device_id, first.kind, first.detail) != (
            tenant, device_id, kind, detail):
        raise Conflict(f"event id {ident} is already used by another event")
    return first


def list_events(conn: psycopg.Connection, tenant: str, device_id: str) -> list[DeviceEvent]:
    """A device's events, oldest first."""
    get_device(conn, tenant, device_id)
    with conn.cursor(row_factory=class_row(DeviceEvent)) as cur:
        return cur.execute(_EVENT + " WHERE tenant_id = %s AND device_id = %s ORDER BY at, id",
                           (tenant, device_id)).fetchall()


def replace_device(
    conn: psycopg.Connection, tenant: str, old_id: str, new_id: str, by: str, note: str = "",
    revoke_old_key: bool = True,
) -> tuple[DeviceEvent, DeviceEvent]:
    """The node ``new_id`` takes ``old_id``'s place (:data:`PLACE_COLUMNS`) and gateway; both get a
    ``replaced`` event, and the old node's key epochs are revoked unless ``revoke_old_key`` is False
    (``detail.revoked_epochs`` on the old node's event).

    Both must be nodes of ``tenant``; the old one may be replaced once, and the new one must not
    have been replaced or have replaced another already.
    """
    if old_id == new_id:
        raise Invalid(f"device {old_id!r} cannot replace itself")
    with conn.transaction():
        rows = conn.execute(
            f"SELECT id, kind, {', '.join(PLACE_COLUMNS)} FROM ft.devices WHERE tenant_id = %s AND id = ANY(%s)"
            " FOR UPDATE", (tenant, [old_id, new_id]),
        ).fetchall()
        found = {r[0]: r for r in rows}
        for ident in (old_id, new_id):
            if ident not in found:
                raise NotFound(f"device {ident!r} not found in tenant {tenant!r}")
            if found[ident][1] != "node":
                raise Invalid(f"device {ident!r} is a bus device; only sensor nodes are replaced this way")
        taken = conn.execute(
            "SELECT device_id, detail FROM ft.device_events WHERE tenant_id = %s AND kind = 'replaced'"
            " AND device_id = ANY(%s)", (tenant, [old_id, new_id])).fetchall()
        for device_id, detail in taken:
            if device_id == old_id and "replaced_by" in detail:
                raise Conflict(f"device {old_id!r} was already replaced by {detail['replaced_by']!r}")
            if device_id == new_id:
                other = detail.get("replaces") or detail.get("replaced_by")
                raise Conflict(f"device {new_id!r} already took part in a replacement (with {other!r})")
        place = dict(zip(PLACE_COLUMNS, found[old_id][2:], strict=True))
        conn.execute(f"UPDATE ft.devices SET {', '.join(f'{c} = %s' for c in PLACE_COLUMNS)}, installed_at = now()"
                     " WHERE tenant_id = %s AND id = %s", (*place.values(), tenant, new_id))
        revoked = []
        if revoke_old_key:
            revoked = [r[0] for r in conn.execute(
                "UPDATE ft.keys SET revoked_at = now() WHERE tenant_id = %s AND owner_kind = 'device'"
                " AND owner_id = %s AND revoked_at IS NULL RETURNING epoch", (tenant, old_id)).fetchall()]
        shown = {"farm_id": place["farm_id"], "field_id": place["field_id"], "gateway_id": place["gateway_id"]}
        shown |= {"note": note} if note else {}
        old_event = record_event(conn, tenant, old_id, "replaced",
                                 {"replaced_by": new_id} | shown | {"revoked_epochs": sorted(revoked)}, by)
        new_event = record_event(conn, tenant, new_id, "replaced", {"replaces": old_id} | shown, by)
    return old_event, new_event
