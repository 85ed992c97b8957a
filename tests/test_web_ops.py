"""The ops console's working pages over HTTP against the live service (uvicorn, PostgreSQL as ft_app): alerts
with filters, acknowledge and resolve with a note (audited), silences; a node's remote configuration through
the downlink service (desired against reported, history); OTA campaigns created, shown per stage and
device, halted, resumed, paused and cancelled; a gateway's health trends; the service metrics page.  Every
form refuses a missing or forged CSRF token and a user who may look but not change (a technician).  Then in
a real browser: an ops user acknowledges an alert and halts a campaign (screenshots under
var/test-artefacts/web)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from cloud.downlink import frames, service
from cloud.fleet import alerts, rules
from cloud.store import downlink
from cloud.web.i18n import TIME_ZONE
from tests.support import browser
from tests.support.app_db import app_connect

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def world(module_app_db) -> Iterator[tuple[str, str, browser.World, str]]:
    """(owner url, base url, the seeded world, a technician's login)."""
    owner = module_app_db.owner_url
    with browser.live_service(owner) as server:
        people = browser.seed_world(owner, server.url)
        technician = f"tech-{people.tenant}"
        browser._user(owner, people.tenant, technician, ["technician"], password=people.password)
        yield owner, server.url, people, technician


def _client(base: str, language: str = "en") -> httpx.Client:
    return httpx.Client(base_url=base, timeout=60, headers={"Accept-Language": language})


def _token(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None, page.text[:500]
    return found[1]


def _sign_in(client: httpx.Client, people: browser.World, login: str | None = None) -> str:
    """Signs in to /ops; the session's CSRF token."""
    page = client.get("/ops/sign-in")
    answer = client.post("/ops/sign-in", data={"tenant": people.tenant, "login": login or people.ops,
                                               "password": people.password, "csrf_token": _token(page)})
    assert answer.status_code == 303 and answer.headers["location"] == "/ops", answer.text[:300]
    return _token(client.get("/ops"))


def _shot(page: Any, name: str) -> None:
    browser.ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(browser.ARTEFACTS / f"{name}.png"), full_page=True)


def _text(page: httpx.Response) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.text))


def _open_alert(owner: str, tenant: str, kind: str, subject: str, name: str | None = None) -> tuple[int, int]:
    """A rule of its own and an open alert of it on ``subject``: (rule id, alert id)."""
    name = name or f"Offline {secrets.token_hex(3)}"
    with app_connect(owner, tenant=tenant) as conn:
        rule = rules.create_rule(conn, tenant, rules.RuleCreate(name=name, kind="device_offline", subject_kind=kind,
                                                                subject_id=subject, severity="critical"), "test")
        alerts.reconcile(conn, rule, {(kind, subject): alerts.Firing(None, f"{subject} is offline")}, datetime.now(UTC))
        row = conn.execute("SELECT id FROM ft.alerts WHERE rule_id = %s", (rule.id,)).fetchone()
        conn.commit()
    assert row is not None
    return rule.id, row[0]


def _alert_state(owner: str, alert_id: int) -> str:
    with psycopg.connect(owner) as conn:
        row = conn.execute("SELECT state FROM ft.alerts WHERE id = %s", (alert_id,)).fetchone()
    assert row is not None
    return row[0]


def _audit(owner: str, tenant: str, action: str, target: str) -> list[dict[str, Any]]:
    with psycopg.connect(owner) as conn:
        rows = conn.execute("SELECT detail FROM ft.audit_log WHERE tenant_id = %s AND action = %s AND target_id = %s"
                            " ORDER BY id", (tenant, action, target)).fetchall()
    return [r[0] for r in rows]


# -- alerts ---------------------------------------------------------------------------------------------------


