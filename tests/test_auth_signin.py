"""Signing in against a real PostgreSQL, the API connecting as ft_app: sessions, cookies and CSRF, growing
delays, lockout and a clerk's unlock, the per-source limit, invitations, disabling."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cloud.auth import lockout
from tests.support.accounts import (
    ADMIN,
    PASSWORD,
    PIN,
    add_tenant,
    add_user,
    api,
    audit_events,
    bearer,
    client_of,
    running_app,
    sign_in,
)


@dataclass(frozen=True)
class World:
    """One test's tenants (unique: the tests of this module share a database) and its own source address."""

    a: str
    b: str
    ip: str


@pytest.fixture
def world() -> World:
    tag = uuid.uuid4().hex[:8]
    return World(f"coop-a-{tag}", f"coop-b-{tag}", f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.7")


@pytest.fixture(scope="module")
def app(module_app_db) -> Iterator[FastAPI]:
    with running_app(module_app_db.owner_url) as running:
        yield running


@pytest.fixture
def client(app: FastAPI, world: World) -> TestClient:
    test_client = client_of(app, world.ip)
    add_tenant(test_client, world.a)
    add_tenant(test_client, world.b)
    return test_client


def events(db, world: World, action: str) -> list[dict]:
    return audit_events(db.owner_url, [world.a, world.b, f"{world.a}-zz"], action)


def owner_sql(module_app_db, query: str, *params: object) -> None:
    """Change rows as the owner, in platform scope: how a test makes time pass without waiting."""
    with psycopg.connect(module_app_db.owner_url, autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT set_config('ft.scope', 'platform', true)")
        conn.execute(query, params)


def test_sign_in_gives_a_session_token_a_secure_cookie_and_a_csrf_token(world: World, client: TestClient,
                                                                         module_app_db) -> None:
    user = add_user(client, world.a, "amina", ["credit_officer"])
    response = client.post(api("/auth/sign-in"), json={"tenant": world.a, "login": "Amina ", "password": PASSWORD},
                           headers={"User-Agent": "pytest"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["session_token"].startswith("fts_") and body["me"]["id"] == user["id"]
    assert body["me"]["roles"] == ["credit_officer"] and "credit:decide" in body["me"]["scopes"]
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"ft_session={body['session_token']};")
    assert "HttpOnly" in cookie and "Secure" in cookie and "samesite=lax" in cookie.lower()

    me = client.get(api("/auth/me"), headers=bearer(body["session_token"])).json()
    assert me["kind"] == "user" and me["tenant_id"] == world.a and me["csrf_token"] is None
    client.cookies.clear()
    [ok] = events(module_app_db, world, "signin.ok")
    assert ok["actor"] == f"user:{user['id']}" and ok["tenant_id"] == world.a and ok["source_ip"] == world.ip


def test_cookie_writes_need_the_csrf_token_bearer_writes_do_not(world: World, client: TestClient) -> None:
    add_user(client, world.a, "amina", ["tenant_admin"])
    signed = sign_in(client, world.a, "amina")  # the client keeps the cookie
    assert client.get(api("/auth/me")).json()["csrf_token"] == signed["csrf_token"]  # GET: no token needed
    invite = {"login": "joseph", "roles": ["clerk"]}
    response = client.post(api(f"/tenants/{world.a}/users"), json=invite)
    assert response.status_code == 403 and "X-CSRF-Token" in response.json()["message"]
    response = client.post(api(f"/tenants/{world.a}/users"), json=invite, headers={"X-CSRF-Token": "forged"})
    assert response.status_code == 403 and "wrong X-CSRF-Token" in response.json()["message"]
    response = client.post(api(f"/tenants/{world.a}/users"), json=invite,
                           headers={"X-CSRF-Token": signed["csrf_token"]})
    assert response.status_code == 201, response.text
    client.cookies.clear()
    response = client.post(api(f"/tenants/{world.a}/users"), json={"login": "wanjiru", "roles": ["ops"]},
                           headers=bearer(signed["session_token"]))
    assert response.status_code == 201, response.text


def test_the_cookie_is_not_secure_only_in_dev_mode_over_http(world: World, app: FastAPI, client: TestClient,
                                                              module_app_db) -> None:
    credentials = {"tenant": world.a, "login": "amina", "password": PASSWORD}
    add_user(client, world.a, "amina", ["ops"])
    response = client_of(app, base_url="http://testserver").post(api("/auth/sign-in"), json=credentials)
    assert response.status_code == 200 and "Secure" in response.headers["set-cookie"]
    with running_app(module_app_db.owner_url, dev_mode=True) as dev_app:
        for base_url, secure in (("http://testserver", False), ("https://testserver", True)):
            response = client_of(dev_app, base_url=base_url).post(api("/auth/sign-in"), json=credentials)
            assert response.status_code == 200, response.text
            assert ("Secure" in response.headers["set-cookie"]) is secure, base_url


def test_a_wrong_password_and_an_unknown_login_are_refused_alike(world: World, client: TestClient,
                                                                 module_app_db) -> None:
    add_user(client, world.a, "amina", ["ops"])
    wrong = sign_in(client, world.a, "amina", "not the password", expect=401)
    unknown = sign_in(client, world.a, "nobody", PASSWORD, expect=401)
    other_tenant = sign_in(client, world.b, "amina", PASSWORD, expect=401)
    no_tenant = sign_in(client, f"{world.a}-zz", "amina", PASSWORD, expect=401)
    assert wrong == unknown == other_tenant == no_tenant == {"error": "unauthorized",
                                                            "message": "wrong login or password"}
    failed = events(module_app_db, world, "signin.failed")
    assert [(e["tenant_id"], e["target"], e["detail"]["failures"]) for e in failed] == [
        (world.a, "account:amina", 1), (world.a, "account:nobody", 1), (world.b, "account:amina", 1),
        (f"{world.a}-zz", "account:amina", 1)]
    assert all(e["actor"] is None and e["source_ip"] == world.ip for e in failed)


def test_delays_grow_after_failures_and_the_account_locks_until_a_clerk_unlocks(
        world: World, client: TestClient, module_app_db) -> None:
    amina = add_user(client, world.a, "amina", ["credit_officer"])
    add_user(client, world.a, "clerk-a", ["clerk"])
    add_user(client, world.b, "clerk-b", ["clerk"])
    retry_afters = []
    for attempt in range(1, lockout.LOCK_AFTER + 1):
        sign_in(client, world.a, "amina", "wrong password", expect=401)
        if lockout.ACCOUNT_FREE < attempt < lockout.LOCK_AFTER:  # (the free ones: the next attempt was a 401)
            response = client.post(api("/auth/sign-in"), json={"tenant": world.a, "login": "amina",
                                                               "password": PASSWORD})
            assert response.status_code == 429, (attempt, response.text)  # refused without checking the password
            retry_afters.append(int(response.headers["retry-after"]))
            owner_sql(module_app_db, "UPDATE ft.signin_accounts SET next_allowed_at = now()"
                      " WHERE tenant_id = %s AND account = 'amina'", world.a)
    assert retry_afters == [1, 2, 4, 8, 16, 32]
    assert [lockout.delay_s(n, lockout.ACCOUNT_FREE) for n in (3, 4, 13, 30, 99)] == [0, 1, 512, 900, 900]

    locked = client.post(api("/auth/sign-in"), json={"tenant": world.a, "login": "amina", "password": PASSWORD})
    assert locked.status_code == 423 and locked.json()["error"] == "locked" and "clerk" in locked.json()["message"]
    [event] = events(module_app_db, world, "signin.locked")
    assert event["target"] == "account:amina" and event["detail"]["failures"] == lockout.LOCK_AFTER

    clerk_b = sign_in(client, world.b, "clerk-b")["session_token"]
    client.cookies.clear()
    unlock = {"identity_checked": "national ID card seen"}
    response = client.post(api(f"/tenants/{world.a}/users/{amina['id']}/unlock"), json=unlock, headers=bearer(clerk_b))
    assert response.status_code == 404  # another tenant's clerk: the tenant does not even exist for them
    clerk_a = sign_in(client, world.a, "clerk-a")["session_token"]
    client.cookies.clear()
    listed = client.get(api(f"/tenants/{world.a}/users"), headers=bearer(clerk_a)).json()
    assert [(u["login"], u["locked"]) for u in listed] == [("amina", True), ("clerk-a", False)]
    response = client.post(api(f"/tenants/{world.a}/users/{amina['id']}/unlock"), json=unlock, headers=bearer(clerk_a))
    assert response.status_code == 200, response.text
    assert response.json()["unlocked"] == ["amina"] and response.json()["user"]["locked"] is False
    [event] = events(module_app_db, world, "account.unlocked")
    assert event["detail"]["identity_checked"] == "national ID card seen" and event["actor"].startswith("user:")
    sign_in(client, world.a, "amina")


def test_a_success_clears_the_account_failures(world: World, client: TestClient, module_app_db) -> None:
    add_user(client, world.a, "amina", ["ops"])
    for _ in range(lockout.ACCOUNT_FREE):
        sign_in(client, world.a, "amina", "wrong password", expect=401)
    sign_in(client, world.a, "amina")
    sign_in(client, world.a, "amina", "wrong password", expect=401)
    assert [e["detail"]["failures"] for e in events(module_app_db, world, "signin.failed")] == [1, 2, 3, 1]


def test_one_source_trying_many_accounts_is_slowed_down(world: World, client: TestClient, module_app_db) -> None:
    add_user(client, world.a, "amina", ["ops"])
    for n in range(lockout.SOURCE_FREE):
        sign_in(client, world.a, f"guess-{n}", "password123", expect=401)  # each account fails once only
    sign_in(client, world.a, "amina", "password123", expect=401)  # the source's 21st failure: 1 s delay
    response = client.post(api("/auth/sign-in"), json={"tenant": world.a, "login": "amina", "password": PASSWORD})
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    [event] = events(module_app_db, world, "signin.throttled")
    assert event["detail"]["by"] == "source" and event["source_ip"] == world.ip


def test_a_farmer_signs_in_with_the_pin(world: World, client: TestClient, module_app_db) -> None:
    farmer = add_user(client, world.a, "farmer-f1", ["farmer"], farmer_id="f-1", password=None, pin=PIN)
    response = client.post(api("/auth/farmer-sign-in"), json={"tenant": world.a, "farmer_id": "f-1", "pin": PIN})
    assert response.status_code == 200, response.text
    assert response.json()["me"] | {"csrf_token": None} == {
        "kind": "user", "id": farmer["id"], "tenant_id": world.a, "roles": ["farmer"],
        "scopes": ["consent:manage", "credit:apply", "registry:read", "series:read"], "farmer_id": "f-1",
        "csrf_token": None}
    client.cookies.clear()
    response = client.post(api("/auth/farmer-sign-in"), json={"tenant": world.a, "farmer_id": "f-1", "pin": "000000"})
    assert response.status_code == 401 and response.json()["message"] == "wrong farmer id or PIN"
    sign_in(client, world.a, "farmer-f1", PIN, expect=401)  # the PIN is not a password
    with psycopg.connect(module_app_db.owner_url) as conn:
        row = conn.execute("SELECT password_hash, pin_hash FROM ft.users WHERE id = %s", (farmer["id"],)).fetchone()
    assert row is not None and row[0] is None and row[1].startswith("$argon2id$") and PIN not in row[1]


def test_invitations_need_strong_secrets_and_work_once(world: World, client: TestClient) -> None:
    invited = client.post(api(f"/tenants/{world.a}/users"), json={"login": "Peter", "roles": ["technician"]},
                          headers=ADMIN).json()
    assert invited["user"]["status"] == "invited" and invited["user"]["login"] == "peter"
    token = invited["invite_token"]
    response = client.post(api("/auth/accept-invite"), json={"token": token, "password": "short"})
    assert response.status_code == 422 and "10-256 characters" in response.json()["message"]
    response = client.post(api("/auth/accept-invite"), json={"token": token})
    assert response.status_code == 422 and "password: required" in response.json()["message"]
    sign_in(client, world.a, "peter", PASSWORD, expect=401)  # invited, not active yet
    assert client.post(api("/auth/accept-invite"), json={"token": token, "password": PASSWORD}).status_code == 200
    response = client.post(api("/auth/accept-invite"), json={"token": token, "password": PASSWORD})
    assert response.status_code == 404
    response = client.post(api(f"/tenants/{world.a}/users"), json={"login": "peter", "roles": ["ops"]}, headers=ADMIN)
    assert response.status_code == 409
    response = client.post(api(f"/tenants/{world.a}/users"), json={"login": "f", "roles": ["farmer"]}, headers=ADMIN)
    assert response.status_code == 422 and "farmer_id" in response.json()["message"]
    response = client.post(api(f"/tenants/{world.a}/users"), json={"login": "x", "roles": ["platform_admin"]},
                           headers=ADMIN)
    assert response.status_code == 422


def test_sessions_end_at_expiry_when_idle_on_sign_out_and_when_disabled(world: World, client: TestClient,
                                                                        module_app_db) -> None:
    amina = add_user(client, world.a, "amina", ["ops"])
    add_user(client, world.a, "admin-a", ["tenant_admin"])
    client.cookies.clear()
    tokens = [sign_in(client, world.a, "amina")["session_token"] for _ in range(4)]
    client.cookies.clear()
    for token in tokens:
        assert client.get(api("/auth/me"), headers=bearer(token)).status_code == 200
    expired, idle, signed_out, disabled = tokens
    by_token = " WHERE token_hash = sha256(%s)"
    owner_sql(module_app_db, "UPDATE ft.sessions SET expires_at = now() - interval '1 s'" + by_token, expired.encode())
    owner_sql(module_app_db, "UPDATE ft.sessions SET last_seen_at = now() - interval '3 h'" + by_token, idle.encode())
    assert client.post(api("/auth/sign-out"), headers=bearer(signed_out)).status_code == 204
    for token in (expired, idle, signed_out):
        response = client.get(api("/auth/me"), headers=bearer(token))
        assert response.status_code == 401 and "sign in again" in response.json()["message"]
    assert client.get(api("/auth/me"), headers=bearer(disabled)).status_code == 200
    admin = sign_in(client, world.a, "admin-a")["session_token"]
    client.cookies.clear()
    response = client.post(api(f"/tenants/{world.a}/users/{amina['id']}/disable"), headers=bearer(admin))
    assert response.status_code == 200 and response.json()["status"] == "disabled"
    assert client.get(api("/auth/me"), headers=bearer(disabled)).status_code == 401
    sign_in(client, world.a, "amina", expect=401)


def test_roles_in_the_database_agree_with_the_principal_roles(world: World, client: TestClient) -> None:
    from cloud.auth.principal import TENANT_ROLES

    for role in TENANT_ROLES:
        extra = {"farmer_id": f"f-{role}"} if role == "farmer" else {}
        response = client.post(api(f"/tenants/{world.a}/users"), json={"login": f"u-{role}", "roles": [role]} | extra,
                               headers=ADMIN)
        assert response.status_code == 201, response.text


def test_the_cli_invites_a_tenant_admin_who_accepts_and_signs_in(world: World, client: TestClient,
                                                                  module_app_db) -> None:
    from typer.testing import CliRunner

    from fieldtrust.cli.main import app as cli

    args = ["cloud", "invite-user", world.a, "First.Admin", "--role", "tenant_admin", "--name", "First Admin",
            "--database-url", module_app_db.owner_url, "--base-url", "https://ft.example/"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    token = next(line.strip() for line in result.output.splitlines() if line.strip().startswith("fti_"))
    assert f"https://ft.example/accept-invite#token={token}" in result.output
    assert client.post(api("/auth/accept-invite"), json={"token": token, "password": PASSWORD}).status_code == 200
    assert sign_in(client, world.a, "first.admin")["me"]["roles"] == ["tenant_admin"]
    refused = CliRunner().invoke(cli, args[:4] + ["--role", "baker", "--database-url", module_app_db.owner_url])
    assert refused.exit_code == 1 and "baker cannot be given to a user" in refused.output
