"""A write is answered only once it is committed: the request's transaction ends before the response leaves.

The routes' connections are FastAPI dependencies with ``yield`` (cloud.api.deps); what follows the
``yield`` (the COMMIT) must run before the answer is sent, or a client could be told 201 about a write
that then fails to commit, and a read right after a write could miss it.  Both are shown here with a
trigger that runs at COMMIT (a deferred constraint trigger on ``ft.farms``): one that fails the commit,
one that makes it slow, so a response sent before the commit would be seen by the client first.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.support.accounts import ADMIN, add_tenant, api, client_of, running_app
from tests.support.browser import live_service

FAILS = "fails at commit"
SLOW = "slow at commit"
SLOW_COMMIT_S = 1.5

_TRIGGER = f"""
CREATE FUNCTION ft.test_commit_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.name = '{FAILS}' THEN
        RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'check_violation';
    ELSIF NEW.name = '{SLOW}' THEN
        PERFORM pg_sleep({SLOW_COMMIT_S});
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER test_commit_check AFTER INSERT ON ft.farms DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ft.test_commit_check();
"""


@pytest.fixture(scope="module")
def owner_url(module_app_db) -> str:
    """One database for the module (its tests use tenants of their own), with the trigger."""
    with psycopg.connect(module_app_db.owner_url, autocommit=True) as conn:
        conn.execute(_TRIGGER)
    return module_app_db.owner_url


def _farms(owner_url: str, tenant: str) -> list[str]:
    with psycopg.connect(owner_url) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM ft.farms WHERE tenant_id = %s ORDER BY id", (tenant,))]


def test_a_write_whose_commit_fails_is_not_answered_as_done(owner_url: str) -> None:
    with running_app(owner_url) as app:
        add_tenant(client_of(app), "coop-c")
        client = TestClient(app, base_url="https://testserver", raise_server_exceptions=False)
        refused = client.post(api("/tenants/coop-c/farms"), json={"id": "farm-x", "name": FAILS}, headers=ADMIN)
        assert refused.status_code >= 500 or refused.status_code == 409, refused.text
        assert refused.json()["error"] in ("internal", "conflict")
        made = client.post(api("/tenants/coop-c/farms"), json={"id": "farm-y", "name": "fine"}, headers=ADMIN)
        assert made.status_code == 201, made.text
    assert _farms(owner_url, "coop-c") == ["farm-y"]


@pytest.fixture
def live(owner_url: str) -> Iterator[str]:
    with live_service(owner_url) as server:
        yield server.url


def test_a_read_right_after_a_write_sees_it(owner_url: str, live: str) -> None:
    with httpx.Client(base_url=live, headers=ADMIN, timeout=30) as client:
        assert client.post(api("/tenants"), json={"id": "coop-s", "name": "S"}).status_code == 201
        made = client.post(api("/tenants/coop-s/farms"), json={"id": "farm-s", "name": SLOW})
        assert made.status_code == 201, made.text
        # another connection, at once: the farm is there, because the answer came after the commit
        with httpx.Client(base_url=live, headers=ADMIN, timeout=30) as other:
            read = other.get(api("/tenants/coop-s/farms/farm-s"))
        assert read.status_code == 200, read.text
        assert read.json()["name"] == SLOW
