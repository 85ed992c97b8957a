"""A tenant with one of everything the API serves, for the isolation and fuzz tests (tests/test_api_*.py).

:func:`seed_tenant` registers, through the API itself (as the platform admin, and as the tenant's own
farmer where only the farmer may act), a farmer, a farm, a field in a season that has begun, a gateway, a
sensor node, a soil probe and a spare node, users of every role (signed in), a partner API key with every
scope a key may hold, a consent, a claim code, an alert rule, a silence, a webhook, a firmware release's
OTA job and campaign, a node config, a maintenance event and a second key epoch; then, through the store,
soil readings, heartbeats and the alert the battery rule raises from them, and the farmer's loan
application as filed (not scored: scoring needs a trained model deployed).  Every write is audited.

Every string id and name embeds the tenant id and none contains another, so a response can be scanned for
another tenant's data (:attr:`Seeded.marks`) without false hits from one id inside another.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import psycopg
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cloud.auth.scopes import API_KEY_SCOPES
from cloud.consent import texts
from cloud.credit import records
from cloud.fleet import presence
from cloud.fleet.evaluate import evaluate_rules
from cloud.store import partitions, rollups, writes
from contract import models
from tests.support.accounts import ADMIN, PIN, add_tenant, add_user, api, bearer, client_of, sign_in
from tests.support.app_db import app_connect

#: the roles a tenant's users have, one user each (the platform admin is not a tenant's)
ROLES = ("farmer", "clerk", "technician", "credit_officer", "ops", "tenant_admin")
#: the name of the tenant's partner API key among :attr:`Seeded.tokens`
API_KEY = "api_key"
SOIL_SPEC = "jxct-soil-7in1"


@dataclass
class Seeded:
    """What :func:`seed_tenant` made: example values by parameter name, and who may call."""

    tenant: str
    #: an example value of each path, query and body parameter name, pointing at this tenant's objects
    ids: dict[str, object]
    #: bearer token by principal: the roles' session tokens and :data:`API_KEY`
    tokens: dict[str, str]
    #: the CSRF token of each user's session (cookie-authenticated writes and page forms)
    csrf: dict[str, str]
    #: logins by role
    logins: dict[str, str]
    #: strings found only in this tenant's data: ids, names, notes
    marks: list[str] = field(default_factory=list)

    def headers(self, principal: str) -> dict[str, str]:
        return bearer(self.tokens[principal])

    def resign(self, client: TestClient, role: str) -> None:
        """A new session for ``role`` (after a route under test ended the old one)."""
        signed = sign_in(client, self.tenant, self.logins[role])
        self.tokens[role], self.csrf[role] = signed["session_token"], signed["csrf_token"]


def new_release(owner_url: str) -> int:
    """A firmware release (platform-wide) for OTA jobs and campaigns: its build number."""
    from cloud.downlink import frames, service

    with psycopg.connect(owner_url) as conn:
        build = conn.execute("SELECT coalesce(max(version), 700) + 1 FROM ft.firmware_releases").fetchone()[0]
        service.create_release(conn, build, [frames.FirmwareFile("main.py", b"import firmware.main\n"),
                                             frames.FirmwareFile("x.mpy", b"M\x06" + os.urandom(16))], "seed")
        conn.commit()
    return build


def _call(client: TestClient, method: str, path: str, body: object = None, *, headers: dict[str, str] = ADMIN,
          expect: int = 201) -> dict:
    response = client.request(method, api(path), json=body, headers=headers)
    assert response.status_code == expect, f"{method} {path}: {response.text}"
    return response.json() if response.content else {}


def seed_tenant(app: FastAPI, owner_url: str, release: int, label: str = "") -> Seeded:
    """A new tenant (``iso<label>-<random>``) with one of everything; see the module docstring."""
    tenant = f"iso{label}-{secrets.token_hex(4)}"
    client = client_of(app)
    add_tenant(client, tenant)
    base = f"/tenants/{tenant}"
    farmer, farm, fld, gw = f"{tenant}-grower", f"{tenant}-plot", f"{tenant}-strip", f"{tenant}-gw"
    node, probe, spare = f"{tenant}-node", f"{tenant}-probe", f"{tenant}-spare"
    _call(client, "POST", base + "/farmers", {"id": farmer, "name": f"Grower of {tenant}", "village": f"{tenant} vil",
                                              "national_id": f"NID{secrets.token_hex(4)}"})
    _call(client, "POST", base + "/farms", {"id": farm, "name": f"Plot of {tenant}", "farmer_id": farmer,
                                            "crop": "maize", "latitude": -0.1, "longitude": 34.7})
    today = datetime.now(UTC).date()
    _call(client, "POST", base + "/fields", {"id": fld, "farm_id": farm, "name": f"Strip of {tenant}",
                                             "crop": "maize", "season": f"{today.year}-long-rains",
                                             "season_start": (today - timedelta(days=60)).isoformat(),
                                             "season_end": (today + timedelta(days=60)).isoformat()})
    _call(client, "POST", base + "/gateways", {"id": gw, "farm_id": farm, "name": f"Mast of {tenant}"})
    _call(client, "POST", base + "/devices", {"id": node, "kind": "node", "farm_id": farm, "gateway_id": gw,
                                              "field_id": fld})
    _call(client, "POST", base + "/devices", {"id": spare, "kind": "node", "farm_id": farm, "gateway_id": gw})
    _call(client, "POST", base + "/devices", {"id": probe, "kind": "bus", "gateway_id": gw, "spec": SOIL_SPEC})

    logins = {role: f"{tenant}-{role.replace('_', '')}" for role in ROLES}
    user_ids = {role: add_user(client, tenant, logins[role], [role], farmer_id=farmer if role == "farmer" else None,
                               pin=PIN if role == "farmer" else None)["id"] for role in ROLES}
    tokens, csrf = {}, {}
    for role in ROLES:
        signed = sign_in(client, tenant, logins[role])
        tokens[role], csrf[role] = signed["session_token"], signed["csrf_token"]
    key = _call(client, "POST", base + "/api-keys", {"name": f"{tenant} partner", "scopes": sorted(API_KEY_SCOPES),
                                                     "rate_limit": 100_000, "rate_window_s": 60})
    tokens[API_KEY] = key["key"]

    consent = _call(client, "POST", base + f"/farmers/{farmer}/consents", {
        "purpose": "credit_assessment", "scopes": ["soil", "registry"], "days": 30, "pin": PIN,
        "text_version": texts.VERSION, "language": "en"}, headers=bearer(tokens["farmer"]))
    claim = _call(client, "POST", base + "/claim-codes", {"farm_id": farm, "field_id": fld,
                                                          "note": f"{tenant} work order"})
    rule = _call(client, "POST", base + "/alert-rules", {"name": f"{tenant} battery", "kind": "battery_low",
                                                         "threshold": 3.4})
    now = datetime.now(UTC)
    silence = _call(client, "POST", base + "/silences", {
        "subject_kind": "gateway", "subject_id": gw, "starts_at": (now + timedelta(days=1)).isoformat(),
        "ends_at": (now + timedelta(days=2)).isoformat(), "reason": f"{tenant} mast works"})
    hook = _call(client, "POST", base + "/webhooks", {"url": f"https://93.184.216.34/hook/{tenant}"})
    _call(client, "PUT", base + f"/devices/{node}/config", {"interval_s": 600}, expect=200)
    _call(client, "POST", base + f"/devices/{spare}/ota", {"version": release})
    campaign = _call(client, "POST", base + "/campaigns", {"name": f"{tenant} rollout", "kind": "node",
                                                           "firmware_version": release, "stages": [100]})
    _call(client, "POST", base + f"/devices/{probe}/events", {"kind": "provisioned", "detail": {"board": tenant}})
    _call(client, "POST", base + f"/devices/{node}/keys", {})
    _readings(owner_url, tenant, probe, now)
    alert_id = _alert(owner_url, tenant, gw, probe, now)
    _call(client, "GET", base + f"/farmers/{farmer}/data-access", headers=bearer(tokens["tenant_admin"]), expect=200)
    application_id = _application(owner_url, tenant, farmer, farm, user_ids["farmer"], today)

    ids: dict[str, object] = {
        "tenant": tenant, "farmer_id": farmer, "farmer": farmer, "farm_id": farm, "field_id": fld,
        "gateway_id": gw, "device_id": probe, "device": node, "new_device": spare, "owner": "devices",
        "owner_id": node, "epoch": 1, "user_id": user_ids["clerk"], "key_id": key["api_key"]["id"],
        "code_id": claim["claim_code"]["id"], "code": claim["code"], "consent_id": consent["id"],
        "rule_id": rule["id"], "alert_id": alert_id, "silence_id": silence["id"], "webhook_id": hook["webhook"]["id"],
        "campaign_id": campaign["campaign"]["id"], "kind": "device", "subject_id": probe, "login": logins["clerk"],
        "release": release, "application_id": application_id,
        # no override awaits a check: an id of the right form, for routes refused before they look it up
        "decision_id": f"{tenant}-decision", "action": "pause",
    }
    marks = [tenant, farmer, farm, fld, gw, node, probe, spare, *logins.values(), *user_ids.values(),
             key["api_key"]["id"], claim["claim_code"]["id"], consent["id"], application_id]
    return Seeded(tenant, ids, tokens, csrf, logins, marks)


def _application(owner_url: str, tenant: str, farmer: str, farm: str, filed_by: str, today: date) -> str:
    """The farmer's loan application as the credit service files it, before scoring: its id."""
    start = datetime.combine(today - timedelta(days=60), datetime.min.time(), UTC)
    with app_connect(owner_url, tenant=tenant) as conn:
        row = records.insert_application(conn, {
            "tenant_id": tenant, "farmer_id": farmer, "farm_id": farm, "season": f"{today.year}-long-rains",
            "season_start": start, "season_end": start + timedelta(days=120), "amount": 500.0, "term_months": 6,
            "purpose": "inputs", "submitted_by": f"user:{filed_by}"})
        conn.commit()
    return row.id


