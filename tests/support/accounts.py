"""Accounts for API tests: an app as ft_app, a tenant, invited users who accepted, signed-in sessions.

Password hashing runs with argon2's cheapest profile in these tests (:func:`cheap_hashing`): the
production profile costs about a second per hash on a shared test machine, and sign-in tests hash
dozens of times.  tests/test_auth_passwords.py checks the production profile itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import argon2
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cloud.api.main import API_PREFIX, create_app
from cloud.auth import passwords
from cloud.config import CloudSettings

ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PASSWORD = "correct horse battery"
PIN = "480213"


def settings_for(owner_url: str, **changes: object) -> CloudSettings:
    """Settings of an API on the database of ``owner_url``; the API itself connects as ft_app."""
    values: dict[str, object] = {"database_url": owner_url, "admin_token": ADMIN_TOKEN, "kek": "ab" * 32} | changes
    return CloudSettings(_env_file=None, **values)  # type: ignore[call-arg]


def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "HASHER", argon2.PasswordHasher.from_parameters(argon2.profiles.CHEAPEST))


@contextlib.contextmanager
def running_app(owner_url: str, **changes: object) -> Iterator[FastAPI]:
    """An API app started (its pool open) for many tests, with cheap hashing meanwhile.  Tests talk to it through
    clients of their own (:func:`client_of`), each with its own cookies and source address."""
    with pytest.MonkeyPatch.context() as patch:
        cheap_hashing(patch)
        app = create_app(settings_for(owner_url, **changes))
        with TestClient(app):
            yield app


def client_of(app: FastAPI, source_ip: str = "testclient", base_url: str = "https://testserver") -> TestClient:
    """A client of a running app (not started again) from ``source_ip``."""
    return TestClient(app, base_url=base_url, client=(source_ip, 50000))


def api(path: str) -> str:
    return API_PREFIX + path


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def add_tenant(client: TestClient, tenant: str) -> None:
    response = client.post(api("/tenants"), json={"id": tenant, "name": tenant}, headers=ADMIN)
    assert response.status_code == 201, response.text


def add_user(client: TestClient, tenant: str, login: str, roles: list[str], *, farmer_id: str | None = None,
             password: str | None = PASSWORD, pin: str | None = None) -> dict:
    """Invite a user (as platform admin) and accept the invitation; the active user."""
    body = {"login": login, "roles": roles, "display_name": login.title()} | ({"farmer_id": farmer_id} if farmer_id
                                                                             else {})
    response = client.post(api(f"/tenants/{tenant}/users"), json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    accept = {"token": response.json()["invite_token"], "password": password, "pin": pin}
    response = client.post(api("/auth/accept-invite"), json={k: v for k, v in accept.items() if v is not None})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "active"
    return response.json()


def sign_in(client: TestClient, tenant: str, login: str, password: str = PASSWORD, expect: int = 200) -> dict:
    response = client.post(api("/auth/sign-in"), json={"tenant": tenant, "login": login, "password": password})
    assert response.status_code == expect, response.text
    return response.json()


def audit_events(owner_url: str, tenants: list[str], action: str | None = None) -> list[dict]:
    """The audit log's entries of ``tenants`` (and platform events naming one of them as an unknown tenant),
    oldest first, optionally of one action: ``actor`` is ``kind:id`` (None: nobody signed in), ``target``
    ``type:id``."""
    with psycopg.connect(owner_url) as conn:
        rows = conn.execute(
            "SELECT action, actor_kind, actor_id, coalesce(tenant_id, detail->>'unknown_tenant'), target_type,"
            " target_id, host(source_ip), detail FROM ft.audit_log"
            " WHERE (tenant_id = ANY(%s) OR detail->>'unknown_tenant' = ANY(%s)) AND (%s::text IS NULL OR action = %s)"
            " ORDER BY id", (tenants, tenants, action, action)).fetchall()
    return [{"action": act, "actor": None if kind == "anonymous" else f"{kind}:{actor}", "tenant_id": tenant,
             "target": f"{ttype}:{tid}", "source_ip": ip, "detail": detail}
            for act, kind, actor, tenant, ttype, tid, ip, detail in rows]