def test_alerts_are_listed_and_filtered_by_state_rule_and_subject(world) -> None:
    owner, base, people, _ = world
    gw_rule, gw_alert = _open_alert(owner, people.tenant, "gateway", browser.GATEWAY)
    soil_rule, soil_alert = _open_alert(owner, people.tenant, "device", browser.SOIL)
    with psycopg.connect(owner) as conn:
        conn.execute("UPDATE ft.alerts SET state = 'resolved', resolved_at = now() WHERE id = %s", (soil_alert,))
    with _client(base) as client:
        _sign_in(client, people)
        active = client.get("/ops/alerts")
        by_rule = client.get("/ops/alerts", params={"rule": gw_rule})
        by_subject = client.get("/ops/alerts", params={"subject": browser.SOIL, "state": "all"})
        resolved = client.get("/ops/alerts", params={"state": "resolved"})
        chinese = client.get("/ops/alerts", params={"lang": "zh-CN"})
    assert all(p.status_code == 200 for p in (active, by_rule, by_subject, resolved, chinese))
    assert f'id="alert-{gw_alert}"' in active.text and f'id="alert-{soil_alert}"' not in active.text
    assert "Battery low" in active.text  # the seeded world's open alert
    assert re.findall(r'id="alert-(\d+)"', by_rule.text) == [str(gw_alert)]
    assert re.findall(r'id="alert-(\d+)"', by_subject.text) == [str(soil_alert)]
    assert f'id="alert-{soil_alert}"' in resolved.text and f'id="alert-{gw_alert}"' not in resolved.text
    assert "告警" in chinese.text and "静默" in chinese.text


def test_an_alert_is_acknowledged_then_resolved_with_notes_from_the_device_page(world) -> None:
    owner, base, people, _ = world
    _, alert_id = _open_alert(owner, people.tenant, "device", browser.NODE)
    page_path = f"/ops/devices/{browser.NODE}"
    with _client(base) as client:
        token = _sign_in(client, people)
        device = client.get(page_path)
        assert f'action="/ops/alerts/{alert_id}/acknowledge"' in device.text
        done = client.post(f"/ops/alerts/{alert_id}/acknowledge",
                           data={"csrf_token": token, "note": "技术员已出发 on the way", "next": page_path})
        assert done.status_code == 303 and done.headers["location"] == f"{page_path}?notice=acknowledged"
        assert _alert_state(owner, alert_id) == "acknowledged"
        shown = client.get(done.headers["location"])
        assert "The alert is acknowledged." in shown.text and "技术员已出发 on the way" in shown.text
        resolved = client.post(f"/ops/alerts/{alert_id}/resolve", data={"csrf_token": token, "note": "new battery"})
        assert resolved.headers["location"] == "/ops/alerts?notice=resolved"
        again = client.post(f"/ops/alerts/{alert_id}/resolve", data={"csrf_token": token})
        assert again.headers["location"] == "/ops/alerts?notice=already_resolved"
        missing = client.post("/ops/alerts/999999/acknowledge", data={"csrf_token": token})
        assert missing.headers["location"] == "/ops/alerts?notice=not_found"
    assert _alert_state(owner, alert_id) == "resolved"
    assert _audit(owner, people.tenant, "alert.acknowledged", str(alert_id)) == [{"note": "技术员已出发 on the way"}]
    assert _audit(owner, people.tenant, "alert.resolved", str(alert_id)) == [{"note": "new battery"}]


def test_a_gateway_page_shows_its_alerts_and_health_trends(world) -> None:
    owner, base, people, _ = world
    _, alert_id = _open_alert(owner, people.tenant, "gateway", browser.GATEWAY)
    with _client(base) as client:
        _sign_in(client, people)
        page = client.get(f"/ops/gateways/{browser.GATEWAY}")
    assert page.status_code == 200
    assert f'action="/ops/alerts/{alert_id}/acknowledge"' in page.text
    assert page.text.count('role="img"') == 2 and "Heartbeats per hour" in page.text
    assert '<path class="line"' in page.text  # the seeded day of hourly heartbeats


