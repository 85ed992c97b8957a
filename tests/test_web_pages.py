"""The pages over HTTP against the live service (uvicorn, PostgreSQL as ft_app): sign-in and its refusals in
plain words, CSRF on every form, redirects to the right sign-in page, each console's data in both languages,
clerk-assisted sessions, consents withdrawn from the terminal, tenant isolation; and the pieces underneath
(language negotiation, Babel formatting, the catalogue, charts with gaps, soil conditions)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from babel.messages import pofile

from cloud.store import registry
from cloud.web import charts, i18n
from cloud.web.terminal import conditions
from tests.support import browser
from tests.support.app_db import app_connect

pytestmark = pytest.mark.timeout(240)


# -- pieces ---------------------------------------------------------------------------------------------------


def test_language_is_chosen_by_query_then_cookie_then_accept_language_then_chinese() -> None:
    assert i18n.negotiate("en", "zh-CN", "zh-CN") == "en"
    assert i18n.negotiate(None, "en", "zh-CN,zh;q=0.9") == "en"
    assert i18n.negotiate(None, None, "fr-FR, en-GB;q=0.8, zh;q=0.5") == "en"
    assert i18n.negotiate(None, None, "en;q=0.2, zh-Hans-CN;q=0.9") == "zh-CN"
    assert i18n.negotiate("xx", "yy", "fr") == "zh-CN"
    assert i18n.negotiate(None, None, None) == "zh-CN"


def test_money_numbers_and_dates_follow_the_language() -> None:
    zh, en = i18n.Formats("zh-CN"), i18n.Formats("en")
    assert zh.money(1234.5) == "¥1,234.50"
    assert en.money(1234.5) == "CN¥1,234.50"
    assert en.number(1234.567, 1) == "1,234.6"
    moment = datetime(2026, 6, 2, 1, 30, tzinfo=UTC)  # 09:30 in Shanghai
    assert zh.date(moment) == "2026年6月2日"
    assert en.date(moment) == "Jun 2, 2026"
    now = moment + timedelta(days=3)
    assert en.since(moment, now) == "Tuesday"
    assert zh.since(moment, now) == "星期二"
    assert en.since(moment, moment + timedelta(hours=1)) == "9:30\u202fAM"


def test_every_message_has_a_chinese_translation_with_the_same_placeholders() -> None:
    with (i18n.LOCALE_DIR / "messages.pot").open("rb") as f:
        template = pofile.read_po(f)
    with (i18n.LOCALE_DIR / "zh_CN" / "LC_MESSAGES" / "messages.po").open("rb") as f:
        chinese = pofile.read_po(f, locale="zh_CN")
    placeholder = re.compile(r"%\(\w+\)[sd]")
    for message in template:
        if not message.id:
            continue
        translated = chinese.get(message.id)
        assert translated is not None and translated.string, f"no Chinese for {message.id!r}"
        source = message.id[0] if isinstance(message.id, tuple) else message.id
        target = translated.string[0] if isinstance(translated.string, tuple) else translated.string
        assert sorted(placeholder.findall(source)) == sorted(placeholder.findall(target)), message.id


def test_the_catalogue_template_holds_every_message_of_the_code() -> None:
    """A message added to a page or module without ``pybabel extract`` (README "Web pages") fails here."""
    from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
    from babel.messages.frontend import parse_mapping_cfg

    web = i18n.LOCALE_DIR.parent
    with (web / "babel.cfg").open() as f:
        method_map, options_map = parse_mapping_cfg(f)
    in_code = {m[2] for m in extract_from_dir(str(web), method_map, options_map,
                                              keywords={**DEFAULT_KEYWORDS, "N_": None})}
    with (i18n.LOCALE_DIR / "messages.pot").open("rb") as f:
        in_template = {m.id for m in pofile.read_po(f) if m.id}
    assert in_code == in_template


def _samples(start: datetime, values: list[float | None], step: timedelta) -> list[charts.Sample]:
    return [charts.Sample(start + i * step, v, flagged=(i == 1)) for i, v in enumerate(values)]


def test_chart_leaves_gaps_empty_and_marks_flags() -> None:
    start, step = datetime(2026, 6, 1, tzinfo=UTC), timedelta(hours=3)
    values: list[float | None] = [20, 22, 21, None, None, 25, 26, None, 30, 28]
    chart = charts.time_chart(_samples(start, values, step), start=start, end=start + 10 * step, step=step,
                              x_label=str, y_label=str)
    # 20-22-21, 25-26 and 30-28: never a line across the empty buckets
    assert [len(p.split("L")) for p in chart.lines] == [3, 2, 2]
    assert len(chart.dots) == 0 and len(chart.gaps) == 2
    assert len(chart.flags) == 1 and chart.flagged_count == 1
    chart = charts.time_chart(_samples(start, [20, 21, None, 24, None, 26, 27], step), start=start,
                              end=start + 7 * step, step=step, x_label=str, y_label=str)
    assert len(chart.dots) == 1  # 24 alone between two gaps
    assert [len(p.split("L")) for p in chart.lines] == [2, 2]
    gap_xs = chart.gaps
    for path in chart.lines:
        xs = [float(point.split(",")[0]) for point in path.lstrip("M").split(" L")]
        assert not any(a < x0 and x1 < b for x0, x1 in gap_xs for a, b in zip(xs, xs[1:], strict=False))


def test_a_long_chart_has_a_table_by_day() -> None:
    start, step = datetime(2026, 6, 1, 16, tzinfo=UTC), timedelta(hours=3)  # local midnight in Shanghai
    values: list[float | None] = [float(i % 8) for i in range(14 * 8)]
    values[8:16] = [None] * 8  # the second day: nothing
    chart = charts.time_chart(_samples(start, values, step), start=start, end=start + 14 * timedelta(days=1),
                              step=step, x_label=str, y_label=str)
    assert len(chart.table) == 14 and len(chart.rows) == 112
    assert chart.table[1].value is None
    assert (chart.table[0].low, chart.table[0].value, chart.table[0].high) == (0.0, 3.5, 7.0)
    assert chart.table[0].flagged and not chart.table[2].flagged


def test_chart_splits_raw_readings_at_silences_longer_than_a_step() -> None:
    start, step = datetime(2026, 6, 1, tzinfo=UTC), timedelta(minutes=15)
    times = [0, 15, 30, 45, 180, 195]  # two hours of silence
    samples = [charts.Sample(start + timedelta(minutes=m), 3.5) for m in times]
    chart = charts.time_chart(samples, start=start, end=start + timedelta(minutes=210), step=step, x_label=str,
                              y_label=str)
    assert len(chart.lines) == 2 and len(chart.gaps) == 1


def test_soil_state_says_since_when() -> None:
    now = datetime(2026, 6, 5, 12, tzinfo=UTC)
    hours = [now - timedelta(hours=h) for h in range(72, 0, -1)]
    points: list[tuple[datetime, float | None]] = [(ts, 30.0 if ts < now - timedelta(hours=40) else 15.0)
                                                   for ts in hours]
    points[-10] = (points[-10][0], None)  # a missing hour does not break the streak
    state = conditions.current_state(conditions.SOIL_MOISTURE, points, now)
    assert state.condition == "dry" and state.since == now - timedelta(hours=40)
    stale = conditions.current_state(conditions.SOIL_MOISTURE, points[:-10], now)
    assert stale.condition == "no_data"
    assert conditions.battery_low(3300, "mV") and conditions.battery_low(3.3, "V")
    assert not conditions.battery_low(3.7, "V")


# -- the live service ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(module_app_db) -> Iterator[tuple[str, str, browser.World]]:
    with browser.live_service(module_app_db.owner_url) as server:
        world = browser.seed_world(module_app_db.owner_url, server.url)
        yield module_app_db.owner_url, server.url, world


def _client(base_url: str, language: str = "en") -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=60, headers={"Accept-Language": language})


def _form_token(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None, page.text[:500]
    return found[1]


def _farmer_sign_in(client: httpx.Client, world: browser.World, pin: str | None = None,
                    farmer_id: str | None = None) -> httpx.Response:
    page = client.get("/terminal/sign-in", params={"tenant": world.tenant})
    return client.post("/terminal/sign-in", data={"tenant": world.tenant, "farmer_id": farmer_id or world.farmer_id,
                                                  "pin": pin or world.pin, "csrf_token": _form_token(page)})


def _staff_sign_in(client: httpx.Client, area: str, world: browser.World, login: str) -> httpx.Response:
    page = client.get(f"/{area}/sign-in")
    return client.post(f"/{area}/sign-in", data={"tenant": world.tenant, "login": login, "password": world.password,
                                                 "csrf_token": _form_token(page)})


def _text(page: httpx.Response) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.text))


@pytest.mark.parametrize("path, sign_in", [
    ("/terminal/farm", "/terminal/sign-in"), ("/terminal/data", "/terminal/sign-in"), ("/ops", "/ops/sign-in"),
    ("/ops/devices/x", "/ops/sign-in"), ("/officer", "/officer/sign-in")])
def test_pages_send_strangers_to_the_right_sign_in(service, path: str, sign_in: str) -> None:
    _, base, _ = service
    with _client(base) as client:
        answer = client.get(path)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith(f"{sign_in}?next=")


def test_farmer_signs_in_and_sees_the_farm_in_both_languages(service) -> None:
    _, base, world = service
    with _client(base) as client:
        answer = _farmer_sign_in(client, world)
        assert answer.status_code == 303 and answer.headers["location"] == "/terminal/farm"
        cookie = client.cookies.get("ft_session")
        assert cookie and cookie.startswith("fts_")
        english = client.get("/terminal/farm")
        chinese = client.get("/terminal/farm", params={"lang": "zh-CN"})
        remembered = client.get("/terminal/farm")  # the choice is kept in the lang cookie
    assert english.status_code == chinese.status_code == 200
    assert '<html lang="en">' in english.text and '<html lang="zh-CN">' in chinese.text
    assert '<html lang="zh-CN">' in remembered.text
    words = _text(english)
    assert "Soil is dry in River field since" in words and "Soil is fine in North field." in words
    assert "Battery low" in words and "battery low" in words  # the alert and the sensor's state
    assert "River field 的土壤从" in _text(chinese) and "起偏干" in _text(chinese)
    assert english.text.count('role="img"') == 2 and '<path class="line"' in english.text
    assert '<rect class="gap"' in english.text  # the probe's silent day
    assert '<circle class="flag"' in english.text  # its flagged readings


def test_wrong_pin_is_refused_in_plain_words(service) -> None:
    _, base, world = service
    with _client(base) as client:
        english = _farmer_sign_in(client, world, pin="000000")
        assert "ft_session" not in client.cookies
    with _client(base, "zh-CN") as client:
        chinese = _farmer_sign_in(client, world, pin="000001")
    assert english.status_code == chinese.status_code == 401
    assert "Wrong farmer ID or PIN." in english.text and 'role="alert"' in english.text
    assert "农户编号或密码不对" in chinese.text


def test_locked_and_throttled_accounts_are_told_what_to_do(service) -> None:
    owner, base, world = service
    with psycopg.connect(owner) as conn:
        conn.execute("INSERT INTO ft.signin_accounts (tenant_id, account, failures, last_failure_at, locked_at)"
                     " VALUES (%s, 'farmer:F-LOCKED', 10, now(), now())", (world.tenant,))
        conn.execute("INSERT INTO ft.signin_accounts (tenant_id, account, failures, last_failure_at, next_allowed_at)"
                     " VALUES (%s, 'farmer:F-SLOW', 6, now(), now() + interval '60 seconds')", (world.tenant,))
    with _client(base) as client:
        locked = _farmer_sign_in(client, world, farmer_id="F-LOCKED")
        slow = _farmer_sign_in(client, world, farmer_id="F-SLOW")
    assert locked.status_code == 423
    assert "locked after too many wrong tries" in locked.text and "clerk at your service point" in locked.text
    assert slow.status_code == 429
    assert re.search(r"Please wait (59|60) seconds", slow.text)


def test_forms_without_their_token_do_nothing(service) -> None:
    owner, base, world = service
    with _client(base) as client:
        refused = client.post("/terminal/sign-in", data={"tenant": world.tenant, "farmer_id": world.farmer_id,
                                                         "pin": world.pin, "csrf_token": "forged"})
        assert refused.status_code == 403 and "ft_session" not in client.cookies
        _farmer_sign_in(client, world)
        data = client.get("/terminal/data")
        consent_id = re.search(r'action="/terminal/consents/(c_[0-9a-f]+)/revoke"', data.text)
        assert consent_id is not None
        forged = client.post(f"/terminal/consents/{consent_id[1]}/revoke", data={"csrf_token": "forged"})
    assert forged.status_code == 303
    with psycopg.connect(owner) as conn:
        row = conn.execute("SELECT revoked_at FROM ft.consents WHERE id = %s", (consent_id[1],)).fetchone()
    assert row is not None and row[0] is None


def test_my_data_lists_who_read_it_and_revokes_a_consent(service) -> None:
    owner, base, world = service
    with _client(base) as client:
        _farmer_sign_in(client, world)
        page = client.get("/terminal/data")
        words = _text(page)
        assert "Officer (credit officer) read your farm data assessing a loan" in words
        consent_id = re.search(r'action="/terminal/consents/(c_[0-9a-f]+)/revoke"', page.text)
        assert consent_id is not None
        done = client.post(f"/terminal/consents/{consent_id[1]}/revoke", data={"csrf_token": _form_token(page)},
                           follow_redirects=True)
        chinese = client.get("/terminal/data", params={"lang": "zh-CN"})
    assert "Your consent is withdrawn." in done.text and "withdrawn" in _text(done)
    assert "已撤回" in chinese.text and "谁使用过我的数据" in chinese.text
    with psycopg.connect(owner) as conn:
        row = conn.execute("SELECT revoked_by IS NOT NULL FROM ft.consents WHERE id = %s", (consent_id[1],)).fetchone()
    assert row == (True,)


def test_a_clerk_assists_a_farmer_and_gets_the_terminal_back(service) -> None:
    owner, base, world = service
    with _client(base) as client:
        page = client.get("/terminal/clerk")
        signed = client.post("/terminal/clerk", data={"tenant": world.tenant, "login": world.clerk,
                                                      "password": world.password, "csrf_token": _form_token(page)})
        assert signed.headers["location"] == "/terminal/assist"
        assert client.get("/terminal/farm").headers["location"] == "/terminal/assist"  # a clerk has no farm
        assist = client.get("/terminal/assist")
        wrong = client.post("/terminal/assist", data={"farmer_id": world.farmer_id, "pin": "111111",
                                                      "csrf_token": _form_token(assist)})
        assert wrong.status_code == 401 and "Wrong farmer ID or PIN." in wrong.text
        started = client.post("/terminal/assist", data={"farmer_id": world.farmer_id, "pin": world.pin,
                                                        "csrf_token": _form_token(assist)})
        assert started.headers["location"] == "/terminal/farm"
        farm = client.get("/terminal/farm")
        assert "A service-point clerk is helping you." in farm.text
        back = client.post("/terminal/sign-out", data={"csrf_token": _form_token(farm)})
        assert back.headers["location"] == "/terminal/assist"
        assert client.get("/terminal/assist").status_code == 200  # the clerk's own session again
    with psycopg.connect(owner) as conn:
        rows = conn.execute("SELECT actor_roles, farmer_id FROM ft.audit_log WHERE tenant_id = %s"
                            " AND action = 'terminal.assisted'", (world.tenant,)).fetchall()
    assert rows == [(["clerk"], world.farmer_id)]


def test_ops_console_shows_the_fleet_a_device_and_a_gateway(service) -> None:
    _, base, world = service
    with _client(base) as client:
        assert _staff_sign_in(client, "ops", world, world.ops).headers["location"] == "/ops"
        overview = client.get("/ops")
        low = client.get("/ops", params={"low_battery": "true"})
        device = client.get(f"/ops/devices/{browser.NODE}")
        gateway = client.get(f"/ops/gateways/{browser.GATEWAY}")
        chinese = client.get(f"/ops/devices/{browser.NODE}", params={"lang": "zh-CN"})
        missing = client.get("/ops/devices/nothing-here")
    for page in (overview, low, device, gateway, chinese):
        assert page.status_code == 200
    words = _text(overview)
    assert all(name in overview.text for name in (browser.GATEWAY, browser.NODE, browser.SOIL))
    assert "Gateways online 1" in words and "Devices online 2" in words and "Low battery 1" in words
    assert browser.NODE in low.text and f">{browser.SOIL}<" not in low.text
    assert "Remote configuration" in device.text and "No configuration has been set for this node." in device.text
    assert device.text.count('role="img"') == 2 and "1.4.0" in device.text
    assert "Battery low" in device.text  # the open alert
    assert "Devices behind this gateway" in gateway.text and browser.SOIL in gateway.text
    assert "远程配置" in chinese.text
    assert missing.status_code == 404


def test_ops_pages_are_paged_and_filtered_in_the_database(service) -> None:
    owner, base, world = service
    with app_connect(owner, tenant=world.tenant) as conn:
        for n in range(60):
            registry.register_device(conn, world.tenant, f"bulk-{n:03d}", "bus", browser.FARM, browser.GATEWAY,
                                     "jxct-soil-7in1", None, bytes.fromhex(browser.KEK))
        conn.commit()
    with _client(base) as client:
        _staff_sign_in(client, "ops", world, world.ops)
        first = client.get("/ops", params={"kind": "device"})
        next_link = re.search(r'href="(/ops\?[^"]+)" rel="next"', first.text)
        assert next_link is not None
        second = client.get(next_link[1].replace("&amp;", "&"))
    ids_first = set(re.findall(r">(bulk-\d{3})<", first.text))
    ids_second = set(re.findall(r">(bulk-\d{3})<", second.text))
    assert len(ids_first) + len(ids_second) == 60 and not ids_first & ids_second
    assert 'rel="next"' not in second.text


def test_consoles_admit_only_their_people(service) -> None:
    owner, base, world = service
    other = "t-web-other"
    with app_connect(owner) as conn:
        registry.register_tenant(conn, other, "Another cooperative")
        registry.register_gateway(conn, other, "gw-other", None, b"k" * 32, bytes.fromhex(browser.KEK), None, None)
        conn.commit()
    with _client(base) as client:
        _staff_sign_in(client, "officer", world, world.officer)
        queue = client.get("/officer")
        assert queue.status_code == 200 and "No applications are waiting." in queue.text
        refused = client.get("/ops")
        assert refused.headers["location"].startswith("/ops/sign-in?") and "refused=1" in refused.headers["location"]
    with _client(base) as client:
        wrong_console = _staff_sign_in(client, "officer", world, world.ops)
        assert wrong_console.status_code == 403 and "may not use this console" in wrong_console.text
        _staff_sign_in(client, "ops", world, world.ops)
        assert client.get("/ops/gateways/gw-other").status_code == 404  # another tenant's gateway: not found
        signed_out = client.post("/ops/sign-out", data={"csrf_token": _form_token(client.get("/ops"))})
        assert signed_out.headers["location"] == "/ops/sign-in"
        assert client.get("/ops").status_code == 303
