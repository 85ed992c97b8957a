"""Metering for SaaS billing, against a real PostgreSQL (as ft_app), the real ingest worker and the real API:
exact ingest counts (redelivered, duplicate and refused batches not counted; a rolled-back commit not counted),
active devices, API calls by key, CSV export, soft and hard limits, and tenant isolation of usage."""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from cloud.ingest.commit import commit_units
from cloud.ingest.directory import Directory
from cloud.ingest.handler import Handler, Prepared
from cloud.metering import plans, quotas, usage
from cloud.metering.meters import current_month, month_text
from cloud.store import db, partitions
from contract import topics
from fieldtrust.cli.main import app as cli
from tests.support.accounts import ADMIN, add_tenant, api, bearer, client_of, running_app
from tests.support.app_db import app_connect
from tests.support.ingest import (
    BASE_MS,
    KEK,
    GatewayLink,
    Site,
    batch_frame,
    node_frame,
    register_site,
    running_worker,
    scalar,
    soil_body,
    wait_until,
)

MONTH = current_month()


@pytest.fixture(scope="module")
def db_url(module_app_db) -> str:
    """One migrated database for the module (the owner's URL): every test registers tenants of its own."""
    return module_app_db.owner_url


def report(owner_url: str, tenant: str) -> usage.UsageReport:
    """The tenant's report as the API reads it: ft_app in the tenant's own scope."""
    with app_connect(owner_url, tenant=tenant) as conn:
        return usage.report(conn, tenant, MONTH)


def quantities(rep: usage.UsageReport) -> dict[str, int]:
    return {m.meter: m.quantity for m in rep.meters}


def meter(rep: usage.UsageReport, name: str) -> usage.MeterUsage:
    return next(m for m in rep.meters if m.meter == name)


def put_plan(owner_url: str, tenant: str, **quota_by_meter: plans.Quota) -> plans.Plan:
    plan = plans.Plan(id=f"plan-{uuid.uuid4().hex[:8]}", name="Co-operative basic", currency="EUR",
                      monthly_fee=Decimal("49.00"), quotas=quota_by_meter)
    with db.connect(owner_url) as conn:
        plans.put_plan(conn, plan)
        plans.assign_plan(conn, tenant, plan.id, MONTH, "test")
        conn.commit()
    return plan


# -- ingest meters -------------------------------------------------------------------------------------------


def test_ingest_counts_are_exact_through_the_worker(shared_broker, db_url: str) -> None:
    site = register_site(db_url)
    soil0, soil1 = site.bus
    first = batch_frame(site, [soil_body(soil0, 0), soil_body(soil1, 0), soil_body(soil0, 1)], [node_frame(site, 0)])
    forged = batch_frame(site, [soil_body(soil1, 5)], key=bytes(32))  # refused: dead-lettered, never counted
    # a new batch carrying one message stored before (a duplicate: not counted again) and one new message
    second = batch_frame(site, [soil_body(soil0, 1), soil_body(soil1, 1)])
    with running_worker(db_url, ingest_batch_wait_s=0) as worker:
        link = GatewayLink(site, *shared_broker)
        try:
            for frame in (first, first, forged, second):  # the first one redelivered: counted once
                link.publish(frame)
                time.sleep(0.2)  # each in its own transaction
            assert wait_until(lambda: len(link.receipted) == 3 and scalar(
                db_url, "SELECT count(*) FROM ft.dead_letters WHERE tenant_id = %s", site.tenant) == 1
            ), worker.counters.snapshot()
        finally:
            link.close()
    rep = report(db_url, site.tenant)
    assert quantities(rep) == {"messages_ingested": 5, "bytes_ingested": len(first) + len(second),
                               "readings_stored": 10, "active_devices": 3, "api_calls": 0, "data_exported_bytes": 0}
    # the counters agree with what the store holds
    assert scalar(db_url, "SELECT count(*) FROM ft.readings WHERE tenant_id = %s", site.tenant) == 10
    assert scalar(db_url, "SELECT count(*) FROM ft.messages WHERE tenant_id = %s", site.tenant) == 5
    assert worker.counters.snapshot()["batches_redelivered"] == 1


