"""The terminal's usage events against the live service (uvicorn, PostgreSQL as ft_app): the question asked once
(a no is remembered, a yes is a consent confirmed with the farmer's PIN), events kept under an active consent
and never without one (not asked, said no, withdrawn), the endpoint's CSRF token and its checks of what is
sent, pages kept as route patterns, the tenant's service metrics on /ops; then in a real browser, the page's
script sending views, clicks and time on page with ``navigator.sendBeacon`` for a farmer who said yes, and
nothing for one who said no."""

from __future__ import annotations

import contextlib
import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from cloud.store import farmers
from tests.support import browser
from tests.support.app_db import app_connect
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(300)
ASKED = "May we count how you use this terminal, to improve it?"


@pytest.fixture(scope="module")
def world(module_app_db) -> Iterator[tuple[str, str, browser.World]]:
    owner = module_app_db.owner_url
    with browser.live_service(owner) as server:
        yield owner, server.url, browser.seed_world(owner, server.url)


def _farmer(owner: str, people: browser.World) -> str:
    """A farmer of their own (so tests do not share answers), with the world's PIN."""
    farmer_id = f"F-{secrets.token_hex(3)}"
    with app_connect(owner, tenant=people.tenant) as conn:
        farmers.register_farmer(conn, people.tenant, farmer_id, {"name": f"Farmer {farmer_id}"}, actor=None)
        conn.commit()
    browser._user(owner, people.tenant, f"farmer-{farmer_id.lower()}", ["farmer"], pin=people.pin,
                  farmer_id=farmer_id)
    return farmer_id


