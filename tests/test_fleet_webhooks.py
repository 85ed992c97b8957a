"""Webhook notifications: a local HTTP server that fails twice gets the alert on the third attempt, every attempt
signed and logged; URLs that would make the cloud call into a private network are refused outside dev mode."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from cloud.fleet import presence, rules, webhooks
from cloud.fleet.evaluate import evaluate_rules
from cloud.store.registry import Invalid
from contract import models
from fieldtrust.processes import free_port
from tests.support.app_db import app_connect
from tests.support.ingest import register_site
from tests.support.waiting import wait_until


class FlakyReceiver:
    """An HTTP server answering 503 to the first ``failures`` POSTs, then 204; it keeps what it received."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                self.send_response(503 if len(receiver.received) <= receiver.failures else 204)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fieldtrust"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fresh_db(module_app_db) -> str:
    """One migrated database for the module (each test has its own tenant)."""
    return module_app_db.owner_url


@pytest.fixture
def receiver():
    server = FlakyReceiver(failures=2)
    yield server
    server.close()


def test_retries_until_delivered_with_signed_bodies(fresh_db: str, receiver: FlakyReceiver) -> None:
    site = register_site(fresh_db, bus_devices=1)
    with app_connect(fresh_db, tenant=site.tenant) as conn:
        hook, secret = webhooks.create_webhook(conn, site.tenant, receiver.url, "ops", dev_mode=True)
        rules.create_rule(conn, site.tenant, rules.RuleCreate(name="battery", kind="battery_low", threshold=3.3), "ops")
        conn.commit()
    health = models.Health(k="health", gw=site.gw, at=0, sw="edge/1", uptime_s=1.0,
                           devices={site.bus[0]: models.DeviceHealth(state="ok", battery=3.0, battery_unit="V")})
    with app_connect(fresh_db) as conn:
        presence.record_heartbeat(conn, site.tenant, site.gw, health, site.bus)
        conn.commit()

    policy = webhooks.RetryPolicy(max_attempts=5, base_backoff_s=0.05, max_backoff_s=0.2, timeout_s=5)
    with app_connect(fresh_db, autocommit=True) as conn, httpx.Client() as client:
        [event] = evaluate_rules(conn, datetime.now(UTC))

        def delivered() -> bool:
            webhooks.deliver_due(conn, client, policy, dev_mode=True)
            with conn.transaction():
                return webhooks.list_deliveries(conn, site.tenant)[0].status == "delivered"

        assert wait_until(delivered, timeout=20, step=0.05)
        with conn.transaction():
            [delivery] = webhooks.list_deliveries(conn, site.tenant, hook.id)

    assert delivery.attempts == 3 and delivery.last_status == 204 and delivery.last_error is None
    assert delivery.alert_id == event.alert.id and delivery.event == "alert.opened"
    assert len(receiver.received) == 3
    for headers, body in receiver.received:  # every attempt is signed over its exact bytes
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert headers[webhooks.SIGNATURE_HEADER] == expected
        assert headers[webhooks.EVENT_HEADER] == "alert.opened"
        sent = json.loads(body)
        assert sent["delivery"] == delivery.id and sent["alert"]["subject_id"] == site.bus[0]
        assert sent["alert"]["rule"] == "battery" and sent["tenant"] == site.tenant


def test_gives_up_after_max_attempts(fresh_db: str) -> None:
    site = register_site(fresh_db, bus_devices=1)
    dead = f"http://127.0.0.1:{free_port()}/nobody"  # nothing listens: connection refused
    with app_connect(fresh_db, tenant=site.tenant) as conn:
        webhooks.create_webhook(conn, site.tenant, dead, "ops", dev_mode=True)
        rules.create_rule(conn, site.tenant, rules.RuleCreate(name="b", kind="battery_low", threshold=3.3), "ops")
        conn.commit()
    health = models.Health(k="health", gw=site.gw, at=0, sw="edge/1", uptime_s=1.0,
                           devices={site.bus[0]: models.DeviceHealth(state="ok", battery=3.0)})
    with app_connect(fresh_db) as conn:
        presence.record_heartbeat(conn, site.tenant, site.gw, health, site.bus)
        conn.commit()
    policy = webhooks.RetryPolicy(max_attempts=2, base_backoff_s=0.01, max_backoff_s=0.01, timeout_s=2)
    with app_connect(fresh_db, autocommit=True) as conn, httpx.Client() as client:
        evaluate_rules(conn, datetime.now(UTC))

        def finished() -> bool:
            webhooks.deliver_due(conn, client, policy, dev_mode=True)
            with conn.transaction():
                return webhooks.list_deliveries(conn, site.tenant)[0].status != "pending"

        assert wait_until(finished, timeout=20)
        with conn.transaction():
            [delivery] = webhooks.list_deliveries(conn, site.tenant)
    assert delivery.status == "failed" and delivery.attempts == 2 and delivery.last_status is None
    assert delivery.last_error and "Connect" in delivery.last_error


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = webhooks.RetryPolicy(base_backoff_s=5, max_backoff_s=60)
    assert [policy.backoff(n).total_seconds() for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 40, 60]


@pytest.mark.parametrize(("url", "dev_mode", "error"), [
    ("ftp://example.org/x", True, "must be http:// or https://"),
    ("http:///nohost", True, "has no host"),
    ("http://127.0.0.1:8080/hook", False, "local or private address"),
    ("http://localhost/hook", False, "local or private address"),
    ("https://10.1.2.3/hook", False, "local or private address"),
    ("http://169.254.169.254/latest", False, "local or private address"),
])
def test_url_checks(url: str, dev_mode: bool, error: str) -> None:
    with pytest.raises(Invalid, match=error):
        webhooks.check_url(url, dev_mode=dev_mode)


def test_url_checks_allow() -> None:
    assert webhooks.check_url("http://127.0.0.1:8080/hook", dev_mode=True)
    assert webhooks.check_url("https://93.184.216.34/hook", dev_mode=False)  # a public address
