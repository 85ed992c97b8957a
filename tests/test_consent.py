"""Farmers' consents (migration 043, cloud/consent): granted with the farmer's PIN even when a clerk assists, the gate
``require_consent`` that refuses and records every data use without a valid consent, and the HTTP routes (a farmer
sees who read their data; tenant B sees nothing of tenant A).  Services run as ft_app; each test has its own tenants
in the module's database.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import psycopg
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from cloud.api.deps import TenantConnDep, require
from cloud.audit import log
from cloud.auth import lockout, passwords
from cloud.auth.principal import Principal
from cloud.auth.scopes import user_principal
from cloud.consent import check, store, texts
from cloud.consent.errors import ConsentConflict, ConsentInvalid, ConsentNotFound, ConsentRequired, PinRejected
from cloud.store import db
from cloud.store.scope import tenant_scope
from tests.support.accounts import (
    ADMIN,
    PIN,
    add_tenant,
    add_user,
    api,
    bearer,
    cheap_hashing,
    client_of,
    running_app,
    sign_in,
)

OTHER_PIN = "739164"


@dataclass(frozen=True)
class World:
    owner_url: str
    app_url: str
    a: str
    b: str
    farmer: Principal  # farmer f-1 of tenant a, PIN = PIN
    clerk: Principal
    officer: Principal


def _user(conn: psycopg.Connection, tenant: str, login: str, roles: list[str], farmer_id: str | None = None,
          pin: str | None = None) -> Principal:
    user_id = f"u_{secrets.token_hex(8)}"
    conn.execute("INSERT INTO ft.users (id, tenant_id, login, display_name, roles, farmer_id, password_hash, pin_hash,"
                 " status, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'active', 'test')",
                 (user_id, tenant, login, login.title(), roles, farmer_id, passwords.hash_secret("x" * 12),
                  passwords.hash_secret(pin) if pin else None))
    return user_principal(user_id, tenant, roles, farmer_id, "198.51.100.4")


@pytest.fixture
def world(module_app_db, monkeypatch: pytest.MonkeyPatch) -> World:
    cheap_hashing(monkeypatch)
    tag = uuid.uuid4().hex[:8]
    a, b = f"coop-a-{tag}", f"coop-b-{tag}"
    with psycopg.connect(module_app_db.owner_url) as conn:
        for tenant in (a, b):
            conn.execute("INSERT INTO ft.tenants (id, name) VALUES (%s, %s)", (tenant, tenant))
        farmer = _user(conn, a, "wang", ["farmer"], "f-1", PIN)
        _user(conn, a, "li", ["farmer"], "f-2", OTHER_PIN)
        clerk = _user(conn, a, "clerk", ["clerk"])
        officer = _user(conn, a, "officer", ["credit_officer"])
    return World(module_app_db.owner_url, module_app_db.app_url, a, b, farmer, clerk, officer)


@pytest.fixture
def conn(world: World) -> Iterator[psycopg.Connection]:
    """An ft_app connection in tenant a's scope (the test commits where a route would)."""
    with db.connect(world.app_url) as connection:
        tenant_scope(connection, world.a)
        yield connection


def entries(world: World, action: str | None = None, tenant: str | None = None) -> list[log.AuditEntry]:
    """The committed audit entries of a tenant (default a), newest first, as the tenant sees them."""
    tenant = tenant or world.a
    with db.connect(world.app_url) as conn:
        tenant_scope(conn, tenant)
        return log.search(conn, tenant, log.Filters(action=action), limit=500)


def grant(conn: psycopg.Connection, principal: Principal, farmer: str = "f-1", purpose: str = "credit_assessment",
          scopes: tuple[str, ...] = ("soil", "weather"), pin: str | None = PIN, **kwargs) -> store.Consent:
    values = {"days": 365, "text_version": texts.VERSION, "language": "zh-CN"} | kwargs
    return store.grant(conn, principal, farmer, purpose, list(scopes), pin=pin, **values)


def test_clerk_assisted_grant_allows_the_use_and_both_are_audited(world: World, conn: psycopg.Connection):
    consent = grant(conn, world.clerk)
    assert (consent.status, consent.assisted_by, consent.granted_by) == ("active", world.clerk.id, world.clerk.id)
    assert consent.scopes == ["soil", "weather"] and consent.confirmed_with == "farmer_pin"
    used = check.use_data(conn, world.officer, "f-1", "credit_assessment", "soil", "series", "dev-1")
    assert used.id == consent.id
    conn.commit()
    granted, read = entries(world, "consent.granted"), entries(world, log.DATA_READ)
    assert granted[0].farmer_id == "f-1" and granted[0].detail["assisted_by"] == world.clerk.id
    assert read[0].actor_id == world.officer.id and read[0].purpose == "credit_assessment"
    assert read[0].detail == {"scope": "soil", "consent": consent.id}