def _token(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None, page.text[:500]
    return found[1]


@contextlib.contextmanager
def _signed_in(base: str, people: browser.World, farmer_id: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=60, headers={"Accept-Language": "en"}) as client:
        page = client.get("/terminal/sign-in", params={"tenant": people.tenant})
        answer = client.post("/terminal/sign-in", data={"tenant": people.tenant, "farmer_id": farmer_id,
                                                        "pin": people.pin, "csrf_token": _token(page)})
        assert answer.status_code == 303, answer.text[:300]
        yield client


def _events(client: httpx.Client, token: str, events: Any) -> httpx.Response:
    return client.post("/terminal/usage-events", data={"csrf_token": token, "events": json.dumps(events)})


def _stored(owner: str, farmer_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(owner) as conn:
        return conn.execute("SELECT kind, page, target, duration_ms, consent_id FROM ft.usage_events"
                            " WHERE farmer_id = %s ORDER BY id", (farmer_id,)).fetchall()


VISIT = [{"k": "view", "p": "/terminal/farm"}]


def test_a_farmer_who_says_no_is_not_asked_again_and_nothing_is_kept(world) -> None:
    owner, base, people = world
    farmer_id = _farmer(owner, people)
    with _signed_in(base, people, farmer_id) as client:
        farm = client.get("/terminal/farm")
        assert ASKED in farm.text and "usage.js" not in farm.text
        token = _token(farm)
        not_asked_yet = _events(client, token, VISIT)
        said_no = client.post("/terminal/service-metrics", data={"csrf_token": token, "answer": "no",
                                                                 "next": "/terminal/farm"})
        assert said_no.status_code == 303 and said_no.headers["location"] == "/terminal/farm"
        again = client.get("/terminal/farm")
        data = client.get("/terminal/data")
        after_no = _events(client, token, VISIT)
    assert not_asked_yet.status_code == after_no.status_code == 204
    assert ASKED not in again.text and "usage.js" not in again.text and ASKED not in data.text
    assert _stored(owner, farmer_id) == []
    with psycopg.connect(owner) as conn:
        answer = conn.execute("SELECT answer FROM ft.usage_prompts WHERE farmer_id = %s", (farmer_id,)).fetchone()
        consents = conn.execute("SELECT count(*) FROM ft.consents WHERE farmer_id = %s", (farmer_id,)).fetchone()
    assert answer == ("no",) and consents == (0,)


def test_yes_is_a_consent_with_the_pin_and_events_are_kept_until_it_is_withdrawn(world) -> None:
    owner, base, people = world
    farmer_id = _farmer(owner, people)
    with _signed_in(base, people, farmer_id) as client:
        consent_page = client.get("/terminal/service-metrics", params={"next": "/terminal/data"})
        token = _token(consent_page)
        no_pin = client.post("/terminal/service-metrics", data={"csrf_token": token, "answer": "yes"})
        wrong_pin = client.post("/terminal/service-metrics", data={"csrf_token": token, "answer": "yes",
                                                                   "pin": "000000"})
        forged = client.post("/terminal/service-metrics", data={"csrf_token": "forged", "answer": "yes",
                                                                "pin": people.pin})
        assert _stored(owner, farmer_id) == [] and ASKED in client.get("/terminal/farm").text
        yes = client.post("/terminal/service-metrics", data={"csrf_token": token, "answer": "yes", "pin": people.pin,
                                                             "next": "/terminal/data"})
        assert yes.status_code == 303 and yes.headers["location"] == "/terminal/data"
        farm = client.get("/terminal/farm")
        kept = _events(client, token, [
            {"k": "view", "p": "/terminal/farm"},
            {"k": "click", "p": "/terminal/farm", "t": "/terminal/consents/c_0123456789abcdef/revoke"},
            {"k": "click", "p": "/terminal/farm", "t": "/somewhere/else"},
            {"k": "leave", "p": "/terminal/farm", "ms": 5400}])
        refused = [_events(client, "forged", VISIT), _events(client, token, [{"k": "view", "p": "/ops"}]),
                   _events(client, token, [{"k": "view", "p": "/terminal/nothing-here"}]),
                   _events(client, token, [{"k": "leave", "p": "/terminal/farm"}]),
                   client.post("/terminal/usage-events", data={"csrf_token": token, "events": "not json"}),
                   _events(client, token, VISIT * 51)]
        data = client.get("/terminal/data")
        consent_id = re.search(r'action="/terminal/consents/(c_[0-9a-f]+)/revoke"', data.text)
        assert consent_id is not None
        client.post(f"/terminal/consents/{consent_id[1]}/revoke", data={"csrf_token": token})
        after_withdrawal = _events(client, token, VISIT)
        later = client.get("/terminal/farm")
    assert "pages opened, buttons pressed, time on each page" in consent_page.text  # the consent's own words
    assert no_pin.status_code == 422 and "Please enter your PIN to say yes" in no_pin.text
    assert wrong_pin.status_code == 403 and "Wrong PIN." in wrong_pin.text
    assert forged.status_code == 303
    assert ASKED not in farm.text and 'src="/static/usage.js"' in farm.text and f'data-csrf="{token}"' in farm.text
    assert kept.status_code == 204
    assert [r.status_code for r in refused] == [403, 422, 422, 422, 422, 422]
    assert "events[0].p: '/terminal/nothing-here' is not a page of the terminal" in refused[2].text
    assert "improving the service point" in data.text and "how you use this terminal" in data.text
    assert after_withdrawal.status_code == 204 and ASKED not in later.text and "usage.js" not in later.text
    rows = _stored(owner, farmer_id)
    assert [r[:4] for r in rows] == [("view", "/terminal/farm", None, None),
                                     ("click", "/terminal/farm", "/terminal/consents/{consent_id}/revoke", None),
                                     ("click", "/terminal/farm", "other", None),
                                     ("leave", "/terminal/farm", None, 5400)]
    assert {r[4] for r in rows} == {consent_id[1]}
    with psycopg.connect(owner) as conn:
        consent = conn.execute("SELECT purpose, scopes, revoked_at IS NOT NULL FROM ft.consents WHERE id = %s",
                               (consent_id[1],)).fetchone()
        refusals = conn.execute("SELECT count(*) FROM ft.audit_log WHERE action = 'consent.pin_refused'"
                                " AND farmer_id = %s", (farmer_id,)).fetchone()
    assert consent == ("service_metrics", ["usage"], True)
    assert refusals == (1,)  # the wrong PIN is on record (and counts towards the lockout)


def test_an_expired_consent_is_asked_for_again(world) -> None:
    owner, base, people = world
    farmer_id = _farmer(owner, people)
    with _signed_in(base, people, farmer_id) as client:
        token = _token(client.get("/terminal/farm"))
        client.post("/terminal/service-metrics", data={"csrf_token": token, "answer": "yes", "pin": people.pin})
        assert ASKED not in client.get("/terminal/farm").text
        with psycopg.connect(owner) as conn:
            conn.execute("UPDATE ft.consents SET granted_at = now() - interval '400 days',"
                         " expires_at = now() - interval '35 days' WHERE farmer_id = %s", (farmer_id,))
        asked = client.get("/terminal/farm")
        dropped = _events(client, token, VISIT)
    assert ASKED in asked.text and "usage.js" not in asked.text
    assert dropped.status_code == 204 and _stored(owner, farmer_id) == []


def test_service_metrics_count_views_clicks_farmers_and_time_per_page(world) -> None:
    owner, base, people = world
    counted = []
    for ms in (4000, 8000):
        farmer_id = _farmer(owner, people)
        counted.append(farmer_id)
        with _signed_in(base, people, farmer_id) as client:
            token = _token(client.get("/terminal/farm"))
            client.post("/terminal/service-metrics", data={"csrf_token": token, "answer": "yes", "pin": people.pin})
            assert _events(client, token, [
                {"k": "view", "p": "/terminal/data"}, {"k": "click", "p": "/terminal/data", "t": "/terminal/farm"},
                {"k": "leave", "p": "/terminal/data", "ms": ms}]).status_code == 204
    with psycopg.connect(owner) as conn:  # only these two farmers' events on /terminal/data
        conn.execute("DELETE FROM ft.usage_events WHERE page = '/terminal/data' AND NOT farmer_id = ANY(%s)",
                     (counted,))
    with httpx.Client(base_url=base, timeout=60, headers={"Accept-Language": "en"}) as client:
        page = client.get("/ops/sign-in")
        client.post("/ops/sign-in", data={"tenant": people.tenant, "login": people.ops, "password": people.password,
                                          "csrf_token": _token(page)})
        report = client.get("/ops/service-metrics", params={"days": 7})
        chinese = client.get("/ops/service-metrics", params={"lang": "zh-CN"})
    assert report.status_code == 200
    row = re.search(r"<code>/terminal/data</code></th><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td><td>([^<]+)</td>",
                    report.text)
    assert row is not None and row.groups() == ("2", "2", "2", "6 s")
    assert report.text.count('role="img"') == 1 and "服务统计" in chinese.text


# -- in a real browser ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with browser.browser_or_skip() as found:
        yield found


def _browse(chromium: Any, base: str, people: browser.World, farmer_id: str, answer: str) -> list[str]:
    """Sign in, answer the question, open My data and go back to My farm by the menu; the beacon requests sent."""
    context = chromium.new_context(base_url=base, locale="zh-CN", viewport={"width": 1024, "height": 600},
                                   extra_http_headers={"Accept-Language": "zh-CN"})
    page = context.new_page()
    beacons: list[str] = []
    page.on("request", lambda r: beacons.append(r.post_data or "") if r.url.endswith("/usage-events") else None)
    try:
        page.goto(f"/terminal/sign-in?tenant={people.tenant}")
        page.locator("#f-farmer_id").fill(farmer_id)
        page.locator("#f-pin").fill(people.pin)
        page.locator("button[type=submit].primary").click()
        page.wait_for_load_state("domcontentloaded")
        assert page.locator(".usage-ask").is_visible()
        if answer == "yes":
            page.locator(".usage-ask a.button").click()
            page.wait_for_load_state("domcontentloaded")
            page.locator("#f-pin").fill(people.pin)
            browser.ARTEFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(browser.ARTEFACTS / "terminal-usage-consent-zh-CN.png"), full_page=True)
            page.get_by_role("button", name="同意", exact=True).click()
        else:
            page.locator(".usage-ask button").click()
        page.wait_for_load_state("domcontentloaded")
        assert page.url.endswith("/terminal/farm") and page.locator(".usage-ask").count() == 0
        page.locator("nav.main-nav a[href='/terminal/data']").click()
        page.wait_for_load_state("domcontentloaded")
        page.locator("nav.main-nav a[href='/terminal/farm']").click()
        page.wait_for_load_state("domcontentloaded")
        page.goto("about:blank")  # leaving the farm page sends its last events
    finally:
        context.close()
    return beacons


def test_the_pages_send_their_events_with_consent_and_none_without_in_a_browser(chromium, world) -> None:
    owner, base, people = world
    yes, no = _farmer(owner, people), _farmer(owner, people)
    sent = _browse(chromium, base, people, yes, "yes")
    assert wait_until(lambda: len([r for r in _stored(owner, yes) if r[0] == "leave"]) >= 3, timeout=20)
    rows = _stored(owner, yes)
    views = [r[1] for r in rows if r[0] == "view"]
    clicks = [(r[1], r[2]) for r in rows if r[0] == "click"]
    assert views.count("/terminal/farm") == 2 and views.count("/terminal/data") == 1
    assert ("/terminal/farm", "/terminal/data") in clicks and ("/terminal/data", "/terminal/farm") in clicks
    assert all(r[3] >= 0 for r in rows if r[0] == "leave")
    assert sent and all("csrf_token=" in body for body in sent)
    assert _browse(chromium, base, people, no, "no") == [] and _stored(owner, no) == []