def _prepare(conn: psycopg.Connection, site: Site, frames: list[bytes]) -> list[Prepared]:
    handler = Handler(Directory(conn, KEK), max_past_days=30, max_future_s=600)
    units = [handler.prepare(topics.gateway(site.tenant, site.gw, "up"), f) for f in frames]
    assert all(u.batch is not None and not u.dead_letters for u in units)
    return units


def test_a_rolled_back_commit_is_not_counted_and_overlaps_count_as_stored(db_url: str) -> None:
    a, b = register_site(db_url), register_site(db_url)
    with app_connect(db_url, autocommit=True) as conn:
        partitions.ensure_ahead(conn, 1)
        units = _prepare(conn, a, [batch_frame(a, [soil_body(a.bus[0], 0)])])
        with pytest.raises(RuntimeError), conn.transaction():
            commit_units(conn, units)
            raise RuntimeError("the commit fails after the rows were written")
        assert quantities(report(db_url, a.tenant))["messages_ingested"] == 0
        # two tenants in one transaction, each with a reading that another message of theirs stored before
        # (same device, metric and time, another sequence number): the rarer path that counts what was stored
        earlier = _prepare(conn, a, [batch_frame(a, [soil_body(a.bus[1], 7)])])
        earlier += _prepare(conn, b, [batch_frame(b, [soil_body(b.bus[1], 7)])])
        with conn.transaction():
            commit_units(conn, earlier)
        # sequence 8 with the times of sequence 7's readings
        overlapping = [batch_frame(s, [soil_body(s.bus[1], 8, bt_ms=_bt(7))]) for s in (a, b)]
        units = _prepare(conn, a, [overlapping[0]]) + _prepare(conn, b, [overlapping[1]])
        with conn.transaction():
            commit_units(conn, units)
    for site in (a, b):
        counted = quantities(report(db_url, site.tenant))
        stored = scalar(db_url, "SELECT count(*) FROM ft.readings WHERE tenant_id = %s", site.tenant)
        assert counted["readings_stored"] == stored == 2  # seq 7's two readings; seq 8's were there already
        assert counted["messages_ingested"] == 2 and counted["active_devices"] == 1


def test_two_sessions_commit_a_tenants_usage_without_waiting_for_each_other(db_url: str) -> None:
    """Each session adds to its own counter shard (migration 049): a commit of the same tenant does not wait
    for another session's open transaction, and the report sums the shards exactly."""
    site = register_site(db_url)
    with app_connect(db_url, autocommit=True) as first, app_connect(db_url, autocommit=True) as second:
        partitions.ensure_ahead(first, 1)
        with first.transaction():  # the device's row of the month exists (only a new device's insert may wait)
            commit_units(first, _prepare(first, site, [batch_frame(site, [soil_body(site.bus[0], 0)])]))
        second.execute("SET lock_timeout = '5s'")  # with a shared counter row the second commit would wait
        with first.transaction():
            commit_units(first, _prepare(first, site, [batch_frame(site, [soil_body(site.bus[0], 1)])]))
            with second.transaction():  # while the first one is still open
                commit_units(second, _prepare(second, site, [batch_frame(site, [soil_body(site.bus[0], 2)])]))
            shards = scalar(db_url, "SELECT count(DISTINCT shard) FROM ft.usage_monthly WHERE tenant_id = %s",
                            site.tenant)
    assert shards == 2  # the first transaction's second batch not yet visible: its shard has the first batch
    counted = quantities(report(db_url, site.tenant))
    assert counted["messages_ingested"] == 3 and counted["active_devices"] == 1
    assert counted["readings_stored"] == scalar(db_url, "SELECT count(*) FROM ft.readings WHERE tenant_id = %s",
                                                site.tenant) == 6


def _bt(seq: int) -> int:
    """The base time soil_body gives sequence ``seq`` by default."""
    return BASE_MS + seq * 1000


