"""The registry on a real PostgreSQL: tenancy, keys encrypted at rest, rotation and revocation."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from cloud import keys
from cloud.store import registry
from fieldtrust import processes

KEK = bytes(range(32))
OTHER_KEK = bytes(range(1, 33))


@pytest.fixture
def conn(fresh_db: str):
    with psycopg.connect(fresh_db, autocommit=True) as connection:
        yield connection


@pytest.fixture
def farm(conn: psycopg.Connection) -> registry.Farm:
    registry.register_tenant(conn, "coop-a", "Cooperative A")
    registry.register_tenant(conn, "coop-b", "Cooperative B")
    registry.register_farm(conn, "coop-b", "farm-b", "B's farm")
    return registry.register_farm(conn, "coop-a", "farm-a", "A's farm", latitude=-0.1, longitude=34.7, area_ha=2.5)


# -- cloud.keys ----------------------------------------------------------------------------------


def test_key_blob_round_trips_and_is_bound_to_its_owner_and_epoch() -> None:
    key = keys.new_key()
    blob = keys.encrypt_key(KEK, "gateway", "gw-1", 1, key)
    assert key not in blob and len(blob) == keys.NONCE_BYTES + len(key) + keys.TAG_BYTES
    assert keys.decrypt_key(KEK, "gateway", "gw-1", 1, blob) == key
    for kind, owner, epoch, kek in [("gateway", "gw-1", 2, KEK), ("gateway", "gw-2", 1, KEK),
                                    ("device", "gw-1", 1, KEK), ("gateway", "gw-1", 1, OTHER_KEK)]:
        with pytest.raises(keys.KeyCryptoError, match="cannot decrypt"):
            keys.decrypt_key(kek, kind, owner, epoch, blob)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(keys.KeyCryptoError, match="altered"):
        keys.decrypt_key(KEK, "gateway", "gw-1", 1, tampered)
    assert keys.encrypt_key(KEK, "gateway", "gw-1", 1, key) != blob  # a fresh nonce each time


@pytest.mark.parametrize(
    ("kek", "kind", "epoch", "key", "message"),
    [(b"short", "gateway", 1, bytes(32), "must be 32 bytes"), (KEK, "user", 1, bytes(32), "owner kind"),
     (KEK, "device", -1, bytes(32), "epoch must be >= 0"), (KEK, "device", 1, bytes(8), "at least 16 bytes")],
)
def test_key_encryption_refuses_bad_input_by_name(kek: bytes, kind: str, epoch: int, key: bytes, message: str) -> None:
    with pytest.raises(keys.KeyCryptoError, match=message):
        keys.encrypt_key(kek, kind, "dev-1", epoch, key)


# -- registration and listing ----------------------------------------------------------------------


def test_register_and_list_with_last_seen(conn: psycopg.Connection, farm: registry.Farm) -> None:
    gw_key, node_key = keys.new_key(), keys.new_key()
    gw = registry.register_gateway(conn, "coop-a", "gw-1", "farm-a", gw_key, KEK, None, "pw-1", name="shed")
    assert (gw.tenant_id, gw.farm_id, gw.mqtt_username, gw.key_epoch, gw.last_seen_at) == (
        "coop-a", "farm-a", "gw-1", registry.FIRST_EPOCH, None)
    soil = registry.register_device(conn, "coop-a", "soil-1", "bus", None, "gw-1", "jxct-soil-7in1", None, KEK)
    assert soil.farm_id == "farm-a"  # a bus device is on its gateway's farm
    assert soil.spec_key is not None and soil.spec_key.startswith("jxct-soil-7in1@")
    assert soil.key_epoch is None
    node = registry.register_device(conn, "coop-a", "node-1", "node", "farm-a", None, None, node_key, KEK)
    assert node.key_epoch == registry.FIRST_EPOCH

    conn.execute("UPDATE ft.devices SET last_seen_at = '2024-05-01T10:00:00Z' WHERE id = 'soil-1'")
    conn.execute("UPDATE ft.gateways SET last_seen_at = '2024-05-01T10:00:05Z' WHERE id = 'gw-1'")
    devices = registry.list_devices(conn, "coop-a")
    assert [(d.id, d.last_seen_at is not None) for d in devices] == [("node-1", False), ("soil-1", True)]
    assert [d.id for d in registry.list_devices(conn, "coop-a", gateway_id="gw-1")] == ["soil-1"]
    [listed_gw] = registry.list_gateways(conn, "coop-a", farm_id="farm-a")
    assert listed_gw.last_seen_at is not None and listed_gw.last_seen_at.isoformat() == "2024-05-01T10:00:05+00:00"
    assert registry.list_gateways(conn, "coop-b") == []
    assert [t.id for t in registry.list_tenants(conn)] == ["coop-a", "coop-b"]
    assert registry.get_farm(conn, "coop-a", "farm-a") == farm

    assert registry.key_for(conn, "gateway", "gw-1", 1, KEK) == gw_key
    assert registry.key_for(conn, "device", "node-1", 1, KEK, tenant="coop-a") == node_key
    assert registry.key_for(conn, "device", "node-1", 1, KEK, tenant="coop-b") is None
    assert registry.key_for(conn, "device", "node-1", 2, KEK) is None
    assert registry.key_for(conn, "device", "soil-1", 1, KEK) is None
    with pytest.raises(keys.KeyCryptoError, match="wrong key-encryption key"):
        registry.key_for(conn, "gateway", "gw-1", 1, OTHER_KEK)


def test_rotation_adds_an_epoch_and_revocation_retires_one(conn: psycopg.Connection, farm: registry.Farm) -> None:
    first, second = keys.new_key(), keys.new_key()
    registry.register_gateway(conn, "coop-a", "gw-1", "farm-a", first, KEK, None, None)
    assert registry.rotate_key(conn, "coop-a", "gateway", "gw-1", second, KEK) == 2
    assert registry.key_for(conn, "gateway", "gw-1", 1, KEK) == first  # in-flight frames still verify
    assert registry.key_for(conn, "gateway", "gw-1", 2, KEK) == second
    revoked = registry.revoke_key(conn, "coop-a", "gateway", "gw-1", 1)
    assert revoked.revoked_at is not None
    assert registry.revoke_key(conn, "coop-a", "gateway", "gw-1", 1).revoked_at == revoked.revoked_at
    assert registry.key_for(conn, "gateway", "gw-1", 1, KEK) is None
    assert registry.get_gateway(conn, "coop-a", "gw-1").key_epoch == 2
    assert [(k.epoch, k.revoked_at is None) for k in registry.list_keys(conn, "coop-a", "gateway", "gw-1")] == [
        (1, False), (2, True)]
    with pytest.raises(registry.NotFound, match="no key epoch 9"):
        registry.revoke_key(conn, "coop-a", "gateway", "gw-1", 9)
    with pytest.raises(registry.NotFound, match="not found in tenant 'coop-b'"):
        registry.rotate_key(conn, "coop-b", "gateway", "gw-1", second, KEK)
    registry.register_device(conn, "coop-a", "soil-1", "bus", None, "gw-1", "jxct-soil-7in1", None, KEK)
    with pytest.raises(registry.Invalid, match="bus device"):
        registry.rotate_key(conn, "coop-a", "device", "soil-1", second, KEK)


def test_a_key_blob_moved_to_another_row_does_not_decrypt(conn: psycopg.Connection, farm: registry.Farm) -> None:
    registry.register_device(conn, "coop-a", "node-1", "node", "farm-a", None, None, keys.new_key(), KEK)
    registry.register_device(conn, "coop-a", "node-2", "node", "farm-a", None, None, keys.new_key(), KEK)
    conn.execute("UPDATE ft.keys SET key_enc = (SELECT key_enc FROM ft.keys WHERE owner_id = 'node-1')"
                 " WHERE owner_id = 'node-2'")
    with pytest.raises(keys.KeyCryptoError, match="another owner"):
        registry.key_for(conn, "device", "node-2", 1, KEK)


def test_references_across_tenants_are_refused(conn: psycopg.Connection, farm: registry.Farm) -> None:
    registry.register_gateway(conn, "coop-b", "gw-b", "farm-b", keys.new_key(), KEK, None, None)
    with pytest.raises(registry.NotFound, match="farm 'farm-b' not found in tenant 'coop-a'"):
        registry.register_gateway(conn, "coop-a", "gw-a", "farm-b", keys.new_key(), KEK, None, None)
    with pytest.raises(registry.NotFound, match="gateway 'gw-b' not found in tenant 'coop-a'"):
        registry.register_device(conn, "coop-a", "soil-1", "bus", "farm-a", "gw-b", "jxct-soil-7in1", None, KEK)
    with pytest.raises(registry.NotFound, match="gateway 'gw-b' not found in tenant 'coop-a'"):
        registry.get_gateway(conn, "coop-a", "gw-b")
    with pytest.raises(registry.NotFound, match="tenant 'nobody' not found"):
        registry.register_farm(conn, "nobody", "farm-x", "x")
    assert conn.execute("SELECT count(*) FROM ft.gateways WHERE id = 'gw-a'").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM ft.keys WHERE owner_id = 'gw-a'").fetchone() == (0,)


def test_conflicts_and_invalid_registrations_name_the_row(conn: psycopg.Connection, farm: registry.Farm) -> None:
    registry.register_gateway(conn, "coop-b", "gw-1", None, keys.new_key(), KEK, "shared-name", "pw")
    with pytest.raises(registry.Conflict, match="gateway 'gw-1' already exists"):
        registry.register_gateway(conn, "coop-a", "gw-1", None, keys.new_key(), KEK, None, None)
    with pytest.raises(registry.Conflict, match="'shared-name' is already used by gateway gw-1"):
        registry.register_gateway(conn, "coop-a", "gw-2", None, keys.new_key(), KEK, "shared-name", "pw")
    with pytest.raises(registry.Conflict, match="tenant 'coop-a' already exists"):
        registry.register_tenant(conn, "coop-a", "again")
    with pytest.raises(registry.Conflict, match="belongs to a gateway"):
        registry.register_service_account(conn, "shared-name", "pw")
    with pytest.raises(registry.Invalid, match=r"farm 'farm-x': latitude is not allowed \(constraint farms_lat"):
        registry.register_farm(conn, "coop-a", "farm-x", "x", latitude=123.0)
    cases = [
        (dict(device_id="bad id/+"), "device id must be"),
        (dict(kind="node", key=None), "needs a key"),
        (dict(kind="bus", key=keys.new_key(), gateway_id="gw-1"), "takes no key"),
        (dict(kind="bus", key=None, gateway_id=None), "needs its gateway and its spec"),
        (dict(kind="sensor"), "kind must be 'node' or 'bus'"),
        (dict(spec_key="no-such-model"), "unknown sensor model"),
        (dict(spec_key="../etc/passwd.yaml"), "not a path"),
    ]
    for change, message in cases:
        args = dict(device_id="dev-1", kind="node", farm_id="farm-a", gateway_id=None, spec_key=None,
                    key=keys.new_key()) | change
        with pytest.raises(registry.Invalid, match=message):
            registry.register_device(conn, "coop-a", kek=KEK, **args)
    assert conn.execute("SELECT count(*) FROM ft.devices").fetchone() == (0,)


# -- the key cache ---------------------------------------------------------------------------------


def test_key_cache_serves_from_memory_until_its_ttl(conn: psycopg.Connection, farm: registry.Farm) -> None:
    now = [0.0]
    cache = registry.KeyCache(KEK, ttl_s=60, miss_ttl_s=5, max_entries=2, clock=lambda: now[0])
    key = keys.new_key()
    registry.register_device(conn, "coop-a", "node-1", "node", "farm-a", None, None, key, KEK)
    for _ in range(3):
        assert cache.get(conn, "device", "node-1", 1) == key
    assert cache.get(conn, "device", "node-9", 1) is None
    assert cache.get(conn, "device", "node-9", 1) is None
    assert cache.lookups == 2
    registry.revoke_key(conn, "coop-a", "device", "node-1", 1)
    assert cache.get(conn, "device", "node-1", 1) == key  # within the TTL: still the cached answer
    now[0] = 61
    assert cache.get(conn, "device", "node-1", 1) is None
    registry.register_device(conn, "coop-a", "node-9", "node", "farm-a", None, None, key, KEK)
    assert cache.get(conn, "device", "node-9", 1) == key  # the miss expired after 5 s
    cache.forget("device", "node-9")
    cache.get(conn, "device", "node-9", 1)
    cache.get(conn, "gateway", "gw-x", 1)  # a third entry evicts the oldest (max_entries=2)
    assert cache.lookups == 6
    assert cache.get(conn, "device", "node-1", 1) is None and cache.lookups == 7


# -- nothing secret in a dump ----------------------------------------------------------------------


def _pg_dump_matching(conn: psycopg.Connection) -> str:
    """The pg_dump of the server's major version (an older or newer one refuses or misreads)."""
    major = conn.info.server_version // 10000
    for candidate in (f"/usr/lib/postgresql/{major}/bin/pg_dump", shutil.which("pg_dump")):
        if candidate and Path(candidate).exists():
            proc = processes.spawn([candidate, "--version"], stdout=subprocess.PIPE)
            out, _ = proc.communicate(timeout=10)
            if re.search(rf"\b{major}\.\d+", out.decode()):
                return candidate
    pytest.skip(f"no pg_dump of PostgreSQL {major} on this machine")