def test_the_farmer_grants_their_own_with_their_pin(world: World, conn: psycopg.Connection):
    consent = grant(conn, world.farmer, purpose="advice", scopes=("yields",), language="en")
    assert consent.assisted_by is None and consent.language == "en"
    with pytest.raises(ConsentNotFound):  # another farmer's consents are out of a farmer's reach
        grant(conn, world.farmer, farmer="f-2", pin=OTHER_PIN)


@pytest.mark.parametrize("pin", [None, "000000", OTHER_PIN])
def test_grant_without_the_farmers_pin_is_refused_counted_and_audited(world: World, conn: psycopg.Connection, pin):
    with pytest.raises(PinRejected):
        grant(conn, world.clerk, pin=pin)
    conn.commit()
    tenant_scope(conn, world.a)
    assert store.list_consents(conn, world.clerk, "f-1") == []
    refused = entries(world, "consent.pin_refused")
    assert len(refused) == 1 and refused[0].farmer_id == "f-1" and refused[0].actor_id == world.clerk.id
    failures = conn.execute("SELECT failures FROM ft.signin_accounts WHERE tenant_id = %s AND account = %s",
                            (world.a, lockout.farmer_account("f-1"))).fetchone()
    assert failures == (None if pin is None else (1,))  # a missing PIN is no guess


def test_pin_guessing_through_consents_meets_the_sign_in_lockout(world: World, conn: psycopg.Connection):
    for _ in range(lockout.LOCK_AFTER):
        conn.execute("UPDATE ft.signin_accounts SET next_allowed_at = NULL WHERE tenant_id = %s", (world.a,))
        with pytest.raises(PinRejected):
            grant(conn, world.clerk, pin="000000")
    with pytest.raises(PinRejected, match="locked"):
        grant(conn, world.clerk)  # even the right PIN, until a clerk unlocks the farmer's account


def test_stale_text_unknown_scope_and_bad_duration_are_refused(world: World, conn: psycopg.Connection):
    with pytest.raises(ConsentInvalid, match="consent text has changed"):
        grant(conn, world.clerk, text_version="0" * 64)
    with pytest.raises(ConsentInvalid, match="scopes must be"):
        grant(conn, world.clerk, scopes=("bank_account",))
    with pytest.raises(ConsentInvalid, match="days"):
        grant(conn, world.clerk, days=0)


@pytest.mark.parametrize("case", ["none", "other_purpose", "scope_not_granted", "expired", "revoked"])
def test_data_use_without_a_valid_consent_is_refused_and_audited(world: World, conn: psycopg.Connection, case):
    if case == "other_purpose":
        grant(conn, world.clerk, purpose="insurance")
    elif case == "scope_not_granted":
        grant(conn, world.clerk, scopes=("weather",))
    elif case == "expired":
        consent = grant(conn, world.clerk)
        with psycopg.connect(world.owner_url) as owner:
            conn.commit()
            owner.execute("UPDATE ft.consents SET granted_at = now() - interval '2 days',"
                          " expires_at = now() - interval '1 day' WHERE id = %s", (consent.id,))
        tenant_scope(conn, world.a)
    elif case == "revoked":
        consent = grant(conn, world.clerk)
        store.revoke(conn, world.farmer, consent.id)
    with pytest.raises(ConsentRequired) as refused:
        check.use_data(conn, world.officer, "f-1", "credit_assessment", "soil", "series", "dev-1")
    assert refused.value.reason == ("no_consent" if case == "none" else case)
    assert "farmer f-1 has not consented to the use of their soil data for credit_assessment" in str(refused.value)
    conn.commit()
    recorded = entries(world, log.DATA_USE_REFUSED)
    assert [(e.id, e.actor_id, e.farmer_id, e.purpose, e.detail["reason"]) for e in recorded] == [
        (refused.value.entry_id, world.officer.id, "f-1", "credit_assessment", refused.value.reason)]
    assert entries(world, log.DATA_READ) == []


def test_revoke_by_the_farmer_or_by_a_clerk_with_the_pin(world: World, conn: psycopg.Connection):
    first, second = grant(conn, world.clerk), grant(conn, world.clerk, purpose="advice")
    assert store.revoke(conn, world.farmer, first.id).revoked_by == world.farmer.id  # the farmer: no PIN
    with pytest.raises(ConsentConflict):
        store.revoke(conn, world.farmer, first.id)
    with pytest.raises(PinRejected):
        store.revoke(conn, world.clerk, second.id)
    revoked = store.revoke(conn, world.clerk, second.id, pin=PIN)
    assert revoked.status == "revoked"
    with pytest.raises(ConsentNotFound):
        store.revoke(conn, world.farmer, "c_0123456789abcdef")
    listed = store.list_consents(conn, world.officer, "f-1")
    assert [c.status for c in listed] == ["revoked", "revoked"]


