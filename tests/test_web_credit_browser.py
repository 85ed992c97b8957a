"""A loan from the terminal to the officer's decision in a real browser (headless Chromium through Playwright,
tests/support/browser.py): a farmer signs in at the terminal, looks at "Loans for me", applies — reading the
consent and confirming it with their PIN — and prints the receipt page; an officer finds the application in
the queue, opens it (chart, reasons, trust) and decides as recommended; the farmer sees the decision.
Screenshots are kept under var/test-artefacts/web (credit-*.png).  The data is the SYNTHETIC credit world of
tests/test_credit_service.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import browser
from tests.test_credit_service import build_world, train_registry

pytestmark = pytest.mark.timeout(400)

VIEWPORT = {"width": 1024, "height": 600}


@pytest.fixture(scope="module")
def site(module_app_db, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, str]]:
    folder = train_registry(tmp_path_factory.mktemp("credit-browser") / "registry")
    world = build_world(module_app_db.owner_url, folder, label="b", kinds={1: "clean", 2: "no_consent"})
    officer = f"officer-{world.tenant}"
    browser._user(module_app_db.owner_url, world.tenant, f"farmer-{world.tenant}", ["farmer"],
                  pin=browser.World.pin, farmer_id=world.farmers[2])
    browser._user(module_app_db.owner_url, world.tenant, officer, ["credit_officer"], password=browser.World.password)
    with browser.live_service(module_app_db.owner_url) as server:
        yield server.url, world, officer


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with browser.browser_or_skip() as found:
        yield found


def _shot(page: Any, name: str) -> None:
    browser.ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(browser.ARTEFACTS / f"credit-{name}.png"), full_page=True)


def test_a_farmer_applies_at_the_terminal_and_an_officer_decides(chromium, site) -> None:
    base, world, officer = site
    terminal = chromium.new_context(base_url=base, locale="zh-CN", viewport=VIEWPORT,
                                    extra_http_headers={"Accept-Language": "zh-CN"})
    page = terminal.new_page()
    try:
        page.goto(f"/terminal/sign-in?tenant={world.tenant}")
        page.get_by_label("农户编号").fill(world.farmers[2])
        page.locator("#f-pin").fill(browser.World.pin)
        page.locator("button[type=submit].primary").click()
        page.wait_for_load_state("domcontentloaded")
        page.get_by_role("link", name="贷款").first.click()
        page.wait_for_load_state("domcontentloaded")
        assert "需要您同意使用农场数据" in page.locator("main").inner_text()  # no consent yet: the plain shelf
        _shot(page, "terminal-products-zh-CN")
        page.goto("/terminal/apply?amount=300&term=6&purpose=inputs")
        assert "本人同意" in page.locator("#consent-text").inner_text()  # the consent, in full
        page.get_by_label("我同意").check()
        page.locator("#f-pin").fill(browser.World.pin)
        _shot(page, "terminal-apply-zh-CN")
        page.get_by_role("button", name="提交申请").click()
        page.wait_for_load_state("domcontentloaded")
        assert "您的申请已提交" in page.locator("[role=status]").inner_text()
        app_id = re.search(r"/terminal/applications/(la_[0-9a-f]+)", page.url)
        assert app_id is not None
        _shot(page, "terminal-application-zh-CN")
        page.get_by_role("link", name="打印回执").click()
        page.wait_for_load_state("domcontentloaded")
        assert app_id[1] in page.locator("main").inner_text()
        page.emulate_media(media="print")
        assert not page.locator("header.bar").is_visible()  # the print stylesheet leaves the receipt alone
        _shot(page, "terminal-receipt-print-zh-CN")
        page.emulate_media(media="screen")
    finally:
        page.close()

    staff = chromium.new_context(base_url=base, locale="en", viewport={"width": 1280, "height": 800},
                                 extra_http_headers={"Accept-Language": "en"})
    desk = staff.new_page()
    try:
        desk.goto("/officer")
        desk.locator("#f-tenant").fill(world.tenant)
        desk.locator("#f-login").fill(officer)
        desk.locator("#f-password").fill(browser.World.password)
        desk.locator("button[type=submit].primary").click()
        desk.wait_for_load_state("domcontentloaded")
        _shot(desk, "officer-queue-en")
        desk.get_by_role("link", name=app_id[1]).click()
        desk.wait_for_load_state("domcontentloaded")
        assert desk.get_by_role("heading", name="Score and grade").is_visible()
        assert desk.locator("svg.chart-svg").count() >= 1
        _shot(desk, "officer-application-en")
        desk.get_by_role("button", name="Record the decision").click()  # as recommended: no override
        desk.wait_for_load_state("domcontentloaded")
        assert "Your decision is recorded." in desk.locator("[role=status]").inner_text()
        _shot(desk, "officer-decided-en")
    finally:
        staff.close()

    page = terminal.new_page()
    try:
        page.goto(f"/terminal/applications/{app_id[1]}?lang=en")
        status = page.locator("p.big-number").inner_text()
        assert status in ("approved", "being checked by a person", "declined")
        _shot(page, "terminal-decided-en")
    finally:
        terminal.close()
