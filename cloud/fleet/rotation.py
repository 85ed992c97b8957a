"""Routine credential rotation: node keys in batches, and a gateway's broker password.

Node keys (``fieldtrust cloud rotate-device-keys``) rotate like a campaign in two steps, because a
node learns its new key only when a technician provisions it (the key never travels over the air):

1. :func:`rotate_node_keys` adds the next key epoch for every node that matches (spec, farm), records a
   ``rekeyed`` maintenance event for each, and returns the new keys for the provisioning tool.  The
   old epochs stay valid: frames signed before the visit are still in outboxes.
2. :func:`revoke_superseded` revokes, for every node already heard signing with its newest epoch,
   every older epoch, so a stolen old key stops verifying; nodes not yet visited keep theirs.

A gateway's broker password (``fieldtrust cloud rotate-gateway-credential``) is one per username in
Mosquitto's password file, so there is no overlap: the cut-over is (a) store the new password here,
(b) put it in the gateway's configuration, (c) write the broker files and reload the broker (``fieldtrust
cloud broker-config`` + SIGHUP).  Between (c) and the gateway's restart with the new password the
gateway cannot connect; its outbox keeps everything and re-sends it (docs/deployment.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from cloud.broker_acl import new_password
from cloud.keys import new_key
from cloud.store import device_events, registry


@dataclass(frozen=True)
class RotatedKey:
    device_id: str
    epoch: int
    key: bytes


def rotate_node_keys(conn: psycopg.Connection, tenant: str, kek: bytes, by: str, *, spec: str | None = None,
                     farm_id: str | None = None) -> list[RotatedKey]:
    """A new key epoch for each matching node of ``tenant`` (one transaction)."""
    with conn.transaction():
        registry.get_tenant(conn, tenant)
        nodes = [r[0] for r in conn.execute(
            "SELECT id FROM ft.devices WHERE tenant_id = %(t)s AND kind = 'node'"
            " AND (%(spec)s::text IS NULL OR spec_key = %(spec)s OR spec_key LIKE %(spec)s || '@%%')"
            " AND (%(farm)s::text IS NULL OR farm_id = %(farm)s) ORDER BY id",
            {"t": tenant, "spec": spec, "farm": farm_id})]
        rotated = []
        for node in nodes:
            key = new_key()
            epoch = registry.rotate_key(conn, tenant, "device", node, key, kek)
            device_events.record_event(conn, tenant, node, "rekeyed", {"epoch": epoch, "routine": True}, by)
            rotated.append(RotatedKey(node, epoch, key))
    return rotated


def revoke_superseded(conn: psycopg.Connection, tenant: str) -> dict[str, list[int]]:
    """Revoke the older epochs of every node of ``tenant`` heard signing with its newest one; what was revoked."""
    with conn.transaction():
        rows = conn.execute(
            "WITH newest AS (SELECT owner_id, max(epoch) AS epoch FROM ft.keys WHERE tenant_id = %s"
            "   AND owner_kind = 'device' AND revoked_at IS NULL GROUP BY owner_id)"
            " SELECT k.owner_id, array_agg(k.epoch ORDER BY k.epoch) FROM ft.keys k JOIN newest n"
            "   ON n.owner_id = k.owner_id WHERE k.owner_kind = 'device' AND k.revoked_at IS NULL"
            "   AND k.epoch < n.epoch AND EXISTS (SELECT 1 FROM ft.messages m WHERE m.device_id = n.owner_id"
            "   AND m.epoch = n.epoch) GROUP BY k.owner_id ORDER BY k.owner_id", (tenant,)).fetchall()
        for device, epochs in rows:
            for epoch in epochs:
                registry.revoke_key(conn, tenant, "device", device, epoch)
    return {device: list(epochs) for device, epochs in rows}


def rotate_gateway_password(conn: psycopg.Connection, tenant: str, gateway_id: str,
                            password: str | None = None) -> tuple[registry.Gateway, str]:
    """Store a new broker password for the gateway (generated unless given); the gateway and the password."""
    secret = password or new_password()
    return registry.set_gateway_password(conn, tenant, gateway_id, secret), secret