def test_silences_are_created_listed_refused_when_wrong_and_ended_early(world) -> None:
    owner, base, people, _ = world
    start = datetime.now(TIME_ZONE).replace(second=0, microsecond=0)
    window = {"starts_at": start.strftime("%Y-%m-%dT%H:%M"),
              "ends_at": (start + timedelta(hours=4)).strftime("%Y-%m-%dT%H:%M")}
    with _client(base) as client:
        token = _sign_in(client, people)
        made = client.post("/ops/silences", data={"csrf_token": token, "subject_kind": "gateway",
                                                  "subject_id": browser.GATEWAY, "reason": "mast repair"} | window)
        assert made.headers["location"] == "/ops/alerts?notice=silence_created"
        listed = client.get("/ops/alerts")
        backwards = client.post("/ops/silences", data={"csrf_token": token, "starts_at": window["ends_at"],
                                                       "ends_at": window["starts_at"]})
        unknown = client.post("/ops/silences", data={"csrf_token": token, "subject_kind": "device",
                                                     "subject_id": "no-such-device"} | window)
        with psycopg.connect(owner) as conn:
            row = conn.execute("SELECT id, starts_at FROM ft.silences WHERE tenant_id = %s AND reason = 'mast repair'",
                               (people.tenant,)).fetchone()
        assert row is not None and row[1] == start
        ended = client.post(f"/ops/silences/{row[0]}/end", data={"csrf_token": token})
    assert "mast repair" in listed.text and f'action="/ops/silences/{row[0]}/end"' in listed.text
    assert backwards.status_code == 422 and "ends_at must be after starts_at" in backwards.text
    assert unknown.status_code == 422 and "no such rule, gateway or device" in unknown.text
    assert ended.headers["location"] == "/ops/alerts?notice=silence_ended"
    with psycopg.connect(owner) as conn:
        over = conn.execute("SELECT ends_at <= now() FROM ft.silences WHERE id = %s", (row[0],)).fetchone()
        count = conn.execute("SELECT count(*) FROM ft.silences WHERE tenant_id = %s", (people.tenant,)).fetchone()
    assert over == (True,) and count == (1,)
    assert _audit(owner, people.tenant, "silence.created", str(row[0]))[0]["note"] == "mast repair"


@pytest.mark.parametrize("path, data", [
    ("/ops/alerts/{alert}/acknowledge", {}), ("/ops/alerts/{alert}/resolve", {"note": "x"}),
    ("/ops/silences", {"starts_at": "2030-01-01T00:00", "ends_at": "2030-01-02T00:00"}),
    ("/ops/devices/node-1/config", {"interval_s": "600"}),
    ("/ops/campaigns", {"kind": "node", "name": "x", "firmware_version": "1", "stages": "100",
                        "max_failure_percent": "10", "stage_timeout_hours": "1"}),
    ("/ops/campaigns/{campaign}/halt", {"note": "x"})])
def test_forms_refuse_a_forged_token_and_a_user_who_may_only_look(world, path: str, data: dict[str, str]) -> None:
    owner, base, people, technician = world
    _, alert_id = _open_alert(owner, people.tenant, "device", browser.SOIL)
    path = path.format(alert=alert_id, campaign=_campaign(owner, people.tenant))
    before = _written(owner, people.tenant)
    with _client(base) as client:
        _sign_in(client, people)
        forged = client.post(path, data=data | {"csrf_token": "forged"})
        missing = client.post(path, data=data)
    with _client(base) as client:
        token = _sign_in(client, people, technician)
        looks = client.get("/ops/alerts")
        refused = client.post(path, data=data | {"csrf_token": token})
    assert forged.status_code == 403 and "did not come from this console. Nothing was changed." in _text(forged)
    assert missing.status_code in (403, 422)
    assert refused.status_code == 403 and "may look at this but not change it" in refused.text
    assert looks.status_code == 200 and "/acknowledge" not in looks.text  # no forms for a technician
    assert _alert_state(owner, alert_id) == "open"
    assert _written(owner, people.tenant) == before


def _written(owner: str, tenant: str) -> tuple[int, ...]:
    """Counts of what the forms write: their audit entries, config versions, campaigns, silences."""
    with psycopg.connect(owner) as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM ft.audit_log WHERE tenant_id = %(t)s AND target_type IN"
                           " ('alert', 'silence', 'campaign', 'device')), (SELECT count(*) FROM ft.node_configs),"
                           " (SELECT count(*) FROM ft.campaigns), (SELECT count(*) FROM ft.silences)",
                           {"t": tenant}).fetchone()
    assert row is not None
    return tuple(row)