def test_tenant_b_sees_nothing_of_tenant_a(world: World, conn: psycopg.Connection):
    grant(conn, world.clerk)
    conn.commit()
    with psycopg.connect(world.owner_url) as owner:
        b_officer = _user(owner, world.b, "officer", ["credit_officer"])
    with db.connect(world.app_url) as other:
        tenant_scope(other, world.b)
        assert other.execute("SELECT count(*) FROM ft.consents").fetchone() == (0,)
        assert store.list_consents(other, b_officer, "f-1") == []
        with pytest.raises(ConsentRequired):  # a's consent is no consent for b
            check.require_consent(other, b_officer, "f-1", "credit_assessment", "soil")
        with pytest.raises(ConsentNotFound):
            store.list_consents(other, b_officer, "f-1", tenant_id=world.a)
        other.commit()
    assert len(entries(world, log.DATA_USE_REFUSED, tenant=world.b)) == 1
    assert entries(world, log.DATA_USE_REFUSED) == []


def test_texts_agree_with_the_tables_checks_and_render_in_both_languages(world: World, conn: psycopg.Connection):
    checks = " ".join(r[0] for r in conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'ft.consents'::regclass"))
    for column, values in (("purpose", texts.PURPOSES), ("scopes", texts.DATA_SCOPES),
                           ("language", texts.LANGUAGES)):
        listed = re.search(rf"\(?{column}\b[^A]*(?:ANY|<@) \(?(?:ARRAY)?\[([^\]]*)\]", checks)
        assert listed is not None, (column, checks)
        assert set(re.findall(r"'([^']+)'", listed.group(1))) == set(values), column
    until = datetime(2030, 1, 31, tzinfo=UTC)
    zh = texts.render("credit_assessment", ["weather", "soil"], "zh-CN", tenant="coop", until=until)
    en = texts.render("credit_assessment", ["weather", "soil"], "en", tenant="coop", until=until)
    assert "土壤传感器数据、本人田块的气象数据" in zh and "2030-01-31" in zh
    assert "soil sensor readings, weather readings" in en and "assessing my loan application" in en
    assert re.fullmatch(r"[0-9a-f]{64}", texts.VERSION)


# -- over HTTP ---------------------------------------------------------------------------------------------------


#: a route of another kind that uses a farmer's data and lets ConsentRequired propagate (its transaction rolls back)
probe = APIRouter()


@probe.get(api("/tenants/{tenant}/test-probe/{farmer}"))
def read_farmer_series(tenant: str, farmer: str, principal: Annotated[Principal, require("series:read")],
                       conn: TenantConnDep) -> dict[str, str]:
    consent = check.use_data(conn, principal, farmer, "credit_assessment", "soil", "series", "dev-1")
    return {"consent": consent.id}


@pytest.fixture(scope="module")
def app(module_app_db) -> Iterator[FastAPI]:
    with running_app(module_app_db.owner_url) as running:
        running.include_router(probe)
        yield running


@dataclass(frozen=True)
class Http:
    client: TestClient
    a: str
    b: str
    clerk: dict  # bearer headers
    officer: dict
    farmer: dict
    admin_a: dict
    admin_b: dict


@pytest.fixture
def http(app: FastAPI) -> Http:
    tag = uuid.uuid4().hex[:8]
    client = client_of(app, f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.9")
    a, b = f"coop-a-{tag}", f"coop-b-{tag}"
    add_tenant(client, a)
    add_tenant(client, b)
    headers = {}
    for tenant, login, roles in ((a, "clerk", ["clerk"]), (a, "officer", ["credit_officer"]),
                                 (a, "admin", ["tenant_admin"]), (b, "admin", ["tenant_admin"])):
        add_user(client, tenant, login, roles)
        headers[(tenant, login)] = bearer(sign_in(client, tenant, login)["session_token"])
    add_user(client, a, "wang", ["farmer"], farmer_id="f-1", password=None, pin=PIN)
    farmer = client.post(api("/auth/farmer-sign-in"), json={"tenant": a, "farmer_id": "f-1", "pin": PIN})
    assert farmer.status_code == 200, farmer.text
    return Http(client, a, b, headers[(a, "clerk")], headers[(a, "officer")],
                bearer(farmer.json()["session_token"]), headers[(a, "admin")], headers[(b, "admin")])


def http_grant(h: Http, pin: str = PIN, headers: dict | None = None, farmer: str = "f-1"):
    text = h.client.get(api(f"/tenants/{h.a}/consent-text"), headers=h.clerk,
                        params={"purpose": "credit_assessment", "scopes": ["soil"], "days": 90})
    assert text.status_code == 200, text.text
    body = {"purpose": "credit_assessment", "scopes": ["soil"], "days": 90, "pin": pin,
            "text_version": text.json()["version"], "language": "zh-CN"}
    return h.client.post(api(f"/tenants/{h.a}/farmers/{farmer}/consents"), json=body, headers=headers or h.clerk)


def test_http_refusal_without_consent_is_403_and_audited_once(http: Http):
    h = http
    refused = h.client.get(api(f"/tenants/{h.a}/test-probe/f-1"), headers=h.officer)
    assert refused.status_code == 403 and refused.json()["error"] == "consent_required", refused.text
    assert "has not consented" in refused.json()["message"]
    found = h.client.get(api(f"/tenants/{h.a}/audit"), params={"action": log.DATA_USE_REFUSED}, headers=h.admin_a)
    assert found.status_code == 200 and len(found.json()["entries"]) == 1, found.text
    assert found.json()["entries"][0]["detail"]["reason"] == "no_consent"


def test_http_grant_use_and_the_farmer_sees_who_read_their_data(http: Http):
    h = http
    wrong = http_grant(h, pin="000000")
    assert wrong.status_code == 403 and "wrong PIN" in wrong.json()["message"]
    granted = http_grant(h)
    assert granted.status_code == 201, granted.text
    used = h.client.get(api(f"/tenants/{h.a}/test-probe/f-1"), headers=h.officer)
    assert used.status_code == 200 and used.json() == {"consent": granted.json()["id"]}
    mine = h.client.get(api("/me/data-access"), headers=h.farmer)
    assert mine.status_code == 200, mine.text
    actions = [(e["action"], e["actor_name"]) for e in mine.json()["entries"]]
    assert actions[:3] == [(log.DATA_READ, "Officer"), ("consent.granted", "Clerk"), ("consent.pin_refused", "Clerk")]
    assert mine.json()["entries"][0]["purpose"] == "credit_assessment"
    # staff looking at the farmer's history is itself on the farmer's record
    staff_view = h.client.get(api(f"/tenants/{h.a}/farmers/f-1/data-access"), headers=h.admin_a)
    assert staff_view.status_code == 200 and len(staff_view.json()["entries"]) == 3
    again = h.client.get(api("/me/data-access"), params={"limit": 1}, headers=h.farmer).json()
    assert again["entries"][0]["action"] == log.AUDIT_READ and again["next_before_id"] == again["entries"][0]["id"]
    assert h.client.get(api(f"/tenants/{h.a}/farmers/f-1/data-access"), headers=h.officer).status_code == 403
    # the farmer lists and revokes their own consent, without a PIN
    listed = h.client.get(api("/me/consents"), headers=h.farmer).json()
    assert [c["status"] for c in listed] == ["active"]
    revoked = h.client.post(api(f"/tenants/{h.a}/consents/{listed[0]['id']}/revoke"), json={}, headers=h.farmer)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked", revoked.text
    assert h.client.get(api(f"/tenants/{h.a}/test-probe/f-1"), headers=h.officer).status_code == 403


def test_http_tenant_b_sees_nothing_of_tenant_a(http: Http):
    h = http
    assert http_grant(h).status_code == 201
    for path in (f"/tenants/{h.a}/audit", f"/tenants/{h.a}/farmers/f-1/data-access",
                 f"/tenants/{h.a}/farmers/f-1/consents"):
        assert h.client.get(api(path), headers=h.admin_b).status_code == 404, path
    own = h.client.get(api(f"/tenants/{h.b}/audit"), params={"limit": 500}, headers=h.admin_b).json()["entries"]
    assert own and {e["tenant_id"] for e in own} == {h.b}  # b's own sign-ins and invitations, nothing of a's
    assert not [e for e in own if e["farmer_id"] or e["action"].startswith("consent.")]
    assert h.client.get(api(f"/tenants/{h.b}/farmers/f-1/consents"), headers=h.admin_b).json() == []
    consent_id = h.client.get(api(f"/tenants/{h.a}/farmers/f-1/consents"), headers=h.clerk).json()[0]["id"]
    revoke = h.client.post(api(f"/tenants/{h.b}/consents/{consent_id}/revoke"), json={"pin": PIN}, headers=h.admin_b)
    assert revoke.status_code == 404
    # the platform admin reaches tenant a's log
    assert len(h.client.get(api(f"/tenants/{h.a}/audit"), headers=ADMIN).json()["entries"]) >= 1
