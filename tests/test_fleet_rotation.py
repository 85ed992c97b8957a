"""Routine rotation: node keys in a batch (new epochs, old ones revoked once the node signs with the new), and a
gateway's broker password."""

from __future__ import annotations

import os

import psycopg
import pytest

from cloud.fleet import rotation
from cloud.store import registry
from tests.support.app_db import app_connect
from tests.support.ingest import KEK, NODE_SPEC, register_site


@pytest.fixture
def fresh_db(module_app_db) -> str:
    return module_app_db.owner_url


def test_node_keys_rotate_then_old_epochs_are_revoked(fresh_db: str) -> None:
    site = register_site(fresh_db, bus_devices=1)
    other = f"{site.node}-b"
    with psycopg.connect(fresh_db) as conn:
        registry.register_device(conn, site.tenant, other, "node", site.farm, site.gw, NODE_SPEC, os.urandom(32), KEK)
        conn.commit()
    with app_connect(fresh_db) as conn:
        rotated = rotation.rotate_node_keys(conn, site.tenant, KEK, "cli", spec=NODE_SPEC.split("@")[0])
        conn.commit()
    assert [(r.device_id, r.epoch) for r in rotated] == sorted([(site.node, 2), (other, 2)])
    assert all(len(r.key) == 32 for r in rotated)
    with app_connect(fresh_db) as conn:
        assert registry.key_for(conn, "device", site.node, 2, KEK) == dict(
            (r.device_id, r.key) for r in rotated)[site.node]
        assert registry.key_for(conn, "device", site.node, 1, KEK) is not None  # the old epoch still verifies
        kinds = [r[0] for r in conn.execute("SELECT kind FROM ft.device_events WHERE device_id = %s", (site.node,))]
        assert kinds == ["rekeyed"]
    with psycopg.connect(fresh_db) as conn:  # the provisioned node has signed with its new epoch; the other not yet
        conn.execute("INSERT INTO ft.messages (device_id, epoch, seq, tenant_id, digest, trust)"
                     " VALUES (%s, 2, 0, %s, %s, 1)", (site.node, site.tenant, b"\0" * 32))
        conn.commit()
    with app_connect(fresh_db) as conn:
        assert rotation.revoke_superseded(conn, site.tenant) == {site.node: [1]}
        conn.commit()
        assert registry.key_for(conn, "device", site.node, 1, KEK) is None
        assert registry.key_for(conn, "device", other, 1, KEK) is not None


def test_gateway_password(fresh_db: str) -> None:
    site = register_site(fresh_db, bus_devices=0)
    with app_connect(fresh_db) as conn:
        gateway, password = rotation.rotate_gateway_password(conn, site.tenant, site.gw)
        conn.commit()
        stored = conn.execute("SELECT mqtt_password_hash FROM ft.gateways WHERE id = %s", (site.gw,)).fetchone()
    assert gateway.mqtt_username == site.gw and len(password) >= 24 and stored[0].startswith("$7$")
    with app_connect(fresh_db) as conn, pytest.raises(registry.NotFound):
        rotation.rotate_gateway_password(conn, site.tenant, "gw-none")
