"""The fleet routes as users see them: scopes fleet:read / fleet:write, another tenant answered 404, every change
audited; alerts acknowledged, campaigns paused; /metrics of the API, of an ingest worker and of a fleet process expose
their series; the fleet loop's status for platform admins."""

from __future__ import annotations

import os
import re
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from cloud.downlink import frames, service
from cloud.fleet import metrics, presence
from cloud.fleet.evaluate import evaluate_rules
from cloud.fleet.service import FleetOptions, FleetService
from cloud.ingest.counters import Counters
from contract import models
from fieldtrust.processes import free_port
from tests.support.accounts import ADMIN, add_user, api, audit_events, bearer, client_of, running_app, sign_in
from tests.support.app_db import app_connect
from tests.support.ingest import KEK, register_site, settings
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def world(module_app_db):
    """Two tenants' sites, an ops user and a technician in the first, an ops user in the second; the running API."""
    url = module_app_db.owner_url
    a, b = register_site(url, bus_devices=2), register_site(url, bus_devices=1)
    with running_app(url, kek=KEK.hex()) as app:  # the sites' keys are stored under the ingest helpers' KEK
        client = client_of(app)
        add_user(client, a.tenant, "ops", ["ops"])
        add_user(client, a.tenant, "tech", ["technician"])
        add_user(client, b.tenant, "ops-b", ["ops"])
        tokens = {name: sign_in(client_of(app), tenant, name)["session_token"]
                  for tenant, name in ((a.tenant, "ops"), (a.tenant, "tech"), (b.tenant, "ops-b"))}
        yield {"url": url, "app": app, "a": a, "b": b, "tokens": tokens}


def call(world: dict, who: str, method: str, path: str, expect: int, **kwargs: object) -> httpx.Response:
    response = client_of(world["app"]).request(method, api(path), headers=bearer(world["tokens"][who]), **kwargs)
    assert response.status_code == expect, response.text
    return response


def test_rules_alerts_and_scopes(world: dict) -> None:
    a = world["a"]
    base = f"/tenants/{a.tenant}"
    rule = {"name": "battery", "kind": "battery_low", "threshold": 3.3}
    call(world, "tech", "POST", base + "/alert-rules", 403, json=rule)  # technicians read the fleet only
    created = call(world, "ops", "POST", base + "/alert-rules", 201, json=rule).json()
    assert call(world, "tech", "GET", base + "/alert-rules", 200).json()[0]["id"] == created["id"]
    call(world, "ops-b", "GET", base + "/alert-rules", 404)  # another tenant: not found, not forbidden
    bad = call(world, "ops", "POST", base + "/alert-rules", 422, json={"name": "x", "kind": "threshold"}).json()
    assert "needs metric, op, threshold" in bad["message"]

    health = models.Health(k="health", gw=a.gw, at=int(time.time() * 1000), sw="edge/1.0.0", uptime_s=3.0,
                           devices={a.bus[0]: models.DeviceHealth(state="ok", battery=3.1, battery_unit="V")})
    with app_connect(world["url"], autocommit=True) as conn:
        with conn.transaction():
            presence.record_heartbeat(conn, a.tenant, a.gw, health, a.bus)
        evaluate_rules(conn, datetime.now(UTC))

    fleet = call(world, "tech", "GET", base + "/fleet", 200).json()
    assert {(s["subject_kind"], s["subject_id"]) for s in fleet} == {("gateway", a.gw), ("device", a.bus[0])}
    device = call(world, "tech", "GET", base + f"/fleet/device/{a.bus[0]}", 200).json()
    assert device["battery"] == 3.1 and device["online"]
    assert call(world, "tech", "GET", base + f"/fleet/gateway/{a.gw}/history", 200).json()[0]["online"]
    gaps = {g["device_id"]: g for g in call(world, "tech", "GET", base + "/fleet/gaps?hours=3", 200).json()}
    assert set(gaps) >= set(a.bus) and all(g["received"] == 0 for g in gaps.values())
    call(world, "ops-b", "GET", base + "/fleet", 404)

    [alert] = call(world, "ops", "GET", base + "/alerts", 200).json()
    assert (alert["subject_id"], alert["state"], alert["rule_name"]) == (a.bus[0], "open", "battery")
    call(world, "tech", "POST", base + f"/alerts/{alert['id']}/acknowledge", 403)
    acked = call(world, "ops", "POST", base + f"/alerts/{alert['id']}/acknowledge", 200).json()
    assert acked["state"] == "acknowledged" and acked["acknowledged_by"].startswith("user:")
    now = datetime.now(UTC)
    silence = call(world, "ops", "POST", base + "/silences", 201, json={
        "subject_kind": "gateway", "subject_id": a.gw, "starts_at": now.isoformat(),
        "ends_at": (now + timedelta(hours=2)).isoformat(), "reason": "moving the mast"}).json()
    call(world, "ops", "DELETE", base + f"/silences/{silence['id']}", 204)

    actions = [e["action"] for e in audit_events(world["url"], [a.tenant]) if e["action"].startswith(
        ("alert", "silence"))]
    assert actions == ["alert_rule.created", "alert.acknowledged", "silence.created", "silence.ended"]


