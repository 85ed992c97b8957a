"""The farm registry through the API, as ft_app under row-level security: farmers, farms, fields, devices,
claim codes; validation errors, pagination, scopes, a farmer's own view, and the audit entries of it all."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from cloud.api.main import create_app
from cloud.api.pagination import NEXT_CURSOR
from cloud.store import claim_codes
from tests.conftest import AppDatabase
from tests.support.accounts import ADMIN, PIN, add_tenant, add_user, api, bearer, cheap_hashing, settings_for, sign_in

SQUARE = {"type": "Polygon", "coordinates": [[[34.70, -0.10], [34.71, -0.10], [34.71, -0.09], [34.70, -0.10]]]}


@pytest.fixture
def client(app_db: AppDatabase, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    cheap_hashing(monkeypatch)
    with TestClient(create_app(settings_for(app_db.owner_url))) as test_client:
        yield test_client


def call(client: TestClient, method: str, path: str, body: dict | None = None, *, expect: int = 200,
         headers: dict[str, str] = ADMIN, **params: object) -> dict | list:
    response = client.request(method, api(path), json=body, headers=headers, params=params)
    assert response.status_code == expect, response.text
    return response.json() if response.content else {}


def audit_actions(owner_url: str, tenant: str = "coop-a") -> list[str]:
    with psycopg.connect(owner_url) as conn:
        return [r[0] for r in conn.execute("SELECT action FROM ft.audit_log WHERE tenant_id = %s ORDER BY id",
                                           (tenant,))]


def seed(client: TestClient) -> None:
    """Tenants coop-a and coop-b; in coop-a farmer FR1 with farm A1 and fields FL1, FL2; farm A3 without farmer."""
    add_tenant(client, "coop-a")
    add_tenant(client, "coop-b")
    call(client, "POST", "/tenants/coop-a/farmers", {
        "id": "FR1", "name": "Amina Wanjiru", "phone": "+254 712-345-678", "village": "Kisumu",
        "national_id": "12345678", "sex": "female", "birth_year": 1985, "demographics_consent": True}, expect=201)
    call(client, "POST", "/tenants/coop-a/farms", {"id": "A1", "name": "Shamba", "farmer_id": "FR1",
                                                   "tenure": "leased", "village": "Kisumu", "crop": "maize"},
         expect=201)
    call(client, "POST", "/tenants/coop-a/farms", {"id": "A3", "name": "Other"}, expect=201)
    for field in ("FL1", "FL2"):
        call(client, "POST", "/tenants/coop-a/fields", {
            "id": field, "farm_id": "A1", "name": f"Field {field}", "area_ha": 0.8, "crop": "maize",
            "season": "2026-long-rains", "season_start": "2026-03-01", "season_end": "2026-08-31",
            "boundary": SQUARE}, expect=201)


def test_registry_entities_through_the_api_with_audit_entries(client: TestClient, app_db: AppDatabase) -> None:
    seed(client)
    farmer = call(client, "GET", "/tenants/coop-a/farmers/FR1")
    assert (farmer["phone"], farmer["has_national_id"], farmer["sex"], farmer["birth_year"]) == (
        "+254712345678", True, "female", 1985)
    assert not {"national_id", "national_id_hash"} & set(farmer)
    response = client.post(api("/tenants/coop-a/farmers"), json={"id": "FR2", "name": "Twice", "national_id":
                                                                 "12 345-678"}, headers=ADMIN)
    assert response.status_code == 409, response.text
    assert "already registered, as farmer 'FR1'" in response.json()["message"]
    assert [f["id"] for f in call(client, "GET", "/tenants/coop-a/farmers", national_id="12-345-678")] == ["FR1"]

    field = call(client, "GET", "/tenants/coop-a/fields/FL1")
    assert (field["farm_id"], field["crop"], field["season_end"], field["boundary"]) == (
        "A1", "maize", "2026-08-31", SQUARE)
    call(client, "POST", "/tenants/coop-a/gateways", {"id": "gw-1", "farm_id": "A1"}, expect=201)
    created = call(client, "POST", "/tenants/coop-a/devices", {
        "id": "node-1", "kind": "node", "field_id": "FL1", "gateway_id": "gw-1", "firmware_version": "1.2.0",
        "install_note": "north corner", "install_latitude": -0.095, "install_longitude": 34.705}, expect=201)
    assert created["key_hex"] and (created["device"]["farm_id"], created["device"]["field_id"]) == ("A1", "FL1")

    moved = call(client, "PATCH", "/tenants/coop-a/devices/node-1", {"field_id": "FL2", "firmware_version": "1.3.0"})
    assert (moved["field_id"], moved["firmware_version"], moved["install_note"]) == ("FL2", "1.3.0", "north corner")
    events = call(client, "GET", "/tenants/coop-a/devices/node-1/events")
    assert [(e["kind"], e["detail"]["from"]["field_id"], e["detail"]["to"]["field_id"]) for e in events] == [
        ("moved", "FL1", "FL2")]
    off_farm = call(client, "PATCH", "/tenants/coop-a/devices/node-1", {"farm_id": "A3"})
    assert (off_farm["farm_id"], off_farm["field_id"]) == ("A3", None)  # leaving the farm leaves its field

    assert call(client, "PATCH", "/tenants/coop-a/farms/A1", {"tenure": "owned"})["tenure"] == "owned"
    withdrawn = call(client, "PATCH", "/tenants/coop-a/farmers/FR1", {"demographics_consent": False})
    assert (withdrawn["sex"], withdrawn["birth_year"], withdrawn["demographics_consented_at"]) == (None, None, None)
    response = client.delete(api("/tenants/coop-a/farms/A1"), headers=ADMIN)
    assert response.status_code == 409 and "while a gateway refers to it" in response.json()["message"]
    call(client, "DELETE", "/tenants/coop-a/fields/FL1", expect=204)
    call(client, "GET", "/tenants/coop-a/fields/FL1", expect=404)
    call(client, "GET", "/tenants/coop-b/farms/A1", expect=404)  # another tenant's farm is unknown there

    assert audit_actions(app_db.owner_url) == [
        "tenant.created", "farmer.created", "farm.created", "farm.created", "field.created", "field.created",
        "farmer.data_read", "farmer.data_read", "gateway.created", "device.created", "device.updated",
        "device.updated", "farm.updated", "farmer.updated", "field.deleted"]
    with psycopg.connect(app_db.owner_url) as conn:
        read = conn.execute("SELECT actor_kind, farmer_id, purpose FROM ft.audit_log WHERE action = 'farmer.data_read'"
                            " ORDER BY id LIMIT 1").fetchone()
        assert read == ("platform_admin", "FR1", "registry")
        detail = conn.execute("SELECT detail FROM ft.audit_log WHERE action = 'farmer.updated'").fetchone()
        assert detail is not None and detail[0] | {"source": None} == {
            "sex": ["female", None], "birth_year": [1985, None], "source": None,
            "demographics_consented_at": [detail[0]["demographics_consented_at"][0], None]}


def test_invalid_registrations_are_422_naming_the_field(client: TestClient) -> None:
    seed(client)
    open_ring = {"type": "Polygon", "coordinates": [[[34.7, -0.1], [34.8, -0.1], [34.8, -0.2], [34.7, -0.2]]]}
    cases = [
        ("/farms", {"id": "A2", "name": "x", "crop": "kiwi"}, 422, "body.crop: Value error, crop: unknown crop 'kiwi'"),
        ("/farms", {"id": "A2", "name": "x", "tenure": "rented"}, 422, "body.tenure: Input should be 'owned'"),
        ("/farms", {"id": "A2", "name": "x", "farmer_id": "nobody"}, 404, "farmer 'nobody' not found in tenant"),
        ("/fields", {"id": "F9", "farm_id": "A1", "name": "x", "boundary": open_ring}, 422,
         "body.boundary: Value error, boundary: ring 0 is not closed"),
        ("/fields", {"id": "F9", "farm_id": "A1", "name": "x", "season": "spring"}, 422,
         "body.season: Value error, season: '<year>-<name>'"),
        ("/fields", {"id": "F9", "farm_id": "A1", "name": "x", "season": "2026-dry", "season_start": "2026-09-01",
                     "season_end": "2026-08-01"}, 422, "constraint fields_season_dates"),
        ("/fields", {"id": "F9", "farm_id": "nope", "name": "x"}, 404, "farm 'nope' not found in tenant 'coop-a'"),
        ("/farmers", {"id": "FR9", "name": "x", "sex": "male"}, 422, "kept only with the farmer's consent"),
        ("/farmers", {"id": "FR9", "name": "x", "phone": "call me maybe"}, 422, "phone: 6-20 digits"),
        ("/devices", {"id": "n-9", "kind": "node", "farm_id": "A3", "field_id": "FL1"}, 422,
         "field 'FL1' is on farm 'A1', not on farm 'A3'"),
        ("/claim-codes", {"farm_id": "A3", "field_id": "FL1"}, 422, "field 'FL1' is on farm 'A1', not on farm 'A3'"),
    ]
    for path, body, status, message in cases:
        response = client.post(api(f"/tenants/coop-a{path}"), json=body, headers=ADMIN)
        assert (response.status_code, message in response.text) == (status, True), (path, response.text)
    response = client.patch(api("/tenants/coop-a/farms/A1"), json={"owner": "x"}, headers=ADMIN)
    assert response.status_code == 422 and "body.owner: Extra inputs are not permitted" in response.json()["message"]


def test_lists_are_paged_by_cursor_without_skipping_or_repeating(client: TestClient) -> None:
    add_tenant(client, "coop-a")
    for i in range(7):
        call(client, "POST", "/tenants/coop-a/farms", {"id": f"P{i}", "name": f"Farm {i}"}, expect=201)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        response = client.get(api("/tenants/coop-a/farms"), params=params, headers=ADMIN)
        assert response.status_code == 200, response.text
        seen += [f["id"] for f in response.json()]
        pages += 1
        cursor = response.headers.get(NEXT_CURSOR)
        if cursor is None:
            break
    assert (seen, pages) == ([f"P{i}" for i in range(7)], 3)
    response = client.get(api("/tenants/coop-a/farms"), params={"cursor": "not a cursor!"}, headers=ADMIN)
    assert response.status_code == 422 and response.json()["message"].startswith("cursor: not a cursor of this API")
    assert client.get(api("/tenants/coop-a/farms"), params={"limit": 501}, headers=ADMIN).status_code == 422


def test_a_claim_code_is_redeemed_once_before_it_expires_and_guessing_is_rate_limited(
        client: TestClient, app_db: AppDatabase) -> None:
    seed(client)
    add_user(client, "coop-a", "clerk", ["clerk"])
    add_user(client, "coop-a", "tech", ["technician"])
    clerk = bearer(sign_in(client, "coop-a", "clerk")["session_token"])
    tech = bearer(sign_in(client, "coop-a", "tech")["session_token"])
    made = call(client, "POST", "/tenants/coop-a/claim-codes", {"farm_id": "A1", "field_id": "FL1",
                                                                 "note": "by the borehole"}, headers=clerk, expect=201)
    code = made["code"]
    assert made["claim_code"]["status"] == "open" and len(code) == 9 and code[4] == "-"
    listed = call(client, "GET", "/tenants/coop-a/claim-codes", headers=tech)
    assert [c["id"] for c in listed] == [made["claim_code"]["id"]] and "code" not in listed[0]
    call(client, "POST", "/tenants/coop-a/devices", {"id": "node-9", "kind": "node"}, headers=clerk, expect=403)
    call(client, "POST", "/tenants/coop-a/devices", {"id": "node-9", "kind": "node"}, headers=tech, expect=201)

    typed = code.replace("-", " ").lower()  # as a technician might type it
    redeem = {"code": typed, "device_id": "node-9", "install_note": "borehole", "install_latitude": -0.0951,
              "install_longitude": 34.7052}
    call(client, "POST", "/tenants/coop-a/claim-codes/redeem", redeem, headers=clerk, expect=403)
    done = call(client, "POST", "/tenants/coop-a/claim-codes/redeem", redeem, headers=tech)
    assert (done["device"]["farm_id"], done["device"]["field_id"], done["device"]["install_note"]) == (
        "A1", "FL1", "borehole")
    assert done["device"]["installed_at"] is not None
    assert (done["claim_code"]["status"], done["claim_code"]["used_by_device"]) == ("used", "node-9")
    events = call(client, "GET", "/tenants/coop-a/devices/node-9/events")
    assert [(e["kind"], e["detail"]["claim_code"], e["detail"]["to"]["field_id"]) for e in events] == [
        ("moved", made["claim_code"]["id"], "FL1")]

    refused = client.post(api("/tenants/coop-a/claim-codes/redeem"), json=redeem, headers=tech)
    assert refused.status_code == 409 and "was used by device 'node-9'" in refused.json()["message"]
    expiring = call(client, "POST", "/tenants/coop-a/claim-codes", {"farm_id": "A3"}, headers=clerk, expect=201)
    with psycopg.connect(app_db.owner_url) as conn:
        conn.execute("UPDATE ft.claim_codes SET created_at = now() - interval '2 days',"
                     " expires_at = now() - interval '1 day' WHERE id = %s", (expiring["claim_code"]["id"],))
    refused = client.post(api("/tenants/coop-a/claim-codes/redeem"), json=redeem | {"code": expiring["code"]},
                          headers=tech)
    assert refused.status_code == 409 and " was expired on " in refused.json()["message"]
    revoked = call(client, "POST", "/tenants/coop-a/claim-codes", {"farm_id": "A3"}, headers=clerk, expect=201)
    assert call(client, "DELETE", f"/tenants/coop-a/claim-codes/{revoked['claim_code']['id']}",
                headers=clerk)["status"] == "revoked"
    call(client, "POST", "/tenants/coop-a/claim-codes/redeem", redeem | {"code": revoked["code"]}, headers=tech,
         expect=409)
    with psycopg.connect(app_db.owner_url) as conn:
        farm = conn.execute("SELECT farm_id FROM ft.devices WHERE id = 'node-9'").fetchone()
        assert farm == ("A1",)  # refused codes changed nothing

    attempts = 4  # one redemption and three refusals so far
    while attempts < claim_codes.REDEEM_LIMIT:
        call(client, "POST", "/tenants/coop-a/claim-codes/redeem", redeem | {"code": "ZZZZ-ZZZZ"}, headers=tech,
             expect=404)
        attempts += 1
    limited = client.post(api("/tenants/coop-a/claim-codes/redeem"), json=redeem, headers=tech)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    actions = audit_actions(app_db.owner_url)
    assert actions.count("claim_code.created") == 3 and actions.count("claim_code.redeemed") == 1
    assert actions.count("claim_code.refused") == 3 + claim_codes.REDEEM_LIMIT - 4
    assert actions.count("claim_code.revoked") == 1


def test_a_farmer_reads_only_their_own_records_and_other_tenants_see_nothing(client: TestClient,
                                                                            app_db: AppDatabase) -> None:
    seed(client)
    add_user(client, "coop-a", "amina", ["farmer"], farmer_id="FR1", password=None, pin=PIN)
    add_user(client, "coop-b", "boss-b", ["tenant_admin"])
    response = client.post(api("/auth/farmer-sign-in"), json={"tenant": "coop-a", "farmer_id": "FR1", "pin": PIN})
    assert response.status_code == 200, response.text
    farmer = bearer(response.json()["session_token"])
    other = bearer(sign_in(client, "coop-b", "boss-b")["session_token"])
    before = audit_actions(app_db.owner_url).count("farmer.data_read")

    assert [f["id"] for f in call(client, "GET", "/tenants/coop-a/farms", headers=farmer)] == ["A1"]
    assert call(client, "GET", "/tenants/coop-a/farms", headers=farmer, farmer_id="someone-else") == []
    call(client, "GET", "/tenants/coop-a/farms/A3", headers=farmer, expect=404)
    assert [f["id"] for f in call(client, "GET", "/tenants/coop-a/farmers", headers=farmer)] == ["FR1"]
    assert [f["id"] for f in call(client, "GET", "/tenants/coop-a/fields", headers=farmer)] == ["FL1", "FL2"]
    call(client, "POST", "/tenants/coop-a/farms", {"id": "A9", "name": "x"}, headers=farmer, expect=403)
    assert audit_actions(app_db.owner_url).count("farmer.data_read") == before  # their own record: not audited

    for path in ("/farms", "/farmers", "/fields", "/devices", "/gateways", "/claim-codes", "/farms/A1",
                 "/farmers/FR1", "/fields/FL1"):
        call(client, "GET", f"/tenants/coop-a{path}", headers=other, expect=404)
    assert call(client, "GET", "/tenants/coop-b/farms", headers=other) == []
    call(client, "GET", "/tenants/coop-b/farms/A1", headers=other, expect=404)


def test_every_crop_the_credit_features_know_is_a_registry_crop() -> None:
    from cloud.store.fields import CROPS
    from rural_credit.features.agronomy import CROPS as AGRONOMY_CROPS

    assert set(AGRONOMY_CROPS) <= CROPS


def test_fieldtrust_cloud_create_tenant_and_claim_code(fresh_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from cloud.auth import users
    from cloud.store import claim_codes as store_codes
    from cloud.store import registry
    from fieldtrust.cli.main import app

    cheap_hashing(monkeypatch)
    runner, env = CliRunner(), {"FIELDTRUST_DATABASE_URL": fresh_db}
    result = runner.invoke(app, ["cloud", "create-tenant", "coop-c", "--name", "合作社 C", "--admin", "first.admin"],
                           env=env)
    assert result.exit_code == 0, result.output
    token = result.stdout.splitlines()[-1].strip()
    assert token.startswith(users.INVITE_PREFIX)
    assert runner.invoke(app, ["cloud", "create-tenant", "coop-c", "--name", "again"], env=env).exit_code == 1
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        registry.register_farm(conn, "coop-c", "C1", "Farm C1")
    result = runner.invoke(app, ["cloud", "claim-code", "coop-c", "--farm", "C1", "--valid-hours", "2"], env=env)
    assert result.exit_code == 0, result.output
    code = result.stdout.splitlines()[-1].strip()
    with psycopg.connect(fresh_db) as conn:
        row = conn.execute("SELECT farm_id, expires_at - created_at FROM ft.claim_codes WHERE code_hash = %s",
                           (store_codes.code_hash(code),)).fetchone()
        assert row is not None and row[0] == "C1" and row[1].total_seconds() == pytest.approx(7200, abs=5)
        actions = [r[0] for r in conn.execute("SELECT action FROM ft.audit_log WHERE tenant_id = 'coop-c' ORDER BY id")]
    assert actions == ["tenant.created", "user.invited", "claim_code.created"]
    result = runner.invoke(app, ["cloud", "claim-code", "coop-c", "--farm", "nope"], env=env)
    assert result.exit_code == 1 and "farm 'nope' not found in tenant 'coop-c'" in result.stderr