def test_a_database_dump_holds_no_key_and_no_password(fresh_db: str, conn: psycopg.Connection,
                                                      farm: registry.Farm) -> None:
    secrets_ = [keys.new_key() for _ in range(4)]
    passwords = ["gw-password-1-Zq8", "ingest-password-Xk2"]
    registry.register_gateway(conn, "coop-a", "gw-1", "farm-a", secrets_[0], KEK, None, passwords[0])
    registry.rotate_key(conn, "coop-a", "gateway", "gw-1", secrets_[1], KEK)
    registry.register_device(conn, "coop-a", "node-1", "node", "farm-a", None, None, secrets_[2], KEK)
    registry.register_device(conn, "coop-b", "node-2", "node", "farm-b", None, None, secrets_[3], KEK)
    registry.register_service_account(conn, "ingest", passwords[1])
    proc = processes.spawn([_pg_dump_matching(conn), "--data-only", "--dbname", fresh_db],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dump, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert b"gw-1" in dump and dump.count(b"\\x") >= 4  # the rows and their encrypted blobs are there
    lowered = dump.lower()
    for key in secrets_:
        for form in (key, key.hex().encode(), base64.b64encode(key), base64.urlsafe_b64encode(key),
                     base64.b64encode(key).rstrip(b"=")):
            assert form not in dump and form.lower() not in lowered
    for password in passwords:
        assert password.encode() not in dump


# -- the `fieldtrust cloud` commands --------------------------------------------------------------


def test_cli_registers_and_prints_each_secret_once(fresh_db: str, conn: psycopg.Connection) -> None:
    from typer.testing import CliRunner

    from fieldtrust.cli.main import app

    env = {"FIELDTRUST_DATABASE_URL": fresh_db, "FIELDTRUST_KEK": KEK.hex(), "FIELDTRUST_DEV_MODE": "false"}
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, ["cloud", *args], env=env)
        assert result.exit_code == code, result.output
        return result.output

    run("register-tenant", "coop-cli", "--name", "CLI cooperative")
    run("register-farm", "coop-cli", "farm-1", "--name", "Hill", "--lat", "-1.2", "--crop", "tea")
    out = run("register-gateway", "coop-cli", "gw-cli", "--farm", "farm-1")
    key_hex = re.search(r"gateway key \(hex, for gateway.key_file\): ([0-9a-f]{64})", out)
    password = re.search(r"uplink.broker.password: (\S+)", out)
    assert key_hex and password and "gateway.key_epoch: 1" in out
    assert registry.key_for(conn, "gateway", "gw-cli", 1, KEK) == bytes.fromhex(key_hex[1])
    stored_hash = conn.execute("SELECT mqtt_password_hash FROM ft.gateways WHERE id = 'gw-cli'").fetchone()
    assert stored_hash is not None and stored_hash[0].startswith("$7$") and password[1] not in stored_hash[0]

    node_out = run("register-device", "coop-cli", "node-cli", "--kind", "node", "--farm", "farm-1")
    node_key = re.search(r"key \(hex\): ([0-9a-f]{64})", node_out)
    assert node_key and registry.key_for(conn, "device", "node-cli", 1, KEK) == bytes.fromhex(node_key[1])
    run("register-device", "coop-cli", "soil-cli", "--kind", "bus", "--gateway", "gw-cli", "--spec", "jxct-soil-7in1")
    rotated = re.search(r"key \(hex\): ([0-9a-f]{64})", run("rotate-key", "coop-cli", "gateway", "gw-cli"))
    assert rotated and registry.key_for(conn, "gateway", "gw-cli", 2, KEK) == bytes.fromhex(rotated[1])
    assert "epoch 1 revoked" in run("revoke-key", "coop-cli", "gateway", "gw-cli", "1")
    assert registry.key_for(conn, "gateway", "gw-cli", 1, KEK) is None

    assert "farm 'farm-9' not found" in run("register-gateway", "coop-cli", "gw-2", "--farm", "farm-9", code=1)
    assert "already exists" in run("register-tenant", "coop-cli", "--name", "again", code=1)
    assert "--kind must be node or bus" in run("register-device", "coop-cli", "d", "--kind", "x", code=2)
    env["FIELDTRUST_KEK"] = "not-hex"
    assert "FIELDTRUST_KEK: not hexadecimal" in run("register-gateway", "coop-cli", "gw-3", code=2)
