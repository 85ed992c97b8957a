"""The loan pages over HTTP against the live service (uvicorn, ft_app): the terminal's "Loans for me", Apply
(consent shown in full and confirmed with the farmer's PIN; refusing it or a wrong PIN files nothing), the
receipt, status, appeal and cancel; the officer console's queue with filters, the application page, the
decision with maker-checker overrides, the PDF case file and the portfolio; CSRF and role refusals.

The data is tests/test_credit_service.py's SYNTHETIC world (farms with readings, consents, the demo shelf and
a scorecard trained on a synthetic world), with people to sign in as."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psycopg
import pytest
from pypdf import PdfReader

from tests.support import browser
from tests.test_credit_service import World, build_world, train_registry

pytestmark = pytest.mark.timeout(300)

PIN, PASSWORD = browser.World.pin, browser.World.password


class People:
    def __init__(self, world: World) -> None:
        self.world, self.tenant = world, world.tenant
        self.officer1, self.officer2 = f"off1-{world.tenant}", f"off2-{world.tenant}"
        self.ops = f"ops-{world.tenant}"


@pytest.fixture(scope="module")
def site(module_app_db, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, People]]:
    folder = train_registry(tmp_path_factory.mktemp("credit-web") / "registry")
    world = build_world(module_app_db.owner_url, folder, label="w")
    people = People(world)
    owner = module_app_db.owner_url
    for k in (1, 2, 3, 4):
        browser._user(owner, world.tenant, f"farmer{k}-{world.tenant}", ["farmer"], pin=PIN,
                      farmer_id=world.farmers[k])
    for login, role in ((people.officer1, "credit_officer"), (people.officer2, "credit_officer"),
                        (people.ops, "ops")):
        browser._user(owner, world.tenant, login, [role], password=PASSWORD)
    with browser.live_service(owner) as server:
        yield server.url, people


def _client(base: str, language: str = "en") -> httpx.Client:
    return httpx.Client(base_url=base, timeout=60, headers={"Accept-Language": language})


def _token(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None, page.text[:400]
    return found[1]


@contextmanager
def _farmer(base: str, people: People, k: int, language: str = "en") -> Iterator[httpx.Client]:
    with _client(base, language) as client:
        yield _signed_in_farmer(client, people, k)


def _signed_in_farmer(client: httpx.Client, people: People, k: int) -> httpx.Client:
    page = client.get("/terminal/sign-in", params={"tenant": people.tenant})
    answer = client.post("/terminal/sign-in", data={"tenant": people.tenant, "farmer_id": people.world.farmers[k],
                                                    "pin": PIN, "csrf_token": _token(page)})
    assert answer.status_code == 303, answer.text[:300]
    return client


@contextmanager
def _staff(base: str, people: People, login: str, area: str = "officer") -> Iterator[httpx.Client]:
    with _client(base) as client:
        yield _signed_in_staff(client, people, login, area)


def _signed_in_staff(client: httpx.Client, people: People, login: str, area: str) -> httpx.Client:
    page = client.get(f"/{area}/sign-in")
    answer = client.post(f"/{area}/sign-in", data={"tenant": people.tenant, "login": login, "password": PASSWORD,
                                                   "csrf_token": _token(page)})
    assert answer.status_code == 303, answer.text[:300]
    return client


def _text(page: httpx.Response) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.text))


def _apply(client: httpx.Client, people: People, k: int, **changes: str) -> httpx.Response:
    page = client.get("/terminal/apply")
    version = re.search(r'name="text_version" value="([0-9a-f]+)"', page.text)
    assert version is not None
    data = {"csrf_token": _token(page), "text_version": version[1], "farm": people.world.farms[k], "amount": "300",
            "term": "6", "purpose": "inputs", "product": "", "agree": "yes", "pin": PIN} | changes
    return client.post("/terminal/apply", data=data)


def _applications(people: People, farmer: int) -> list[tuple[str, str]]:
    with psycopg.connect(people.world.owner_url) as conn:
        return conn.execute("SELECT id, status FROM ft.loan_applications WHERE tenant_id = %s AND farmer_id = %s"
                            " ORDER BY created_at", (people.tenant, people.world.farmers[farmer])).fetchall()


def test_loans_for_me_are_ranked_for_the_farm_with_plain_costs(site) -> None:
    base, people = site
    with _farmer(base, people, 1) as client:
        page = client.get("/terminal/products", params={"amount": "300", "term": "6", "purpose": "inputs"})
        chinese = client.get("/terminal/products", params={"amount": "300", "lang": "zh-CN"})
        bad = client.get("/terminal/products", params={"amount": "lots", "lang": "en"})
    assert page.status_code == 200
    words = _text(page)
    assert "You repay in total" in words and "Interest in total" in words and "At harvest" in words
    assert "Seasonal input loan" in words and "Apply for this loan" in words
    assert "季节性农资贷款" in chinese.text and "利息合计" in chinese.text
    assert bad.status_code == 200 and "Please check the amount" in bad.text
    with _farmer(base, people, 4) as client:  # no consent yet: the shelf, and a word on why
        plain = client.get("/terminal/products")
    assert "we need your consent" in _text(plain) and "Seasonal input loan" in plain.text


def test_apply_needs_consent_and_the_farmers_own_pin(site) -> None:
    base, people = site
    before = _applications(people, 4)
    with _farmer(base, people, 4) as client:
        form = client.get("/terminal/apply")
        assert "I allow" in form.text and "assessing my loan application" in form.text  # the consent in full
        refused = _apply(client, people, 4, agree="")
        assert refused.status_code == 422 and "the application was not sent" in refused.text
        wrong = _apply(client, people, 4, pin="000000")
        assert wrong.status_code == 403 and "Wrong PIN" in wrong.text
        forged = _apply(client, people, 4, csrf_token="forged")
        assert forged.status_code == 403
    assert _applications(people, 4) == before
    with psycopg.connect(people.world.owner_url) as conn:
        pin_refused = conn.execute("SELECT count(*) FROM ft.audit_log WHERE tenant_id = %s"
                                   " AND action = 'consent.pin_refused' AND farmer_id = %s",
                                   (people.tenant, people.world.farmers[4])).fetchone()
    assert pin_refused is not None and pin_refused[0] >= 1


def test_a_farmer_applies_prints_a_receipt_tracks_and_cancels(site) -> None:
    base, people = site
    with _farmer(base, people, 4) as client:
        filed = _apply(client, people, 4)
        assert filed.status_code == 303, filed.text[:500]
        location = filed.headers["location"]
        app_id = re.search(r"/terminal/applications/(la_[0-9a-f]+)", location)[1]  # type: ignore[index]
        status = client.get(location)
        receipt = client.get(f"/terminal/applications/{app_id}/receipt")
        mine = client.get("/terminal/applications")
        assert "Your application was sent." in status.text and "waiting for an officer" in status.text
        assert app_id in receipt.text and "data-print" in receipt.text and "Receipt" in receipt.text
        assert app_id in mine.text
        cancelled = client.post(f"/terminal/applications/{app_id}/cancel", data={"csrf_token": _token(status)},
                                follow_redirects=True)
        assert "Your application is cancelled." in cancelled.text
    assert (app_id, "cancelled") in _applications(people, 4)
    with psycopg.connect(people.world.owner_url) as conn:
        granted = conn.execute("SELECT count(*) FROM ft.audit_log WHERE tenant_id = %s AND action = 'consent.granted'"
                               " AND farmer_id = %s", (people.tenant, people.world.farmers[4])).fetchone()
    assert granted == (1,)
    with _farmer(base, people, 2) as other:  # another farmer's application: not found
        assert other.get(f"/terminal/applications/{app_id}").status_code == 404
        assert other.post(f"/terminal/applications/{app_id}/cancel",
                          data={"csrf_token": _token(other.get("/terminal/applications"))}).status_code == 404


def test_officer_queue_filters_and_refuses_other_roles(site) -> None:
    base, people = site
    with _farmer(base, people, 1) as client:
        assert _apply(client, people, 1).status_code == 303
    with _staff(base, people, people.officer1) as officer:
        queue = officer.get("/officer")
        scored = officer.get("/officer", params={"status": "scored", "sort": "score", "order": "asc"})
        none = officer.get("/officer", params={"grade": "E", "trust": "none", "village": "Nowhere"})
        injected = officer.get("/officer", params={"sort": "a.id; DROP TABLE x"})
    assert queue.status_code == scored.status_code == injected.status_code == 200
    assert people.world.farmers[1] in queue.text and "Hekou" in queue.text
    assert people.world.farmers[1] in scored.text
    assert "No application matches these filters." in none.text
    with _staff(base, people, people.ops, "ops") as ops:
        refused = ops.get("/officer")
    assert refused.status_code == 303 and "refused=1" in refused.headers["location"]


def test_officer_decides_with_an_override_checked_by_a_second_officer(site) -> None:
    base, people = site
    with _farmer(base, people, 3) as client:  # the late weather clock: low trust, referred
        app_id = re.search(r"(la_[0-9a-f]+)", _apply(client, people, 3).headers["location"])[1]  # type: ignore[index]
    with _staff(base, people, people.officer1) as first:
        page = first.get(f"/officer/applications/{app_id}")
        words = _text(page)
        assert page.status_code == 200 and "Data trust" in words and "Provenance" in words
        assert re.search(r"[0-9a-f]{64}", page.text) and '<svg viewBox' in page.text
        assert "Audit trail" in words and "credit.assessed" in words
        forged = first.post(f"/officer/applications/{app_id}/decide", data={"csrf_token": "x", "outcome": "approve"})
        assert forged.status_code == 403
        no_reason = first.post(f"/officer/applications/{app_id}/decide",
                               data={"csrf_token": _token(page), "outcome": "approve", "reason": ""})
        assert no_reason.status_code == 422 and "Not done" in no_reason.text
        proposed = first.post(f"/officer/applications/{app_id}/decide", follow_redirects=True, data={
            "csrf_token": _token(page), "outcome": "approve", "reason": "Clock fault is known; visited the farm."})
        assert "Another officer must check your override." in proposed.text
        decision_id = re.search(r"(cd_[0-9a-f]+)", proposed.text)
        assert decision_id is None  # the maker gets no approve form
    with _staff(base, people, people.officer2) as second:
        queue = second.get("/officer")
        assert "override waiting for a second officer" in queue.text
        page = second.get(f"/officer/applications/{app_id}")
        action = re.search(r'action="(/officer/applications/[^"]+/overrides/cd_[0-9a-f]+)"', page.text)
        assert action is not None
        done = second.post(action[1], data={"csrf_token": _token(page), "verdict": "approve", "note": "agreed"},
                           follow_redirects=True)
        assert "The override is checked." in done.text
        pdf = second.get(f"/officer/applications/{app_id}/case-file.pdf")
        portfolio = second.get("/officer/portfolio")
    assert (app_id, "approved") in _applications(people, 3)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    reader = PdfReader(io.BytesIO(pdf.content))
    # pypdf reads the CJK font's two-byte codes back with a NUL before each Latin letter: dropped here
    text = "".join(p.extract_text() for p in reader.pages).replace("\x00", "")
    assert len(reader.pages) >= 1
    assert app_id in text and "credit.override_approved" in text
    assert "Population stability index" in portfolio.text and "Approval rate" in portfolio.text


def test_a_referral_is_appealed_with_a_note_and_reviewed(site) -> None:
    base, people = site
    with _farmer(base, people, 3) as client:
        app_id = re.search(r"(la_[0-9a-f]+)", _apply(client, people, 3).headers["location"])[1]  # type: ignore[index]
    with _staff(base, people, people.officer1) as officer:
        page = officer.get(f"/officer/applications/{app_id}")
        officer.post(f"/officer/applications/{app_id}/decide",
                     data={"csrf_token": _token(page), "outcome": "refer", "reason": ""})
    assert (app_id, "referred") in _applications(people, 3)
    with _farmer(base, people, 3, "zh-CN") as client:
        page = client.get(f"/terminal/applications/{app_id}")
        assert "申诉" in page.text
        appealed = client.post(f"/terminal/applications/{app_id}/appeal", follow_redirects=True,
                               data={"csrf_token": _token(page), "note": "My weather station clock was wrong."})
        assert appealed.status_code == 200
    assert (app_id, "appealed") in _applications(people, 3)
    with _staff(base, people, people.officer2) as officer:
        page = officer.get(f"/officer/applications/{app_id}")
        assert "My weather station clock was wrong." in page.text
        officer.post(f"/officer/applications/{app_id}/review", data={"csrf_token": _token(page)})
    assert (app_id, "under_review") in _applications(people, 3)