# -- remote configuration ---------------------------------------------------------------------------------------


def test_a_node_is_configured_through_the_downlink_service_desired_against_reported(world) -> None:
    owner, base, people, _ = world
    page_path = f"/ops/devices/{browser.NODE}/config"
    with _client(base) as client:
        token = _sign_in(client, people)
        empty = client.get(page_path)
        assert empty.status_code == 200 and "No configuration has been set for this node." in empty.text
        too_fast = client.post(page_path, data={"csrf_token": token, "interval_s": "10"})
        bad_gain = client.post(page_path, data={"csrf_token": token, "cal_metric_0": "soil_moisture",
                                                "cal_gain_0": "0", "cal_offset_0": "1"})
        sent = client.post(page_path, data={"csrf_token": token, "interval_s": "600", "heartbeat_s": "",
                                            "samples": "3", "cal_metric_0": "soil_moisture", "cal_gain_0": "1.02",
                                            "cal_offset_0": "-0.5", "delta_metric_0": "soil_moisture",
                                            "delta_value_0": "2", "note": "drier soil, read more often"})
        assert sent.headers["location"] == f"{page_path}?notice=config_set"
        with app_connect(owner, tenant=people.tenant) as conn:
            downlink.record_node_report(conn, people.tenant, browser.NODE, config_version=1, firmware_version=3)
            conn.commit()
        second = client.post(page_path, data={"csrf_token": token, "interval_s": "900", "samples": "3"})
        assert second.status_code == 303
        shown = client.get(page_path)
        bus = client.get(f"/ops/devices/{browser.SOIL}/config")
    assert too_fast.status_code == 422 and "interval_s: Input should be greater than or equal to 60" in too_fast.text
    assert bad_gain.status_code == 422 and "gain must not be 0" in bad_gain.text
    with psycopg.connect(owner) as conn:
        versions = conn.execute("SELECT version, config, created_by FROM ft.node_configs WHERE device_id = %s"
                                " ORDER BY version", (browser.NODE,)).fetchall()
    assert [v[0] for v in versions] == [1, 2]  # the refused forms stored nothing
    assert versions[0][1] == {"interval_s": 600, "samples": 3, "calibration": {"soil_moisture": {
        "scale": 1.02, "offset": -0.5}}, "deltas": {"soil_moisture": 2}}
    assert versions[0][2].startswith("user:u_")
    assert _audit(owner, people.tenant, "node_config.set", browser.NODE)[0]["note"] == "drier soil, read more often"
    words = _text(shown)
    assert "The node has not yet reported configuration 2" in words
    assert "Reading interval (s) 900 600" in words  # desired beside reported
    assert re.search(r"2 .* waiting to be sent .* 1 \(running\)", words)  # the history, newest first
    assert bus.status_code == 200 and "configured through their gateway" in bus.text


# -- campaigns --------------------------------------------------------------------------------------------------

_BUILDS = iter(range(100, 10_000))


def _release(owner: str) -> int:
    build = next(_BUILDS)
    with app_connect(owner) as conn:
        service.create_release(conn, build, [frames.FirmwareFile("main.py", b"import firmware.main\n")], "test")
        conn.commit()
    return build


def _campaign(owner: str, tenant: str) -> int:
    """A running node campaign (made through the store, as the API would)."""
    from cloud.fleet import campaigns

    build = _release(owner)
    with app_connect(owner, tenant=tenant) as conn:
        made = campaigns.create_campaign(conn, tenant, campaigns.CampaignCreate(
            name=f"fw {build}", kind="node", firmware_version=build, stages=[50, 100]), bytes.fromhex(browser.KEK),
            "test", datetime.now(UTC))
        conn.commit()
    return made.id