def _readings(owner_url: str, tenant: str, device: str, now: datetime) -> None:
    """A day of half-hourly soil moisture from ``device``, through the ingest's write path, and its rollups."""
    times = [now - timedelta(minutes=30 * i) for i in range(48, 0, -1)]
    with psycopg.connect(owner_url) as conn:
        metric = writes.metric_ids(conn, [("soil_moisture", "%")])[("soil_moisture", "%")]
        partitions.ensure_for(conn, times)
        rows = [(tenant, device, metric, ts, 20.0 + i % 7, None, 0, 2, 1, i) for i, ts in enumerate(times)]
        assert writes.write_readings(conn, rows) == len(rows)
        conn.commit()
        rollups.refresh_dirty(conn)
        conn.commit()


def _alert(owner_url: str, tenant: str, gateway: str, device: str, now: datetime) -> int:
    """A heartbeat with the probe's battery below the rule's threshold; the alert the rule raises."""
    health = models.Health(k="health", gw=gateway, at=int(now.timestamp() * 1000), sw="edge/1.0.0", uptime_s=60.0,
                           devices={device: models.DeviceHealth(state="ok", battery=3.1, battery_unit="V")})
    with app_connect(owner_url, autocommit=True) as conn:
        with conn.transaction():
            presence.record_heartbeat(conn, tenant, gateway, health, [device])
        evaluate_rules(conn, now, tenant)
        row = conn.execute("SELECT id FROM ft.alerts WHERE tenant_id = %s ORDER BY id LIMIT 1", (tenant,)).fetchone()
    assert row is not None, f"the battery rule raised no alert in {tenant}"
    return row[0]