def test_webhooks(world: dict) -> None:
    base = f"/tenants/{world['a'].tenant}/webhooks"
    refused = call(world, "ops", "POST", base, 422, json={"url": "http://127.0.0.1:8080/hook"}).json()
    assert "local or private address" in refused["message"]  # not in dev mode
    made = call(world, "ops", "POST", base, 201, json={"url": "https://93.184.216.34/hook"}).json()
    assert len(made["secret"]) >= 16
    listed = call(world, "tech", "GET", base, 200).json()
    assert [w["id"] for w in listed] == [made["webhook"]["id"]] and "secret" not in listed[0]
    assert call(world, "tech", "GET", base + f"/{made['webhook']['id']}/deliveries", 200).json() == []
    call(world, "ops-b", "GET", base, 404)


def test_campaign_routes(world: dict) -> None:
    a = world["a"]
    with psycopg.connect(world["url"]) as conn:
        build = conn.execute("SELECT coalesce(max(version), 500) + 1 FROM ft.firmware_releases").fetchone()[0]
        service.create_release(conn, build, [frames.FirmwareFile("main.py", b"import firmware.main\n"),
                                             frames.FirmwareFile("x.mpy", b"M\x06" + os.urandom(16))], "test")
        conn.commit()
    base = f"/tenants/{a.tenant}/campaigns"
    body = {"name": "rollout", "kind": "node", "firmware_version": build, "stages": [50, 100]}
    call(world, "tech", "POST", base, 403, json=body)
    made = call(world, "ops", "POST", base, 201, json=body).json()
    assert made["campaign"]["state"] == "running" and made["counts"]["sent"] == 1  # the site's one node
    cid = made["campaign"]["id"]
    assert call(world, "ops", "POST", base + f"/{cid}/pause", 200).json()["campaign"]["state"] == "paused"
    assert call(world, "ops", "POST", base + f"/{cid}/pause", 409).json()["message"].startswith(f"campaign {cid}")
    assert call(world, "ops", "POST", base + f"/{cid}/resume", 200).json()["campaign"]["state"] == "running"
    assert [t["subject_id"] for t in call(world, "tech", "GET", base + f"/{cid}/targets", 200).json()] == [a.node]
    call(world, "ops-b", "GET", base + f"/{cid}", 404)
    assert call(world, "ops", "POST", base + f"/{cid}/cancel", 200).json()["campaign"]["state"] == "cancelled"


def test_api_metrics(world: dict) -> None:
    client = client_of(world["app"])
    assert client.get(api(f"/tenants/{world['a'].tenant}/alert-rules"), headers=ADMIN).status_code == 200
    text = client.get("/metrics").text
    # the route's template (with or without the /api/v1 prefix, as the FastAPI version names it), never its path
    assert re.search(r'fieldtrust_api_request_duration_seconds_count\{method="GET",route="(/api/v1)?/tenants/'
                     r'\{tenant\}/alert-rules",status="200"\} [1-9]', text), text[-2000:]
    assert f"/tenants/{world['a'].tenant}/" not in text


def test_ingest_metrics_port() -> None:
    counters = Counters()
    counters.bump("messages_received", 7)
    counters.refused("bad_signature")
    metrics.observe_commit(3, 120)
    port = free_port()
    served = metrics.IngestMetrics(counters, "ingest-test", port, host="127.0.0.1")
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        served.close()
    assert 'fieldtrust_ingest_messages_received_total{worker="ingest-test"} 7.0' in text
    assert 'fieldtrust_ingest_rejected_total{reason="bad_signature",worker="ingest-test"} 1.0' in text
    assert "fieldtrust_ingest_commit_readings_count" in text and "fieldtrust_ingest_lag_sent_seconds" in text


def test_fleet_loop_status_and_metrics(world: dict, shared_broker: tuple[str, int]) -> None:
    client = client_of(world["app"])
    empty = client.get(api("/fleet/status"), headers=ADMIN)
    assert empty.status_code == 200 and empty.json()["owner"] is None and empty.json()["lag_s"] is None
    call(world, "ops", "GET", "/fleet/status", 401)  # the platform's loop: platform admins only

    host, port = shared_broker
    service_id = f"fleet-status-{uuid.uuid4().hex[:8]}"
    fleet = FleetService(settings(world["url"], f"mqtt://{host}:{port}"),
                         FleetOptions(client_id=service_id, interval_s=0.2)).start()
    metrics_port = free_port()
    served = metrics.FleetMetrics(fleet, metrics_port, host="127.0.0.1")
    try:
        assert wait_until(lambda: fleet.status.cycles >= 2)
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        status = client.get(api("/fleet/status"), headers=ADMIN).json()
    finally:
        served.close()
        fleet.stop()
    assert f'fieldtrust_fleet_owner{{service="{service_id}"}} 1.0' in text
    assert re.search(rf'fieldtrust_fleet_cycles_total{{service="{service_id}"}} [1-9]', text), text
    assert f'fieldtrust_fleet_evaluation_age_seconds{{service="{service_id}"}}' in text
    assert status["owner"] == service_id and status["lag_s"] is not None and status["lag_s"] >= 0
    # the shared broker carries other tests' gateways too: the inbox may hold some of their messages
    assert status["last_evaluation_at"] is not None and status["inbox_depth"] >= 0
    [process] = status["processes"]
    assert (process["service_id"], process["role"], process["pid"]) == (service_id, "owner", os.getpid())
    assert process["status"]["cycles"] >= 1 and process["status"]["errors"] == 0, process
    with psycopg.connect(world["url"]) as conn:  # the live counts, every tenant's
        row = conn.execute("SELECT (SELECT count(*) FROM ft.alerts WHERE state = 'open'),"
                           " (SELECT count(*) FROM ft.campaigns WHERE state = 'running')").fetchone()
    assert (status["alerts_open"], status["campaigns_active"]) == row
