"""Alert rules on a simulated fleet: open once per rule and subject, acknowledge, resolve when the condition clears,
silence; every kind of rule against fleet state and readings.  The store runs as ft_app, as the fleet loop does."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from pydantic import ValidationError

from cloud.fleet import alerts, presence, rules
from cloud.fleet.evaluate import evaluate_rules
from cloud.store import partitions, registry, writes
from contract import models
from tests.support.app_db import app_connect
from tests.support.ingest import Site, register_site


def heartbeat(url: str, site: Site, devices: dict[str, dict], depth: int = 0, now: datetime | None = None) -> None:
    """What the fleet consumer stores for one verified heartbeat naming ``devices`` (device -> DeviceHealth fields)."""
    body = models.Health(k="health", gw=site.gw, at=int(time.time() * 1000), sw="edge/1.0.0", uptime_s=1.0,
                         outbox=models.OutboxHealth(depth=depth, oldest_age_s=None, dropped=0, bytes=0),
                         devices={d: models.DeviceHealth(state="ok", battery_unit="V", **f)
                                  for d, f in devices.items()})
    with app_connect(url) as conn:
        presence.record_heartbeat(conn, site.tenant, site.gw, body, list(devices), now)
        conn.commit()


def add_rule(url: str, tenant: str, **fields: object) -> rules.Rule:
    with app_connect(url, tenant=tenant) as conn:
        rule = rules.create_rule(conn, tenant, rules.RuleCreate(**fields), "ops")  # type: ignore[arg-type]
        conn.commit()
    return rule


def evaluate(url: str, now: datetime | None = None) -> list[alerts.Event]:
    with app_connect(url, autocommit=True) as conn:
        return evaluate_rules(conn, now or datetime.now(UTC))


def active(url: str, tenant: str) -> list[alerts.Alert]:
    with app_connect(url, tenant=tenant) as conn:
        return alerts.list_alerts(conn, tenant, active_only=True)


def queued(url: str, tenant: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM ft.webhook_deliveries WHERE tenant_id = %s",
                            (tenant,)).fetchone()[0]  # type: ignore[index]


@pytest.fixture
def fresh_db(module_app_db) -> str:
    """One migrated database for the module (each test has its own tenants)."""
    return module_app_db.owner_url


@pytest.fixture
def fleet(fresh_db: str) -> Site:
    """A tenant with a gateway, three bus devices and a node, and a webhook to count notifications."""
    site = register_site(fresh_db, bus_devices=3)
    with psycopg.connect(fresh_db) as conn:
        conn.execute("INSERT INTO ft.webhooks (tenant_id, url, secret, created_by) VALUES (%s, %s, %s, 'test')",
                     (site.tenant, "http://127.0.0.1:9/hook", "s" * 20))
        conn.commit()
    return site


def test_battery_low_opens_once_acknowledges_and_resolves(fresh_db: str, fleet: Site) -> None:
    low, fine = fleet.bus[0], fleet.bus[1]
    rule = add_rule(fresh_db, fleet.tenant, name="battery", kind="battery_low", threshold=3.3, severity="critical")
    heartbeat(fresh_db, fleet, {low: {"battery": 3.1}, fine: {"battery": 3.9}})

    events = evaluate(fresh_db)
    assert [(e.name, e.alert.subject_id) for e in events] == [("alert.opened", low)]
    assert events[0].alert.severity == "critical" and events[0].alert.value == pytest.approx(3.1)
    assert queued(fresh_db, fleet.tenant) == 1

    heartbeat(fresh_db, fleet, {low: {"battery": 3.0}})
    assert evaluate(fresh_db) == []  # still low: the same alert, refreshed, not a second one
    [alert] = active(fresh_db, fleet.tenant)
    assert alert.value == pytest.approx(3.0) and alert.state == "open"

    with app_connect(fresh_db, tenant=fleet.tenant) as conn:
        acked = alerts.acknowledge(conn, fleet.tenant, alert.id, "user:ops-1")
        conn.commit()
    assert acked.state == "acknowledged" and acked.acknowledged_by == "user:ops-1"
    assert evaluate(fresh_db) == []
    assert [a.state for a in active(fresh_db, fleet.tenant)] == ["acknowledged"]

    heartbeat(fresh_db, fleet, {low: {"battery": 3.7}})  # battery replaced: the condition clears
    events = evaluate(fresh_db)
    assert [(e.name, e.alert.id, e.alert.state) for e in events] == [("alert.resolved", alert.id, "resolved")]
    assert active(fresh_db, fleet.tenant) == [] and queued(fresh_db, fleet.tenant) == 2

    heartbeat(fresh_db, fleet, {low: {"battery": 3.0}})  # low again later: a new alert
    events = evaluate(fresh_db)
    assert len(events) == 1 and events[0].alert.id != alert.id and events[0].alert.rule_id == rule.id
    with app_connect(fresh_db, tenant=fleet.tenant) as conn, pytest.raises(registry.Conflict):
        alerts.acknowledge(conn, fleet.tenant, alert.id, "user:ops-1")  # resolved: nothing to acknowledge


def test_silence_records_without_notifying(fresh_db: str, fleet: Site) -> None:
    dev = fleet.bus[0]
    rule = add_rule(fresh_db, fleet.tenant, name="battery", kind="battery_low", threshold=3.3)
    now = datetime.now(UTC)
    with app_connect(fresh_db, tenant=fleet.tenant) as conn:
        alerts.create_silence(conn, fleet.tenant, alerts.SilenceCreate(
            rule_id=rule.id, subject_kind="device", subject_id=dev, starts_at=now - timedelta(minutes=1),
            ends_at=now + timedelta(hours=1), reason="battery swap"), "ops")
        conn.commit()
    heartbeat(fresh_db, fleet, {dev: {"battery": 3.0}, fleet.bus[1]: {"battery": 3.0}})

    events = evaluate(fresh_db, now)
    assert [e.alert.subject_id for e in events] == [fleet.bus[1]]  # the other device is not silenced
    silenced = [a for a in active(fresh_db, fleet.tenant) if a.subject_id == dev]
    assert len(silenced) == 1 and silenced[0].silenced  # recorded all the same
    assert queued(fresh_db, fleet.tenant) == 1

    heartbeat(fresh_db, fleet, {dev: {"battery": 3.9}})
    assert evaluate(fresh_db, now) == []  # its resolution is not notified either
    assert queued(fresh_db, fleet.tenant) == 1
    # after the window, a new alert on that device notifies again
    heartbeat(fresh_db, fleet, {dev: {"battery": 3.0}})
    later = evaluate(fresh_db, now + timedelta(hours=2))
    assert [e.alert.subject_id for e in later] == [dev] and not later[0].alert.silenced


def test_every_rule_kind(fresh_db: str, fleet: Site) -> None:
    a, b, c = fleet.bus
    now = datetime.now(UTC)
    with psycopg.connect(fresh_db) as conn:  # readings over the last hour; devices registered two hours ago
        conn.execute("UPDATE ft.devices SET created_at = %s WHERE tenant_id = %s", (now - timedelta(hours=2),
                                                                                      fleet.tenant))
        partitions.ensure_partitions(conn, now - timedelta(hours=2), now)
        metric = writes.metric_ids(conn, [("soil_moisture", "%")])[("soil_moisture", "%")]
        rows = [(fleet.tenant, a, metric, now - timedelta(minutes=50), 20.0), (fleet.tenant, a, metric,
                now - timedelta(minutes=10), 62.0), (fleet.tenant, b, metric, now - timedelta(minutes=5), 30.0)]
        conn.cursor().executemany("INSERT INTO ft.readings (tenant_id, device_id, metric_id, ts, value, trust, epoch,"
                                  " seq) VALUES (%s, %s, %s, %s, %s, 2, 1, 0)", rows)
        conn.commit()
    add_rule(fresh_db, fleet.tenant, name="wet", kind="threshold", metric="soil_moisture", op=">", threshold=50)
    add_rule(fresh_db, fleet.tenant, name="quiet", kind="no_data", window_s=1800)
    add_rule(fresh_db, fleet.tenant, name="jump", kind="rate_of_change", metric="soil_moisture", threshold=10,
             window_s=3600)
    add_rule(fresh_db, fleet.tenant, name="backlog", kind="backlog_growing", threshold=100, window_s=3600)
    add_rule(fresh_db, fleet.tenant, name="gone", kind="device_offline", subject_kind="gateway", window_s=60)
    heartbeat(fresh_db, fleet, {}, depth=5, now=now - timedelta(minutes=20))
    heartbeat(fresh_db, fleet, {}, depth=500, now=now - timedelta(minutes=2))
    with app_connect(fresh_db) as conn:
        presence.mark_timeouts(conn, gateway_timeout_s=60, device_timeout_s=3600, now=now - timedelta(seconds=30))
        conn.commit()

    found = {(e.alert.rule_name, e.alert.subject_id) for e in evaluate(fresh_db, now)}
    assert found == {("wet", a), ("quiet", c), ("quiet", fleet.node), ("jump", a), ("backlog", fleet.gw)}
    # the gateway went offline only 30 s ago: the offline rule waits for its 60 s
    found = {(e.alert.rule_name, e.alert.subject_id) for e in evaluate(fresh_db, now + timedelta(seconds=45))}
    assert ("gone", fleet.gw) in found


def test_rule_checks_name_the_fault() -> None:
    with pytest.raises(ValidationError, match="a threshold rule needs op, threshold"):
        rules.RuleCreate(name="x", kind="threshold", metric="soil_moisture")
    with pytest.raises(ValidationError, match="does not use metric"):
        rules.RuleCreate(name="x", kind="battery_low", threshold=3.3, metric="battery")
    with pytest.raises(ValidationError, match="watches gateways"):
        rules.RuleCreate(name="x", kind="backlog_growing", threshold=10, subject_kind="device")
    with pytest.raises(ValidationError, match="ends_at must be after starts_at"):
        now = datetime.now(UTC)
        alerts.SilenceCreate(starts_at=now, ends_at=now)


def test_rules_are_tenant_owned(fresh_db: str, fleet: Site) -> None:
    add_rule(fresh_db, fleet.tenant, name="battery", kind="battery_low", threshold=3.3)
    with pytest.raises(registry.Conflict, match="already has an alert rule"):
        add_rule(fresh_db, fleet.tenant, name="battery", kind="battery_low", threshold=3.0)
    other = register_site(fresh_db, bus_devices=1)
    with app_connect(fresh_db, tenant=other.tenant) as conn:
        assert rules.list_rules(conn, other.tenant) == []
        assert conn.execute("SELECT count(*) FROM ft.alert_rules").fetchone() == (0,)
