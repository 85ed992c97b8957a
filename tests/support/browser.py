"""The web pages' test world: a live service on a free port, a farm with two weeks of readings, people to
sign in as, and a headless Chromium driven by Playwright.

* **Browser**: Debian's ``chromium`` (``make test`` installs it with ``fonts-noto-cjk`` where it can), driven
  through Playwright's ``executable_path`` (Playwright's own browser downloads are never used).  Without
  the browser or the ``playwright`` package, :func:`browser_or_skip` skips with the reason.  Playwright
  starts its driver and the browser itself; both end in :func:`browser_or_skip`'s teardown.
* **Service**: the API app (pages included) under uvicorn in a thread of the test process, like the demo's
  (:class:`fieldtrust.demo.stack.ApiServer`), connecting as ``ft_app``: password hashing is argon2's
  cheapest profile meanwhile (tests/support/accounts.py).
* **Data**: :func:`seed_world` registers a tenant, a farmer with a farm of two fields, a gateway, a soil
  probe and a sensor node, and 14 days of half-hourly soil readings through the store (partitions, COPY,
  rollups), with a day-long gap, flagged readings and a field that has been dry for three days; the fleet
  state from heartbeats, an alert from a battery rule, a consent and a credit officer's audited read.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cloud.auth import scopes, users
from cloud.consent import check as consent_check
from cloud.consent import store as consent_store
from cloud.consent import texts
from cloud.fleet import evaluate, presence, rules
from cloud.store import farmers, fields, registry, rollups, writes
from contract import models
from contract.telemetry import Q_OUT_OF_RANGE, Q_STALE
from fieldtrust import processes
from fieldtrust.demo.stack import ApiServer
from tests.support import accounts, store_data
from tests.support.app_db import app_connect

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTEFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artefacts" / "web"
KEK = "ab" * 32
SOIL, NODE, GATEWAY, FARM, FARMER = "soil-1", "node-1", "gw-1", "farm-1", "F-001"
DAYS = 14


def chromium_path() -> str | None:
    found = os.environ.get("FIELDTRUST_CHROMIUM") or next((p for p in CHROMIUM_PATHS if os.path.exists(p)), None)
    return found or shutil.which("chromium")


@contextlib.contextmanager
def browser_or_skip() -> Iterator[object]:
    """A headless Chromium (Playwright's ``Browser``), or a pytest skip naming what is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]')")
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium: install Debian's chromium and fonts-noto-cjk (make test does it as root), "
                    "or set FIELDTRUST_CHROMIUM")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def live_service(owner_url: str) -> Iterator[ApiServer]:
    """The API with its pages on ``127.0.0.1:<free port>`` (development mode: cookies without Secure over
    http), as ft_app on ``owner_url``'s database; cheap password hashing while it runs."""
    with pytest.MonkeyPatch.context() as patch:
        accounts.cheap_hashing(patch)
        server = ApiServer(accounts.settings_for(owner_url, dev_mode=True), processes.free_port()).start()
        try:
            yield server
        finally:
            server.stop()


@dataclass(frozen=True)
class World:
    tenant: str
    farmer_id: str
    farmer_login: str
    clerk: str
    ops: str
    officer: str
    pin: str = accounts.PIN
    password: str = accounts.PASSWORD


def seed_world(owner_url: str, base_url: str, now: datetime | None = None) -> World:
    """Everything the pages show, in a tenant of its own (ids unique to this call)."""
    now = now or datetime.now(UTC)
    tenant = f"t-web-{secrets.token_hex(4)}"
    world = World(tenant, FARMER, f"farmer-{tenant}", f"clerk-{tenant}", f"ops-{tenant}", f"officer-{tenant}")
    with httpx.Client(base_url=base_url) as client:
        accounts.add_tenant(client, tenant)  # type: ignore[arg-type]  # an httpx client, as the helpers use
    _registry(owner_url, tenant)
    _user(owner_url, tenant, world.farmer_login, ["farmer"], pin=world.pin, farmer_id=FARMER)
    for login, role in ((world.clerk, "clerk"), (world.ops, "ops"), (world.officer, "credit_officer")):
        _user(owner_url, tenant, login, [role], password=world.password)
    _readings(owner_url, tenant, now)
    _fleet(owner_url, tenant, now)
    _consent_and_read(owner_url, tenant, world, client_ip="127.0.0.1")
    return world


def _user(owner_url: str, tenant: str, login: str, roles: list[str], *, password: str | None = None,
          pin: str | None = None, farmer_id: str | None = None) -> None:
    """An invited user who accepted the invitation (through cloud.auth.users, as the API does)."""
    with app_connect(owner_url, tenant=tenant) as conn:
        _, token = users.invite(conn, tenant, login, roles, "seed", display_name=login.split("-")[0].title(),
                                farmer_id=farmer_id)
        users.accept_invite(conn, token, password, pin)
        conn.commit()


def _registry(owner_url: str, tenant: str) -> None:
    with app_connect(owner_url, tenant=tenant) as conn:
        farmers.register_farmer(conn, tenant, FARMER, {"name": "李伟 Li Wei", "village": "Dongshan"}, actor=None)
        registry.register_farm(conn, tenant, FARM, "东山农场 Dongshan farm", latitude=30.52, longitude=114.31,
                               area_ha=3.5, crop="rice", farmer_id=FARMER)
        fields.register_field(conn, tenant, "field-1", FARM, {"name": "North field", "crop": "maize", "area_ha": 1.2},
                              actor=None)
        fields.register_field(conn, tenant, "field-2", FARM, {"name": "River field", "crop": "rice", "area_ha": 2.3},
                              actor=None)
        kek = bytes.fromhex(KEK)
        registry.register_gateway(conn, tenant, GATEWAY, FARM, secrets.token_bytes(32), kek, None, None,
                                  name="Dongshan gateway")
        registry.register_device(conn, tenant, SOIL, "bus", FARM, GATEWAY, "jxct-soil-7in1", None, kek,
                                 details={"field_id": "field-1"})
        registry.register_device(conn, tenant, NODE, "node", FARM, GATEWAY, None, secrets.token_bytes(32), kek,
                                 details={"field_id": "field-2", "firmware_version": "1.4.0"})
        conn.commit()