def test_ingest_over_a_hard_limit_is_stored_and_flagged(db_url: str) -> None:
    site = register_site(db_url)
    put_plan(db_url, site.tenant,
             messages_ingested=plans.Quota(included=1, soft=2, hard=3, price=Decimal("0.50"), per=1))
    with app_connect(db_url, autocommit=True) as conn:
        partitions.ensure_ahead(conn, 1)
        units = _prepare(conn, site, [batch_frame(site, [soil_body(site.bus[i % 2], i) for i in range(5)])])
        with conn.transaction():
            commit_units(conn, units)
        with conn.transaction():
            found = quotas.evaluate(conn, MONTH)
    assert {(c.meter, c.level) for c in found.found} == {("messages_ingested", "soft"), ("messages_ingested", "hard")}
    assert found.blocked == {}  # an ingest meter never blocks the API
    rep = report(db_url, site.tenant)
    messages = meter(rep, "messages_ingested")
    assert messages.quantity == 5 and messages.status == "hard_limit" and messages.over_hard_limit == 2
    assert messages.overage_cost == Decimal("2.00") and rep.total_cost == Decimal("51.00")
    assert scalar(db_url, "SELECT count(*) FROM ft.readings WHERE tenant_id = %s", site.tenant) == 10
    assert sorted(w.level for w in rep.warnings) == ["hard", "soft"]


# -- API meters, limits, isolation ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app(module_app_db) -> Iterator[FastAPI]:
    with running_app(module_app_db.owner_url) as running:
        yield running


def _key(app: FastAPI, tenant: str, scopes: list[str]) -> tuple[str, str]:
    response = client_of(app).post(api(f"/tenants/{tenant}/api-keys"), json={"name": "bank app", "scopes": scopes},
                                   headers=ADMIN)
    assert response.status_code == 201, response.text
    return response.json()["key"], response.json()["api_key"]["id"]


def _tenant(app: FastAPI) -> str:
    name = f"coop-{uuid.uuid4().hex[:8]}"
    add_tenant(client_of(app), name)
    return name


def test_api_calls_by_key_csv_export_and_limits(app: FastAPI, module_app_db) -> None:
    owner = module_app_db.owner_url
    tenant = _tenant(app)
    put_plan(owner, tenant, api_calls=plans.Quota(included=2, soft=3, hard=6, price=Decimal("0.10"), per=1))
    with psycopg.connect(owner) as conn:  # the tenant's webhook: quota warnings are notified there
        conn.execute("INSERT INTO ft.webhooks (tenant_id, url, secret, created_by) VALUES (%s, %s, %s, 'test')",
                     (tenant, "https://hooks.example.org/ft", "s" * 32))
    (key1, id1), (key2, id2) = _key(app, tenant, ["usage:read", "registry:read"]), _key(app, tenant, ["usage:read"])
    client, meter_ = client_of(app), app.state.meter
    for _ in range(2):
        assert client.get(api(f"/tenants/{tenant}/farms"), headers=bearer(key1)).status_code == 200
    assert client.get(api(f"/tenants/{tenant}/usage"), headers=bearer(key2)).status_code == 200
    assert client.get(api(f"/tenants/{tenant}/usage"), headers=ADMIN).status_code == 200  # admins: not metered
    assert meter_.flush()
    rep = client.get(api(f"/tenants/{tenant}/usage"), headers=bearer(key2)).json()
    calls = next(m for m in rep["meters"] if m["meter"] == "api_calls")
    assert calls["quantity"] == 3 and sorted((k["key"], k["quantity"]) for k in calls["by_key"]) == sorted(
        [(f"api_key:{id1}", 2), (f"api_key:{id2}", 1)])
    assert calls["status"] == "soft_limit" and calls["percent_used"] == 150.0 and calls["overage_cost"] == "0.10"
    assert [(w["meter"], w["level"]) for w in rep["warnings"]] == [("api_calls", "soft")]
    events = scalar(owner, "SELECT array_agg(event) FROM ft.webhook_deliveries WHERE tenant_id = %s", tenant)
    assert events == ["usage.soft_limit"]

    answer = client.get(api(f"/tenants/{tenant}/usage.csv"), params={"month": month_text(MONTH)},
                        headers=bearer(key2))
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [r["meter"] for r in rows if not r["key"]] == list(usage.METERS)
    assert {(r["key"], r["quantity"]) for r in rows if r["meter"] == "api_calls" and r["key"]} == {
        (f"api_key:{id1}", "2"), (f"api_key:{id2}", "1")}  # as flushed: the JSON read above is still in memory
    assert meter_.flush()
    exported = meter(report(owner, tenant), "data_exported_bytes")
    assert exported.by_key == [usage.KeyUsage(key=f"api_key:{id2}", quantity=len(answer.content))]

    # hard limit: 6 calls reached; the next flush learns it, and the tenant's calls are refused
    assert client.get(api(f"/tenants/{tenant}/farms"), headers=bearer(key1)).status_code == 200
    assert meter_.flush()
    refused = client.get(api(f"/tenants/{tenant}/farms"), headers=bearer(key1))
    assert refused.status_code == 402 and "api_calls 6 of a hard limit of 6" in refused.json()["message"]
    assert client.get(api(f"/tenants/{tenant}/usage"), headers=bearer(key2)).status_code == 200  # still answers
    assert meter_.flush()
    assert meter(report(owner, tenant), "api_calls").quantity == 7  # the refused call is not counted
    events = scalar(owner, "SELECT array_agg(event ORDER BY id) FROM ft.webhook_deliveries WHERE tenant_id = %s",
                    tenant)
    assert events == ["usage.soft_limit", "usage.hard_limit"]
    other = _tenant(app)  # another tenant is not affected
    assert client.get(api(f"/tenants/{other}/farms"), headers=bearer(_key(app, other, ["registry:read"])[0])
                      ).status_code == 200


