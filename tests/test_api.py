"""The HTTP API against a real PostgreSQL: registration, auth, JSON errors, series, ingest status, health."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from cloud.api.deps import DEV_ADMIN_TOKEN
from cloud.api.main import API_PREFIX, ROUTE_MODULES, create_app
from cloud.config import CloudSettings
from cloud.store import partitions, registry, rollups, writes
from fieldtrust import processes

TOKEN = "test-admin-token-0123456789"
KEK_HEX = "ab" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def settings_for(database_url: str, **changes: object) -> CloudSettings:
    values: dict[str, object] = {"database_url": database_url, "admin_token": TOKEN, "kek": KEK_HEX} | changes
    return CloudSettings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def client(fresh_db: str) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(fresh_db))) as test_client:
        yield test_client


def api(path: str) -> str:
    return API_PREFIX + path


def post(client: TestClient, path: str, body: dict[str, object], expect: int = 201) -> dict:
    response = client.post(api(path), json=body, headers=AUTH)
    assert response.status_code == expect, response.text
    return response.json()


def get(client: TestClient, path: str, expect: int = 200, **params: object) -> dict | list:
    response = client.get(api(path), params=params, headers=AUTH)
    assert response.status_code == expect, response.text
    return response.json()


def register_farm_with_gateway(client: TestClient) -> dict:
    post(client, "/tenants", {"id": "coop-a", "name": "Cooperative A"})
    post(client, "/tenants/coop-a/farms", {"id": "farm-a", "name": "North field", "latitude": -0.09, "crop": "maize"})
    return post(client, "/tenants/coop-a/gateways", {"id": "gw-1", "farm_id": "farm-a", "name": "shed"})


def test_register_through_the_api_and_list_with_last_seen(client: TestClient, fresh_db: str) -> None:
    created = register_farm_with_gateway(client)
    assert created["gateway"]["mqtt_username"] == "gw-1" and created["key_epoch"] == 1
    assert len(bytes.fromhex(created["key_hex"])) == 32 and len(created["mqtt_password"]) >= 24
    node = post(client, "/tenants/coop-a/devices", {"id": "node-1", "kind": "node", "farm_id": "farm-a"})
    soil = post(client, "/tenants/coop-a/devices", {"id": "soil-1", "kind": "bus", "gateway_id": "gw-1",
                                                    "spec": "jxct-soil-7in1"})
    assert node["key_hex"] and node["key_epoch"] == 1
    assert soil["key_hex"] is None and soil["device"]["farm_id"] == "farm-a"
    assert soil["device"]["spec_key"].startswith("jxct-soil-7in1@")

    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("UPDATE ft.devices SET last_seen_at = %s WHERE id = 'soil-1'", (T0,))
        conn.execute("UPDATE ft.gateways SET last_seen_at = %s WHERE id = 'gw-1'", (T0,))
        kek = bytes.fromhex(KEK_HEX)
        assert registry.key_for(conn, "gateway", "gw-1", 1, kek) == bytes.fromhex(created["key_hex"])
        assert registry.key_for(conn, "device", "node-1", 1, kek) == bytes.fromhex(node["key_hex"])
    [gateway] = get(client, "/tenants/coop-a/gateways", farm_id="farm-a")
    assert gateway["last_seen_at"] == "2024-05-01T10:00:00Z" and "key_hex" not in gateway
    devices = get(client, "/tenants/coop-a/devices")
    assert [(d["id"], d["kind"], d["last_seen_at"]) for d in devices] == [
        ("node-1", "node", None), ("soil-1", "bus", "2024-05-01T10:00:00Z")]
    assert [d["id"] for d in get(client, "/tenants/coop-a/devices", gateway_id="gw-1")] == ["soil-1"]
    assert get(client, "/tenants/coop-a/farms/farm-a")["crop"] == "maize"
    assert [t["id"] for t in get(client, "/tenants")] == ["coop-a"]

    rotated = post(client, "/tenants/coop-a/gateways/gw-1/keys", {})
    assert rotated["key_epoch"] == 2 and rotated["key_hex"] != created["key_hex"]
    revoked = client.delete(api("/tenants/coop-a/gateways/gw-1/keys/1"), headers=AUTH).json()
    assert revoked["epoch"] == 1 and revoked["revoked_at"] is not None
    epochs = get(client, "/tenants/coop-a/gateways/gw-1/keys")
    assert [(k["epoch"], k["revoked_at"] is None) for k in epochs] == [(1, False), (2, True)]
    assert get(client, "/tenants/coop-a/gateways/gw-1")["key_epoch"] == 2


def test_every_route_but_health_needs_the_admin_token(client: TestClient, fresh_db: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = client.get(api("/tenants"), headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"] == "unauthorized" and "token" in response.json()["message"]
    response = client.post(api("/tenants"), json={"id": "coop-x", "name": "x"})
    assert response.status_code == 401
    assert client.get(api("/health/live")).json() == {"status": "ok"}
    assert client.get(api("/health/ready")).json()["status"] == "ready"

    with TestClient(create_app(settings_for(fresh_db, admin_token=None))) as closed:
        response = closed.post(api("/tenants"), json={"id": "coop-x", "name": "x"}, headers=AUTH)
        assert response.status_code == 503
        assert "no admin token is configured" in response.json()["message"]
    with TestClient(create_app(settings_for(fresh_db, admin_token=None, dev_mode=True))) as dev:
        assert dev.get(api("/tenants"), headers={"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}).status_code == 200
        assert dev.get(api("/tenants")).status_code == 401
    with TestClient(create_app(settings_for(fresh_db, kek=None))) as no_kek:
        post(no_kek, "/tenants", {"id": "coop-k", "name": "k"})
        response = no_kek.post(api("/tenants/coop-k/gateways"), json={"id": "gw-k"}, headers=AUTH)
        assert response.status_code == 503 and "FIELDTRUST_KEK" in response.json()["message"]


def test_errors_are_json_with_a_readable_message(client: TestClient) -> None:
    register_farm_with_gateway(client)
    post(client, "/tenants", {"id": "coop-b", "name": "B"})
    cases = [
        ("get", "/tenants/nobody/gateways", None, 404, "tenant 'nobody' not found"),
        ("get", "/tenants/coop-b/gateways/gw-1", None, 404, "gateway 'gw-1' not found in tenant 'coop-b'"),
        ("get", "/no/such/path", None, 404, "no such path: /api/v1/no/such/path"),
        ("post", "/tenants/coop-a/gateways", {"id": "gw-1"}, 409, "gateway 'gw-1' already exists"),
        ("post", "/tenants/coop-b/gateways", {"id": "gw-2", "farm_id": "farm-a"}, 404,
         "farm 'farm-a' not found in tenant 'coop-b'"),
        ("post", "/tenants/coop-a/gateways", {"id": "bad/id"}, 422, "body.id: String should match pattern"),
        ("post", "/tenants/coop-a/gateways", {"id": "gw-3", "colour": "red"}, 422, "body.colour: Extra inputs"),
        ("post", "/tenants/coop-a/devices", {"id": "s-1", "kind": "bus", "gateway_id": "gw-1", "spec": "nope"}, 422,
         "unknown sensor model 'nope'"),
        ("post", "/tenants/coop-a/devices", {"id": "s-1", "kind": "bus", "gateway_id": "gw-1",
                                             "spec": "jxct-soil-7in1", "key_hex": "00" * 32}, 422, "takes no key"),
        ("post", "/tenants/coop-a/farms", {"id": "f-2", "name": "x", "latitude": 91}, 422,
         "body.latitude: Input should be less than or equal to 90"),
        ("get", "/tenants/coop-a/farms/farm-a/series?metric=soil_moisture&bucket=5x", None, 422,
         "bucket must be 'raw' or a number"),
        ("get", "/tenants/coop-a/gateways/gw-1/keys/1", None, 405, "GET is not allowed"),
    ]
    for method, path, body, status, message in cases:
        response = client.request(method, api(path), json=body, headers=AUTH)
        assert response.status_code == status, (path, response.text)
        payload = response.json()
        assert message in payload["message"], (path, payload)
        assert isinstance(payload["error"], str)
    invalid = client.post(api("/tenants/coop-a/gateways"), json={"id": "bad/id"}, headers=AUTH).json()
    assert invalid["error"] == "invalid" and invalid["fields"][0]["location"] == "body.id"


def _store_readings(database_url: str, device: str, metric: str, unit: str,
                    readings: list[tuple[datetime, float]]) -> None:
    """Readings as the ingest stores them (its write path), then the hourly rollups brought up to date."""
    with psycopg.connect(database_url) as conn:
        mid = writes.metric_ids(conn, [(metric, unit)])[(metric, unit)]
        partitions.ensure_for(conn, [ts for ts, _ in readings])
        rows = [("coop-a", device, mid, ts, value, None, 0, 2, 1, seq) for seq, (ts, value) in enumerate(readings)]
        assert writes.write_readings(conn, rows) == len(rows)
        conn.commit()
        rollups.refresh_dirty(conn)
        conn.commit()


def test_series_are_gap_filled_buckets_of_stored_readings(client: TestClient, fresh_db: str) -> None:
    register_farm_with_gateway(client)
    post(client, "/tenants/coop-a/devices", {"id": "soil-1", "kind": "bus", "gateway_id": "gw-1",
                                             "spec": "jxct-soil-7in1"})
    minutes = [(0, 20.0), (5, 22.0), (50, 24.0), (130, 30.0)]  # nothing in the 11:00 hour
    _store_readings(fresh_db, "soil-1", "soil_moisture", "%", [(T0 + timedelta(minutes=m), v) for m, v in minutes])
    window = {"metric": "soil_moisture", "start": T0.isoformat(), "end": (T0 + timedelta(hours=3)).isoformat()}

    hourly = get(client, "/tenants/coop-a/devices/soil-1/series", bucket="1h", **window)
    assert hourly["bucket"] == "3600s"
    assert [(p["ts"], p["value"], p["n"]) for p in hourly["points"]] == [
        ("2024-05-01T10:00:00Z", 22.0, 3), ("2024-05-01T11:00:00Z", None, 0), ("2024-05-01T12:00:00Z", 30.0, 1)]
    assert hourly["points"][0]["min"] == 20.0 and hourly["points"][0]["max"] == 24.0
    filled = get(client, "/tenants/coop-a/devices/soil-1/series", bucket="1h", fill="previous", **window)
    assert [(p["value"], p["n"]) for p in filled["points"]] == [(22.0, 3), (22.0, 0), (30.0, 1)]
    quarter = get(client, "/tenants/coop-a/devices/soil-1/series", bucket="15m", **window)
    assert len(quarter["points"]) == 12 and sum(p["n"] for p in quarter["points"]) == 4
    raw = get(client, "/tenants/coop-a/devices/soil-1/series", **window)  # 3 hours: raw by default
    assert raw["bucket"] == "raw" and [p["value"] for p in raw["points"]] == [20.0, 22.0, 24.0, 30.0]
    farm = get(client, "/tenants/coop-a/farms/farm-a/series", **window)
    assert farm["bucket"] == "3600s" and [p["n"] for p in farm["points"]] == [3, 0, 1]
    [latest] = get(client, "/tenants/coop-a/devices/soil-1/latest")
    assert (latest["metric"], latest["unit"], latest["value"], latest["trust"]) == ("soil_moisture", "%", 30.0, 2)

    assert "unknown metric 'rain'" in get(client, "/tenants/coop-a/devices/soil-1/series", 404,
                                          **(window | {"metric": "rain"}))["message"]
    backwards = window | {"start": window["end"], "end": window["start"]}
    assert "is not after start" in get(client, "/tenants/coop-a/devices/soil-1/series", 422, **backwards)["message"]
    assert "not found in tenant" in get(client, "/tenants/coop-a/devices/soil-9/series", 404, **window)["message"]


def test_ingest_status_counts_batches_and_dead_letters_by_reason(client: TestClient, fresh_db: str) -> None:
    register_farm_with_gateway(client)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("INSERT INTO ft.batches (batch_id, tenant_id, gateway_id, frame, readings, duplicates, rejected)"
                     " VALUES ('b1', 'coop-a', 'gw-1', '\\x00', 100, 2, 1),"
                     " ('b2', 'coop-a', 'gw-1', '\\x00', 50, 0, 0)")
        conn.execute("INSERT INTO ft.dead_letters (tenant_id, topic, reason, payload) VALUES"
                     " ('coop-a', 't', 'bad_signature', '\\x00'), ('coop-a', 't', 'bad_signature', '\\x00'),"
                     " (NULL, 't', 'not_a_gateway_topic', '\\x00')")
    status = get(client, "/ingest/status")
    assert {k: status["batches"][k] for k in ("batches", "readings", "duplicates", "rejected")} == {
        "batches": 2, "readings": 150, "duplicates": 2, "rejected": 1}
    assert status["dead_letters"] == {"total": 3, "by_reason": {"bad_signature": 2, "not_a_gateway_topic": 1}}
    assert get(client, "/ingest/status", tenant="coop-a")["dead_letters"]["total"] == 2
    assert get(client, "/ingest/status", since="2999-01-01T00:00:00Z")["batches"]["batches"] == 0
    assert isinstance(status["workers"], list)


def test_readiness_fails_cleanly_when_the_database_is_unreachable() -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{processes.free_port()}/none"
    with TestClient(create_app(settings_for(nowhere))) as down:
        assert down.get(api("/health/live")).status_code == 200
        began = time.monotonic()
        response = down.get(api("/health/ready"))
        assert response.status_code == 503 and time.monotonic() - began < 5
        assert response.json()["error"] == "not_ready"
        assert "database unreachable" in response.json()["message"]


def test_openapi_lists_every_route_and_the_bearer_scheme(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    routes = {(API_PREFIX + route.path, method.lower()) for module in ROUTE_MODULES
              for route in module.router.routes if isinstance(route, APIRoute) for method in route.methods}
    documented = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert routes == documented and len(routes) >= 20
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "ErrorBody" in spec["components"]["schemas"]


def test_fieldtrust_cloud_serve_answers_over_http(fresh_db: str) -> None:
    port = processes.free_port()
    env = os.environ | {"FIELDTRUST_DATABASE_URL": fresh_db, "FIELDTRUST_ADMIN_TOKEN": TOKEN}
    proc = processes.spawn([sys.executable, "-m", "fieldtrust.cli.main", "cloud", "serve", "--port", str(port)],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        processes.wait_for_port(port, timeout=60)  # imports and a full migration: slow on a loaded machine
        base = f"http://127.0.0.1:{port}{API_PREFIX}"
        assert httpx.get(f"{base}/health/ready", timeout=5).json()["status"] == "ready"
        assert httpx.get(f"{base}/tenants", timeout=5).status_code == 401
        assert httpx.get(f"{base}/tenants", headers=AUTH, timeout=5).json() == []
    finally:
        processes.stop(proc)