def test_a_campaign_is_started_shown_per_stage_and_device_then_halted_resumed_paused_and_cancelled(world) -> None:
    owner, base, people, _ = world
    build = _release(owner)
    with _client(base) as client:
        token = _sign_in(client, people)
        form = client.get("/ops/campaigns/new", params={"kind": "node"})
        assert f'<option value="{build}"' in form.text
        bad = client.post("/ops/campaigns", data={"csrf_token": token, "kind": "node", "name": "bad stages",
                                                  "firmware_version": str(build), "stages": "50, 25",
                                                  "max_failure_percent": "10", "stage_timeout_hours": "2"})
        made = client.post("/ops/campaigns", data={
            "csrf_token": token, "kind": "node", "name": "Spring firmware", "firmware_version": str(build),
            "target_farm_id": browser.FARM, "stages": "5, 100", "max_failure_percent": "20",
            "stage_timeout_hours": "2"})
        assert made.status_code == 303, made.text[:500]
        page_path = made.headers["location"].split("?")[0]
        page = client.get(made.headers["location"])
        listed = client.get("/ops/campaigns")
        halted = client.post(f"{page_path}/halt", data={"csrf_token": token, "note": "gateway link is flaky"})
        halted_page = client.get(page_path)
        pause_halted = client.post(f"{page_path}/pause", data={"csrf_token": token})
        resumed = client.post(f"{page_path}/resume", data={"csrf_token": token})
        paused = client.post(f"{page_path}/pause", data={"csrf_token": token})
        cancelled = client.post(f"{page_path}/cancel", data={"csrf_token": token, "note": "wrong build"})
        final = client.get(page_path, params={"lang": "zh-CN"})
        gateway_bad = client.post("/ops/campaigns", data={
            "csrf_token": token, "kind": "gateway", "name": "agent", "agent_version": "1.3.0",
            "agent_url": "http://releases.example/edge-1.3.0.tar.gz", "agent_sha256": "xyz", "stages": "100",
            "max_failure_percent": "10", "stage_timeout_hours": "1"})
        gateway_made = client.post("/ops/campaigns", data={
            "csrf_token": token, "kind": "gateway", "name": "agent 1.3", "agent_version": "1.3.0",
            "agent_url": "http://releases.example/edge-1.3.0.tar.gz", "agent_sha256": "ab" * 32, "stages": "100",
            "max_failure_percent": "10", "stage_timeout_hours": "1"})
    assert bad.status_code == 422 and "stages must grow and end at 100" in bad.text
    assert "Spring firmware" in page.text and "The campaign has started" in page.text
    assert page.text.count('class="rollout"') >= 2  # a bar per stage
    # the node is the farm's only node: stage 1 (5 %, at least one target) sends it
    assert re.search(rf">{browser.NODE}</a></th><td>1</td><td><span class=\"badge state-sent\">", page.text)
    assert "Spring firmware" in listed.text
    assert halted.headers["location"] == f"{page_path}?notice=halted"
    assert "Halted: gateway link is flaky" in _text(halted_page)
    assert pause_halted.headers["location"] == f"{page_path}?notice=not_now"
    assert resumed.headers["location"].endswith("notice=resumed") and paused.headers["location"].endswith("paused")
    assert cancelled.headers["location"].endswith("notice=cancelled")
    assert "已取消" in final.text
    campaign_id = page_path.rsplit("/", 1)[1]
    actions = [a for a in ("halted", "resumed", "paused", "cancelled") if _audit(owner, people.tenant,
                                                                                  f"campaign.{a}", campaign_id)]
    assert actions == ["halted", "resumed", "paused", "cancelled"]
    assert _audit(owner, people.tenant, "campaign.halted", campaign_id) == [{"note": "gateway link is flaky"}]
    assert gateway_bad.status_code == 422 and "agent_sha256" in gateway_bad.text
    assert gateway_made.status_code == 303
    with psycopg.connect(owner) as conn:
        row = conn.execute("SELECT state, kind FROM ft.campaigns WHERE id = %s", (int(campaign_id),)).fetchone()
    assert row == ("cancelled", "node")


