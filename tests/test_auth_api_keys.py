"""Partners' API keys (scopes, expiry, revocation, audit), rate limits shared by API processes, and the
tenant-path rule (another tenant's path answers 404), against a real PostgreSQL as ft_app."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.support.accounts import (
    ADMIN,
    add_tenant,
    add_user,
    api,
    audit_events,
    bearer,
    client_of,
    running_app,
    sign_in,
)


@pytest.fixture(scope="module")
def app(module_app_db) -> Iterator[FastAPI]:
    with running_app(module_app_db.owner_url) as running:
        yield running


@pytest.fixture
def tenant(app: FastAPI) -> str:
    name = f"bank-{uuid.uuid4().hex[:8]}"
    add_tenant(client_of(app), name)
    return name


def new_key(client: TestClient, tenant: str, headers: dict[str, str] = ADMIN, expect: int = 201, **body: object
            ) -> dict:
    response = client.post(api(f"/tenants/{tenant}/api-keys"), json={"name": "bank app"} | body, headers=headers)
    assert response.status_code == expect, response.text
    return response.json()


def test_a_key_is_shown_once_and_holds_only_its_scopes(app: FastAPI, tenant: str, module_app_db) -> None:
    client = client_of(app)
    add_user(client, tenant, "admin", ["tenant_admin"])
    admin = bearer(sign_in(client, tenant, "admin")["session_token"])
    client.cookies.clear()
    created = new_key(client, tenant, admin, scopes=["series:read", "registry:read"])
    key, record = created["key"], created["api_key"]
    assert key.startswith(f"ftk_{record['prefix']}_") and record["scopes"] == ["registry:read", "series:read"]
    listed = client.get(api(f"/tenants/{tenant}/api-keys"), headers=admin).json()
    assert [k["id"] for k in listed] == [record["id"]] and key not in str(listed)
    with psycopg.connect(module_app_db.owner_url) as conn:
        [stored] = conn.execute("SELECT secret_hash FROM ft.api_keys WHERE id = %s", (record["id"],)).fetchone()
    assert key.encode() not in bytes(stored) and len(bytes(stored)) == 32

    me = client.get(api("/auth/me"), headers=bearer(key)).json()
    assert me == {"kind": "api_key", "id": record["id"], "tenant_id": tenant, "roles": [],
                  "scopes": ["registry:read", "series:read"], "farmer_id": None, "csrf_token": None}
    response = client.get(api(f"/tenants/{tenant}/users"), headers=bearer(key))
    assert response.status_code == 403 and response.json()["error"] == "forbidden"
    assert "users:unlock" in response.json()["message"]
    response = client.post(api(f"/tenants/{tenant}/api-keys"), json={"name": "x", "scopes": ["series:read"]},
                           headers=bearer(key))
    assert response.status_code == 403
    [event] = audit_events(module_app_db.owner_url, [tenant], "api_key.created")
    assert event["actor"].startswith("user:") and event["target"] == f"api_key:{record['id']}"


def test_keys_cannot_administer_accounts_and_scopes_must_exist(app: FastAPI, tenant: str) -> None:
    client = client_of(app)
    refused = new_key(client, tenant, expect=422, scopes=["users:admin"])
    assert "users:admin cannot be given to an API key" in refused["message"]
    assert "unknown farms:read" in new_key(client, tenant, expect=422, scopes=["farms:read"])["message"]
    assert "future" in new_key(client, tenant, expect=422, scopes=["series:read"],
                               expires_at="2020-01-01T00:00:00Z")["message"]


def test_expired_revoked_and_wrong_keys_are_refused_and_audited(app: FastAPI, tenant: str, module_app_db) -> None:
    client = client_of(app, "192.0.2.44")
    expiring = new_key(client, tenant, scopes=["series:read"], expires_at="2099-01-01T00:00:00Z")
    revoked = new_key(client, tenant, scopes=["series:read"])
    for created in (expiring, revoked):
        assert client.get(api("/auth/me"), headers=bearer(created["key"])).status_code == 200
    with psycopg.connect(module_app_db.owner_url) as conn:  # time passes
        conn.execute("UPDATE ft.api_keys SET expires_at = now() - interval '1 s' WHERE id = %s",
                     (expiring["api_key"]["id"],))
    response = client.delete(api(f"/tenants/{tenant}/api-keys/{revoked['api_key']['id']}"), headers=ADMIN)
    assert response.status_code == 200 and response.json()["revoked_at"] is not None
    wrong = revoked["key"][:-4] + ("aaaa" if not revoked["key"].endswith("aaaa") else "bbbb")
    for key, message in ((expiring["key"], "expired"), (revoked["key"], "revoked"), (wrong, "invalid API key"),
                         ("ftk_0123456789ab_" + "x" * 43, "invalid API key"), ("ftk_nonsense", "invalid API key")):
        response = client.get(api("/auth/me"), headers=bearer(key))
        assert response.status_code == 401 and message in response.json()["message"], key
        assert response.headers["www-authenticate"] == "Bearer"
    refusals = audit_events(module_app_db.owner_url, [tenant], "api_key.refused")
    assert [(e["target"], e["detail"]["reason"], e["source_ip"]) for e in refusals] == [
        (f"api_key:{expiring['api_key']['id']}", "expired", "192.0.2.44"),
        (f"api_key:{revoked['api_key']['id']}", "revoked", "192.0.2.44"),
        (f"api_key:{revoked['api_key']['id']}", "wrong_secret", "192.0.2.44")]
    [event] = audit_events(module_app_db.owner_url, [tenant], "api_key.revoked")
    assert event["actor"] == "platform_admin:admin"
    missing = client.delete(api(f"/tenants/{tenant}/api-keys/k_0000000000000000"), headers=ADMIN)
    assert missing.status_code == 404


def test_the_rate_limit_holds_across_two_api_processes(app: FastAPI, tenant: str, module_app_db) -> None:
    key = new_key(client_of(app), tenant, scopes=["series:read"], rate_limit=3, rate_window_s=3600)["key"]
    with running_app(module_app_db.owner_url) as second_app:
        first, second = client_of(app), client_of(second_app)
        answers = [c.get(api("/auth/me"), headers=bearer(key)) for c in (first, second, first, second, first)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429, 429]
    limited = answers[3]
    assert limited.json()["error"] == "rate_limited"
    assert 3500 <= int(limited.headers["retry-after"]) <= 3600
    [event] = audit_events(module_app_db.owner_url, [tenant], "rate.limited")  # once per window
    assert event["actor"].startswith("api_key:") and event["detail"] == {"limit": 3, "window_s": 3600,
                                                                        "source": "testclient"}


def test_another_tenants_path_answers_404_like_a_tenant_that_does_not_exist(app: FastAPI) -> None:
    client = client_of(app)
    mine, theirs = f"coop-{uuid.uuid4().hex[:8]}", f"coop-{uuid.uuid4().hex[:8]}"
    add_tenant(client, mine)
    add_tenant(client, theirs)
    add_user(client, mine, "admin", ["tenant_admin"])
    victim = add_user(client, theirs, "farmer", ["farmer"], farmer_id="f-9", password=None, pin="480213")
    admin = bearer(sign_in(client, mine, "admin")["session_token"])
    client.cookies.clear()
    key = bearer(new_key(client, mine, scopes=["registry:read"])["key"])
    for headers in (admin, key):
        for method, path in (("GET", "/users"), ("GET", f"/users/{victim['id']}"), ("POST", "/api-keys"),
                             ("POST", f"/users/{victim['id']}/disable"), ("GET", "/api-keys")):
            other = client.request(method, api(f"/tenants/{theirs}{path}"), headers=headers, json={})
            absent = client.request(method, api(f"/tenants/no-such-{theirs}{path}"), headers=headers, json={})
            assert other.status_code == absent.status_code == 404, (method, path, other.text)
            assert other.json()["message"].replace(theirs, "T") == absent.json()["message"].replace(
                f"no-such-{theirs}", "T")
    assert client.get(api(f"/tenants/{mine}/users/{victim['id']}"), headers=admin).status_code == 404
    assert client.get(api(f"/tenants/{theirs}/users/{victim['id']}"), headers=ADMIN).json()["status"] == "active"