def test_a_tenant_cannot_read_another_tenants_usage(app: FastAPI, module_app_db) -> None:
    a, b = _tenant(app), _tenant(app)
    key_b, _ = _key(app, b, ["usage:read"])
    client = client_of(app)
    for path in (f"/tenants/{a}/usage", f"/tenants/{a}/usage.csv"):
        response = client.get(api(path), headers=bearer(key_b))
        assert response.status_code == 404 and a not in response.text.replace(f"tenant {a!r} not found", "")
    assert client.get(api("/usage"), headers=bearer(key_b)).status_code == 403
    assert client.get(api(f"/tenants/{b}/usage"), headers=bearer(_key(app, b, ["registry:read"])[0])
                      ).status_code == 403  # usage:read is needed
    # under row-level security even a query for A's rows made in B's scope sees nothing
    with app_connect(module_app_db.owner_url, tenant=b) as conn, pytest.raises(usage.UnknownTenant):
        usage.report(conn, a, MONTH)
    with app_connect(module_app_db.owner_url, tenant=b) as conn:
        assert conn.execute("SELECT count(*) FROM ft.usage_monthly WHERE tenant_id <> %s", (b,)).fetchone() == (0,)
    # platform admins see every tenant
    every = client.get(api("/usage"), params={"month": month_text(MONTH)}, headers=ADMIN).json()
    assert {a, b} <= {r["tenant_id"] for r in every}


def test_cli_usage_and_plans(db_url: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = register_site(db_url)
    monkeypatch.setenv("FIELDTRUST_DATABASE_URL", db_url)
    plan = tmp_path / "plan.json"
    plan.write_text('{"id": "basic", "name": "Basic", "currency": "EUR", "monthly_fee": "10",'
                    ' "quotas": {"active_devices": {"included": 2, "price": "1.5"}}}')
    runner = CliRunner()
    assert runner.invoke(cli, ["cloud", "plan", "put", str(plan)]).exit_code == 0
    result = runner.invoke(cli, ["cloud", "plan", "assign", "--tenant", site.tenant, "--plan", "basic"])
    assert result.exit_code == 0, result.output
    with app_connect(db_url, autocommit=True) as conn:
        partitions.ensure_ahead(conn, 1)
        units = _prepare(conn, site, [batch_frame(site, [soil_body(d, 0) for d in site.bus], [node_frame(site, 0)])])
        with conn.transaction():
            commit_units(conn, units)
    result = runner.invoke(cli, ["cloud", "usage", "--tenant", site.tenant, "--month", month_text(MONTH), "--csv"])
    assert result.exit_code == 0, result.output
    devices = next(r for r in csv.DictReader(io.StringIO(result.output)) if r["meter"] == "active_devices")
    assert (devices["quantity"], devices["included"], devices["overage_cost"]) == ("3", "2", "1.5")
    text = runner.invoke(cli, ["cloud", "usage", "--tenant", site.tenant]).output
    assert "plan basic (Basic), EUR" in text and "fee 10.00 + overage 1.50 = 11.50 EUR" in text
    bad = runner.invoke(cli, ["cloud", "usage", "--month", "2026-13"])
    assert bad.exit_code == 2 and "month must be YYYY-MM" in bad.output
    assert runner.invoke(cli, ["cloud", "usage", "--tenant", "nobody"]).exit_code == 1