def reading_rows(tenant: str, metric_ids: dict[str, int], now: datetime) -> list[store_data.Row]:
    """Half-hourly soil moisture and temperature of both devices over :data:`DAYS` days.

    The soil probe (field 1) is silent for a whole day five days ago and has a few flagged readings; both are
    silent for nine hours eight days ago; the node (field 2) has been dry (below 20 %) for the last three days."""
    start = rollups.floor(now, timedelta(minutes=30)) - timedelta(days=DAYS)
    rows: list[store_data.Row] = []
    seq = {SOIL: 0, NODE: 0}
    step = 0
    ts = start
    while ts < now:
        for device in (SOIL, NODE):
            age = now - ts
            if device == SOIL and timedelta(days=5) <= age < timedelta(days=6):
                continue  # the probe is silent for a day (the farm's mean goes on with the node alone)
            if timedelta(days=8) <= age < timedelta(days=8, hours=9):
                continue  # the gateway is down: no data from the farm, a gap in its charts
            seq[device] += 1
            moisture = 32.0 + 4 * ((step % 48) / 48)
            if device == NODE and age < timedelta(days=3):
                moisture = 14.0 + (step % 6) / 2
            quality = Q_STALE if device == SOIL and step % 97 == 0 else 0
            if device == SOIL and step % 131 == 0:
                quality |= Q_OUT_OF_RANGE
            trust = 2 if device == SOIL else 1
            rows.append((tenant, device, metric_ids["soil_moisture"], ts, round(moisture, 2), None, quality, trust,
                         1, seq[device]))
            rows.append((tenant, device, metric_ids["soil_temperature"], ts, round(18 + 6 * ((step % 48) / 48), 2),
                         None, 0, trust, 1, seq[device]))
        step += 1
        ts += timedelta(minutes=30)
    return rows


def _readings(owner_url: str, tenant: str, now: datetime) -> None:
    with app_connect(owner_url) as conn:
        metric_ids = {name: mid for (name, _), mid in
                      writes.metric_ids(conn, [("soil_moisture", "%"), ("soil_temperature", "Cel")]).items()}
        conn.commit()
    rows = reading_rows(tenant, metric_ids, now)
    import psycopg

    with psycopg.connect(owner_url) as conn:
        store_data.load(conn, rows)
        rollups.refresh_rollups(conn, rows[0][3] - timedelta(days=1), now + timedelta(hours=1))
        conn.commit()


def _fleet(owner_url: str, tenant: str, now: datetime) -> None:
    """Heartbeats every hour over the last 2 days (the node's battery running down), then a battery rule."""
    with app_connect(owner_url) as conn:
        for hours_ago in range(48, -1, -1):
            at = now - timedelta(hours=hours_ago)
            battery = round(3.6 - (48 - hours_ago) * 0.006, 3)
            health = models.Health(k="health", gw=GATEWAY, at=int(at.timestamp() * 1000), sw="edge/1.2.0",
                                   uptime_s=3600.0, devices={
                                       NODE: models.DeviceHealth(last_good_ms=int(at.timestamp() * 1000), state="ok",
                                                                 battery=battery, battery_unit="V", rssi=-78.0,
                                                                 fw="1.4.0"),
                                       SOIL: models.DeviceHealth(last_good_ms=int(at.timestamp() * 1000),
                                                                 state="ok")})
            presence.record_heartbeat(conn, tenant, GATEWAY, health, [NODE, SOIL], now=at)
        conn.commit()
        rule = rules.create_rule(conn, tenant, rules.RuleCreate(name="Battery low", kind="battery_low", threshold=3.4,
                                                                severity="warning"), "seed")
        conn.commit()
        assert rule.id
        evaluate.evaluate_rules(conn, now, tenant)
        conn.commit()


def _consent_and_read(owner_url: str, tenant: str, world: World, client_ip: str) -> None:
    """The farmer's consent for a loan assessment, and a credit officer's read of the soil data under it."""
    with app_connect(owner_url, tenant=tenant) as conn:
        farmer_user = conn.execute("SELECT id FROM ft.users WHERE tenant_id = %s AND farmer_id = %s",
                                   (tenant, world.farmer_id)).fetchone()
        officer_user = conn.execute("SELECT id FROM ft.users WHERE tenant_id = %s AND login = %s",
                                    (tenant, world.officer)).fetchone()
        assert farmer_user is not None and officer_user is not None
        farmer = scopes.user_principal(farmer_user[0], tenant, ["farmer"], world.farmer_id, client_ip)
        consent_store.grant(conn, farmer, world.farmer_id, "credit_assessment", ["soil", "registry"], days=90,
                            pin=world.pin, text_version=texts.VERSION, language="zh-CN")
        officer = scopes.user_principal(officer_user[0], tenant, ["credit_officer"], None, client_ip)
        consent_check.use_data(conn, officer, world.farmer_id, "credit_assessment", "soil", "farm", FARM)
        conn.commit()
