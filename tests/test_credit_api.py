"""The credit API (cloud/api/routes/credit.py) on SYNTHETIC farm data in the store, with a deployed scorecard:
signed-in farmers, a clerk and two credit officers of tenant A, an officer of tenant B.  The world is
tests/test_credit_service.py's :func:`build_world`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from tests.support.accounts import PIN, add_user, api, audit_events, bearer, client_of, running_app, sign_in
from tests.test_credit_service import SEASON, World, build_world, train_registry


@dataclass
class Site:
    a: World
    b: World
    client: TestClient
    tokens: dict[str, str]  # "a:farmer1", "a:officer1", "a:officer2", "a:clerk", "b:officer1"

    def headers(self, who: str) -> dict[str, str]:
        return bearer(self.tokens[who])

    def url(self, world: World, path: str) -> str:
        return api(f"/tenants/{world.tenant}{path}")

    def apply(self, who: str, farm: int, amount: float = 300.0, expect: int = 201) -> dict:
        body = {"farm_id": self.a.farms[farm], "amount": amount, "term_months": 6, "purpose": "inputs",
                "prior_loans": 1, "prior_repaid": 1}
        response = self.client.post(self.url(self.a, "/credit/applications"), json=body, headers=self.headers(who))
        assert response.status_code == expect, response.text
        return response.json()


@pytest.fixture(scope="module")
def site(module_app_db, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    registry = train_registry(tmp_path_factory.mktemp("credit-api-models") / "registry")
    a = build_world(module_app_db.owner_url, registry, label="apia")
    b = build_world(module_app_db.owner_url, registry, label="apib", kinds={1: "clean"})
    with running_app(module_app_db.owner_url) as app:
        client = client_of(app)
        tokens = {}
        users = {"a:farmer1": (a, ["farmer"], a.farmers[1]), "a:farmer2": (a, ["farmer"], a.farmers[2]),
                 "a:farmer4": (a, ["farmer"], a.farmers[4]), "a:officer1": (a, ["credit_officer"], None),
                 "a:officer2": (a, ["credit_officer"], None), "a:clerk": (a, ["clerk"], None),
                 "b:officer1": (b, ["credit_officer"], None)}
        for who, (world, roles, farmer) in users.items():
            login = f"{world.tenant}-{who.split(':')[1]}"
            add_user(client, world.tenant, login, roles, farmer_id=farmer, pin=PIN if farmer else None)
            tokens[who] = sign_in(client, world.tenant, login)["session_token"]
        yield Site(a, b, client, tokens)


def test_a_farmer_applies_and_sees_the_recommendation_with_its_reasons(site: Site) -> None:
    view = site.apply("a:farmer1", 1)
    app, a = view["application"], view["assessment"]
    assert app["status"] == "scored" and app["season"] == SEASON and app["submitted_by"]
    assert a["recommendation"] in ("approve", "refer", "decline") and a["grade"]
    assert a["trust"] >= 0.6 and a["coverage"] > 0 and len(a["provenance_sha256"]) == 64
    assert {"origin", "clock"} <= set(a["trust_parts"]) and a["credit_limit"] > 0
    assert all({"en", "zh-CN"} == set(r["text"]) for r in a["reasons"])
    assert all(p["eligible"] for p in view["matched_products"])
    own = site.client.get(site.url(site.a, f"/credit/applications/{app['id']}"), headers=site.headers("a:farmer1"))
    assert own.status_code == 200 and own.json()["assessment"]["id"] == a["id"]
    read = site.client.get(site.url(site.a, f"/credit/applications/{app['id']}"), headers=site.headers("a:officer1"))
    assert read.status_code == 200
    reads = [e for e in audit_events(site.a.owner_url, [site.a.tenant], "credit.application_read")
             if e["target"] == f"loan_application:{app['id']}"]
    assert [e["actor"].split(":")[0] for e in reads] == ["user"]  # the officer's read; the farmer's own is not staff


def test_a_farmer_cannot_apply_on_another_farmers_farm(site: Site) -> None:
    site.apply("a:farmer2", 1, expect=404)


def test_without_consent_403_and_the_refusal_is_audited(site: Site) -> None:
    before = len(audit_events(site.a.owner_url, [site.a.tenant], "data_use_refused"))
    response = site.client.post(site.url(site.a, "/credit/applications"), headers=site.headers("a:farmer4"),
                                json={"farm_id": site.a.farms[4], "amount": 300, "term_months": 6, "purpose": "inputs"})
    assert response.status_code == 403 and response.json()["error"] == "consent_required"
    refused = audit_events(site.a.owner_url, [site.a.tenant], "data_use_refused")
    assert len(refused) == before + 1 and refused[-1]["detail"]["reason"] == "no_consent"
    queue = site.client.get(site.url(site.a, "/credit/applications"), params={"farm_id": site.a.farms[4]},
                            headers=site.headers("a:officer1"))
    assert queue.status_code == 200 and queue.json() == []


def test_low_trust_is_referred_and_the_queue_filters_and_sorts(site: Site) -> None:
    view = site.apply("a:clerk", 3, amount=1500)
    assert view["assessment"]["recommendation"] == "refer" and view["application"]["assisted_by"]
    low = site.client.get(site.url(site.a, "/credit/applications"), headers=site.headers("a:officer1"),
                          params={"trust": "low", "status": "scored", "sort": "score", "order": "asc"})
    assert low.status_code == 200
    assert view["application"]["id"] in [r["id"] for r in low.json()]
    assert all(r["trust"] < 0.6 and r["status"] == "scored" for r in low.json())
    by_village = site.client.get(site.url(site.a, "/credit/applications"), headers=site.headers("a:officer1"),
                                 params={"village": "Hekou", "sort": "amount", "order": "desc"}).json()
    amounts = [r["amount"] for r in by_village]
    assert amounts == sorted(amounts, reverse=True) and by_village
    bad_sort = site.client.get(site.url(site.a, "/credit/applications"), headers=site.headers("a:officer1"),
                               params={"sort": "farmer_id; DROP TABLE ft.farms"})
    assert bad_sort.status_code == 422
    farmer = site.client.get(site.url(site.a, "/credit/applications"), headers=site.headers("a:farmer1"))
    assert farmer.status_code == 403


def test_an_override_needs_a_second_officer_and_an_appeal_goes_before_a_person(site: Site) -> None:
    view = site.apply("a:farmer1", 1, amount=320)
    app_id, recommended = view["application"]["id"], view["assessment"]["recommendation"]
    decisions = site.url(site.a, f"/credit/applications/{app_id}/decisions")
    if recommended != "decline":
        short = site.client.post(decisions, json={"outcome": "decline", "reason": "no"},
                                 headers=site.headers("a:officer1"))
        assert short.status_code == 422
    made = site.client.post(decisions, json={"outcome": "decline", "reason": "the farm's well has run dry"},
                            headers=site.headers("a:officer1"))
    assert made.status_code == 201, made.text
    decision = made.json()
    if decision["status"] == "pending":
        check = f"{decisions}/{decision['id']}/check"
        own = site.client.post(check, json={"approve": True}, headers=site.headers("a:officer1"))
        assert own.status_code == 403 and "maker-checker" in own.json()["message"]
        farmer = site.client.post(check, json={"approve": True}, headers=site.headers("a:farmer1"))
        assert farmer.status_code == 403
        approved = site.client.post(check, json={"approve": True, "note": "agreed after the visit"},
                                    headers=site.headers("a:officer2"))
        assert approved.status_code == 200 and approved.json()["status"] == "in_force"
    seen = site.client.get(site.url(site.a, f"/credit/applications/{app_id}"), headers=site.headers("a:farmer1")).json()
    assert seen["application"]["status"] == "declined" and seen["application"]["outcome"] == "decline"
    assert seen["notices"] and seen["notices"][0]["text_en"] and seen["notices"][0]["text_zh"]
    appeal = site.client.post(site.url(site.a, f"/credit/applications/{app_id}/appeal"),
                              json={"note": "The well was deepened last week."}, headers=site.headers("a:farmer1"))
    assert appeal.status_code == 201 and appeal.json()["status"] == "appealed"
    queue = site.client.get(site.url(site.a, "/credit/applications"), params={"status": "appealed"},
                            headers=site.headers("a:officer2")).json()
    assert app_id in [r["id"] for r in queue]
    review = site.client.post(site.url(site.a, f"/credit/applications/{app_id}/review"),
                              headers=site.headers("a:officer2"))
    assert review.status_code == 200 and review.json()["status"] == "under_review"
    actions = {e["action"] for e in audit_events(site.a.owner_url, [site.a.tenant])
               if e["target"] == f"loan_application:{app_id}"}
    assert {"credit.application_submitted", "credit.assessed", "credit.decided", "credit.notice_issued",
            "credit.appealed", "credit.appeal_review_started"} <= actions


def test_cancel_by_the_farmer(site: Site) -> None:
    app_id = site.apply("a:farmer2", 2, amount=210)["application"]["id"]
    other = site.client.post(site.url(site.a, f"/credit/applications/{app_id}/cancel"), json={},
                             headers=site.headers("a:farmer1"))
    assert other.status_code == 404
    done = site.client.post(site.url(site.a, f"/credit/applications/{app_id}/cancel"), json={"note": "not needed"},
                            headers=site.headers("a:farmer2"))
    assert done.status_code == 200 and done.json()["status"] == "cancelled"


def test_tenant_b_cannot_see_tenant_a_applications(site: Site) -> None:
    app_id = site.apply("a:farmer1", 1, amount=230)["application"]["id"]
    b = site.headers("b:officer1")
    assert site.client.get(site.url(site.a, f"/credit/applications/{app_id}"), headers=b).status_code == 404
    assert site.client.get(site.url(site.b, f"/credit/applications/{app_id}"), headers=b).status_code == 404
    assert site.client.get(site.url(site.a, "/credit/applications"), headers=b).status_code == 404
    mine = site.client.get(site.url(site.b, "/credit/applications"), headers=b)
    assert mine.status_code == 200 and app_id not in mine.text and site.a.tenant not in mine.text
    decide = site.client.post(site.url(site.b, f"/credit/applications/{app_id}/decisions"),
                              json={"outcome": "approve"}, headers=b)
    assert decide.status_code == 404


def test_batch_scoring_and_products_for_a_farm(site: Site) -> None:
    body = {"amount": 400, "term_months": 6, "purpose": "inputs"}
    farmer = site.client.post(site.url(site.a, "/credit/batch-scores"), json=body, headers=site.headers("a:farmer1"))
    assert farmer.status_code == 403
    run = site.client.post(site.url(site.a, "/credit/batch-scores"), json=body, headers=site.headers("a:officer1"))
    assert run.status_code == 201, run.text
    result = run.json()
    assert result["farms"] == len(site.a.farms) and result["scored"] == len(result["scores"]) >= 3
    assert site.a.farms[4] in result["skipped"] and sum(result["outcomes"].values()) == result["scored"]
    products = site.client.get(site.url(site.a, f"/farms/{site.a.farms[1]}/credit-products"),
                               params={"amount": 300, "term_months": 6, "purpose": "inputs"},
                               headers=site.headers("a:farmer1"))
    assert products.status_code == 200, products.text
    shelf = products.json()
    assert shelf["currency"] == "USD" and {p["product_id"] for p in shelf["products"]} >= {"seasonal-input"}
    eligible = [p for p in shelf["products"] if p["eligible"]]
    assert all(p["cost"]["total_repayable"] > 300 for p in eligible)
    other = site.client.get(site.url(site.a, f"/farms/{site.a.farms[2]}/credit-products"),
                            params={"amount": 300, "term_months": 6, "purpose": "inputs"},
                            headers=site.headers("a:farmer1"))
    assert other.status_code == 404