def test_a_large_campaigns_devices_are_paged(world) -> None:
    owner, base, people, _ = world
    campaign_id = _campaign(owner, people.tenant)
    with psycopg.connect(owner) as conn:
        conn.execute("INSERT INTO ft.campaign_targets (campaign_id, tenant_id, subject_id, stage, position)"
                     " SELECT %s, %s, 'many-' || n, 1, 1000 + n FROM generate_series(1, 150) n",
                     (campaign_id, people.tenant))
    with _client(base) as client:
        _sign_in(client, people)
        first = client.get(f"/ops/campaigns/{campaign_id}")
        waiting = client.get(f"/ops/campaigns/{campaign_id}", params={"status": "waiting"})
        next_link = re.search(r'rel="next" href="([^"]+)"', first.text)
        assert next_link is not None
        second = client.get(next_link[1].replace("&amp;", "&"))
    first_ids = set(re.findall(r">(many-\d+|node-1)</a>", first.text))
    second_ids = set(re.findall(r">(many-\d+|node-1)</a>", second.text))
    assert len(first_ids) == 100 and len(second_ids) == 51 and not first_ids & second_ids
    assert "node-1</a>" not in waiting.text and waiting.text.count("state-waiting") >= 100


# -- service metrics ------------------------------------------------------------------------------------------------


def test_service_metrics_need_usage_read(world) -> None:
    _, base, people, technician = world
    with _client(base) as client:
        _sign_in(client, people)
        allowed = client.get("/ops/service-metrics")
    with _client(base) as client:
        _sign_in(client, people, technician)
        refused = client.get("/ops/service-metrics")
        nav = client.get("/ops")
    assert allowed.status_code == 200 and "Page views per day" in allowed.text
    assert refused.status_code == 403 and 'href="/ops/service-metrics"' not in nav.text


# -- in a real browser ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with browser.browser_or_skip() as found:
        yield found


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_an_ops_user_acknowledges_an_alert_and_halts_a_campaign_in_a_browser(chromium, world, language: str) -> None:
    owner, base, people, _ = world
    _, alert_id = _open_alert(owner, people.tenant, "device", browser.NODE, name=f"Node offline ({language})")
    campaign_id = _campaign(owner, people.tenant)
    context = chromium.new_context(base_url=base, locale=language, viewport={"width": 1280, "height": 900},
                                   extra_http_headers={"Accept-Language": language})
    page = context.new_page()
    try:
        page.goto("/ops/alerts")
        page.locator("#f-tenant").fill(people.tenant)
        page.locator("#f-login").fill(people.ops)
        page.locator("#f-password").fill(people.password)
        page.locator("button[type=submit].primary").click()
        page.wait_for_load_state("domcontentloaded")
        assert page.url.startswith(f"{base}/ops/alerts")
        row = page.locator(f"#alert-{alert_id}")
        row.get_by_label("Note" if language == "en" else "备注").fill("checking the mast")
        _shot(page, f"ops-alerts-{language}")
        row.get_by_role("button", name="Acknowledge" if language == "en" else "确认").click()
        page.wait_for_load_state("domcontentloaded")
        assert page.locator("[role=status]").first.inner_text() == (
            "The alert is acknowledged." if language == "en" else "告警已确认。")
        assert "checking the mast" in page.locator(f"#alert-{alert_id}").inner_text()
        _shot(page, f"ops-alert-acknowledged-{language}")
        page.goto(f"/ops/campaigns/{campaign_id}")
        assert page.locator("svg.rollout").count() >= 2
        page.get_by_label("Note for the record" if language == "en" else "备注（记入记录）").fill("too many failures")
        page.get_by_role("button", name="Halt" if language == "en" else "停止").click()
        page.wait_for_load_state("domcontentloaded")
        assert "too many failures" in page.locator("main").inner_text()
        _shot(page, f"ops-campaign-halted-{language}")
    finally:
        context.close()
    assert _alert_state(owner, alert_id) == "acknowledged"
    with psycopg.connect(owner) as conn:
        row = conn.execute("SELECT state, halted_reason FROM ft.campaigns WHERE id = %s", (campaign_id,)).fetchone()
    assert row == ("halted", "too many failures")
