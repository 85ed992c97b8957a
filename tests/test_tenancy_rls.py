"""Tenant isolation in PostgreSQL itself: the ft_app role, forced row-level security, scopes per transaction.

Two tenants are seeded the way the services write (registry, ingest, downlink, device events, all as
ft_app), then every tenant-owned table is read and written as ft_app with no scope, with each tenant's
scope and in platform scope, and compared with what the owner sees.  Tables are found in the catalog,
not listed here, so a table a later migration adds is checked as well.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import errors, sql
from support.app_db import app_connect
from support.ingest import BUS_SPEC, KEK, NODE_SPEC, Site, batch_frame, node_frame, soil_body
from support.store_data import database

from cloud.config import APP_ROLE, app_url
from cloud.ingest.commit import commit_units
from cloud.ingest.directory import Directory
from cloud.ingest.handler import Handler
from cloud.store import db, device_events, downlink, partitions, registry, rollups, scope, tenancy
from cloud.store.migrate import migrate
from contract import topics

#: tables the seed below fills for both tenants (the rest are checked too, with whatever rows they hold)
SEEDED = {"tenants", "farms", "gateways", "devices", "keys", "messages", "batches", "dead_letters", "readings",
          "rollup_dirty", "readings_hourly", "readings_daily", "device_events", "node_configs", "node_reported",
          "ota_jobs"}


@dataclass(frozen=True)
class Seeded:
    owner_url: str
    tenants: tuple[str, str]
    sites: tuple[Site, Site]


def _site(conn: psycopg.Connection, tag: str) -> Site:
    site = Site("", f"t-{tag}", f"farm-{tag}", f"gw-{tag}", os.urandom(32), [f"soil-{tag}"], f"node-{tag}",
                os.urandom(32))
    registry.register_tenant(conn, site.tenant, f"Tenant {tag}")
    registry.register_farm(conn, site.tenant, site.farm, "Farm")
    registry.register_gateway(conn, site.tenant, site.gw, site.farm, site.gw_key, KEK, None, None)
    registry.register_device(conn, site.tenant, site.bus[0], "bus", None, site.gw, BUS_SPEC, None, KEK)
    registry.register_device(conn, site.tenant, site.node, "node", None, site.gw, NODE_SPEC, site.node_key, KEK)
    return site


@pytest.fixture(scope="module")
def seeded(pg_server_url: str) -> Iterator[Seeded]:
    """Two tenants, each with a farm, gateway, devices, keys, an ingested batch (with a dead letter), rollups,
    a maintenance event, a node config, a reported state and an OTA job.  Written as ft_app in platform
    scope, as the services do; rollups refreshed by the owner, as the upkeep loop does."""
    from cloud.downlink import frames, service

    with database(pg_server_url, "postgres") as owner_url:
        with app_connect(owner_url) as conn:
            tag = uuid.uuid4().hex[:6]
            sites = (_site(conn, f"a{tag}"), _site(conn, f"b{tag}"))
            service.create_release(conn, 7, [frames.FirmwareFile("main.py", b"import firmware.main\n")], "test")
            for site in sites:
                device_events.record_event(conn, site.tenant, site.bus[0], "provisioned", {}, "test")
                service.set_node_config(conn, site.tenant, site.node, {"interval_s": 600}, KEK, "test")
                service.create_ota_job(conn, site.tenant, site.node, 7, KEK, "test")
                downlink.record_node_report(conn, site.tenant, site.node, config_version=1)
            conn.commit()
        with app_connect(owner_url, autocommit=True) as read, app_connect(owner_url, autocommit=True) as write:
            handler = Handler(Directory(read, KEK), max_past_days=30, max_future_s=600)
            for site in sites:
                frame = batch_frame(site, [soil_body(site.bus[0], 0), soil_body(site.bus[0], 1),
                                           soil_body("soil-unregistered", 0)], [node_frame(site, 0)])
                units = [handler.prepare(topics.gateway(site.tenant, site.gw, "up"), frame)]
                partitions.ensure_ahead(write, 1)
                partitions.ensure_for(write, [rollups.ORIGIN])  # a day far back: made by ft_app, like any other
                with write.transaction():
                    outcome = commit_units(write, units)
                assert outcome.counts["readings"] == 6 and outcome.rejected == {"unknown_device": 1}
        with db.connect(owner_url, autocommit=True) as owner:
            rollups.refresh_dirty(owner)  # as the upkeep loop does; then marks again, for the checks below
            owner.execute("INSERT INTO ft.rollup_dirty (tenant_id, device_id, hour) SELECT DISTINCT tenant_id,"
                          " device_id, date_trunc('hour', ts) FROM ft.readings")
        yield Seeded(owner_url, (sites[0].tenant, sites[1].tenant), sites)


def _tenant_tables(conn: psycopg.Connection) -> dict[str, str]:
    return tenancy.layout(conn).tenant_tables


def _readable(name: str) -> str:
    """Where ft_app reads a tenant-owned table: the rollups through their filtering views."""
    return f"{name}_v" if name in ("readings_hourly", "readings_daily") else name


def _per_tenant(conn: psycopg.Connection, table: str, column: str) -> dict[str | None, int]:
    query = sql.SQL("SELECT {c}, count(*) FROM {t} GROUP BY {c}").format(c=sql.Identifier(column),
                                                                       t=sql.Identifier("ft", table))
    return {tenant: n for tenant, n in conn.execute(query).fetchall()}


@pytest.fixture(scope="module")
def owner_counts(seeded: Seeded) -> dict[str, dict[str | None, int]]:
    with db.connect(seeded.owner_url) as owner:
        tables = _tenant_tables(owner)
        return {name: _per_tenant(owner, name, column) for name, column in tables.items()}


# -- the role and the catalog ---------------------------------------------------------------------------


def test_ft_app_is_an_ordinary_login_that_owns_nothing(seeded: Seeded) -> None:
    with db.connect(seeded.owner_url) as owner:
        row = owner.execute("SELECT rolcanlogin, rolsuper, rolbypassrls, rolcreatedb, rolcreaterole FROM pg_roles"
                            " WHERE rolname = %s", (APP_ROLE,)).fetchone()
        assert row == (True, False, False, False, False)
        owned = owner.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                              " WHERE n.nspname = 'ft' AND pg_get_userbyid(c.relowner) = %s", (APP_ROLE,)).fetchall()
        assert owned == []
        assert not owner.execute("SELECT has_schema_privilege(%s, 'ft', 'CREATE')", (APP_ROLE,)).fetchone()[0]
    with app_connect(seeded.owner_url) as app:
        assert app.execute("SELECT current_user").fetchone() == (APP_ROLE,)


def test_every_tenant_owned_table_has_forced_row_level_security_and_the_one_policy(seeded: Seeded) -> None:
    with db.connect(seeded.owner_url) as owner:
        tables = _tenant_tables(owner)
        assert set(tables) >= SEEDED
        rows = owner.execute(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,"
            " (SELECT array_agg(policyname::text) FROM pg_policies p WHERE p.schemaname = 'ft'"
            "  AND p.tablename = c.relname AND p.permissive = 'PERMISSIVE')"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'ft' AND c.relname = ANY(%s)", (list(tables),)).fetchall()
    assert {r[0]: r[1:] for r in rows} == {name: (True, True, [tenancy.POLICY]) for name in tables}


def test_the_platform_table_list_is_exact(seeded: Seeded) -> None:
    """Every ft table is tenant-owned (it has tenant_id) or listed as a platform table, and the list names
    only tables that exist: a new table must be classified before it gets any privilege."""
    with db.connect(seeded.owner_url) as owner:
        found = tenancy.layout(owner)
    assert found.unclassified == []
    assert set(found.platform_tables) == tenancy.PLATFORM_TABLES
    assert not set(found.platform_tables) & set(found.tenant_tables)


def test_partitions_are_not_readable_by_their_own_name(seeded: Seeded) -> None:
    with db.connect(seeded.owner_url) as owner:
        parts = tenancy.layout(owner).partitions
        assert partitions.partition_name(rollups.ORIGIN.date()) in parts and len(parts) >= 3  # some made by ft_app
        granted = owner.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'ft' AND c.relispartition AND has_table_privilege(%s, c.oid, 'SELECT,INSERT')",
            (APP_ROLE,)).fetchall()
        assert granted == []
    with app_connect(seeded.owner_url, autocommit=True) as app:
        for name in parts:
            with pytest.raises(errors.InsufficientPrivilege):
                app.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("ft", name)))
        # the readings are there, through the parent and its policy
        assert app.execute("SELECT count(*) FROM ft.readings").fetchone()[0] == 12


def test_ft_app_reads_the_rollups_only_through_their_views(seeded: Seeded) -> None:
    with app_connect(seeded.owner_url, autocommit=True) as app:
        for name in ("readings_hourly", "readings_daily"):
            with pytest.raises(errors.InsufficientPrivilege):
                app.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("ft", name)))
            assert app.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("ft", f"{name}_v"))
                               ).fetchone()[0] > 0


# -- what each scope sees -------------------------------------------------------------------------------


def test_with_no_scope_every_tenant_owned_table_is_empty_and_refuses_inserts(seeded: Seeded) -> None:
    with db.connect(seeded.owner_url) as owner:
        tables = _tenant_tables(owner)
        samples = {name: owner.execute(sql.SQL("SELECT row_to_json(t)::text FROM {} t LIMIT 1").format(
            sql.Identifier("ft", name))).fetchone() for name in tables}
    with db.connect(app_url(seeded.owner_url)) as app:  # a pooled connection's next transaction: nothing set
        for name in tables:
            count = app.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("ft", _readable(name))))
            assert count.fetchone() == (0,), name
            if samples[name] is None or name in ("readings_hourly", "readings_daily"):
                continue  # nothing to copy; the rollups: no INSERT privilege at all
            # the owner's row copied as it is: refused by the policy before any key or constraint is looked at
            target = sql.Identifier("ft", name)
            with pytest.raises(errors.InsufficientPrivilege, match="row-level security"), app.transaction():
                app.execute(sql.SQL("INSERT INTO {} OVERRIDING SYSTEM VALUE SELECT * FROM json_populate_record("
                                    "NULL::{}, %s::json)").format(target, target), samples[name])


def test_a_tenant_scope_sees_and_touches_only_that_tenants_rows(seeded: Seeded, owner_counts) -> None:
    for mine, theirs in (seeded.tenants, tuple(reversed(seeded.tenants))):
        with db.connect(app_url(seeded.owner_url)) as app:
            scope.tenant_scope(app, mine)
            for name, column in tenancy.layout(app).tenant_tables.items():
                seen = _per_tenant(app, _readable(name), column)
                expected = {mine: owner_counts[name][mine]} if owner_counts[name].get(mine) else {}
                assert seen == expected, name
                if name in SEEDED:
                    assert owner_counts[name].get(theirs, 0) > 0 and seen, f"{name}: not seeded for both tenants"
            # writes aimed at the other tenant's rows find none; a row of the other tenant is refused
            for name, column in tenancy.layout(app).tenant_tables.items():
                if not app.execute("SELECT has_table_privilege(%s, 'UPDATE,DELETE')",
                                   (f"ft.{name}",)).fetchone()[0]:
                    continue
                with app.transaction(force_rollback=True):
                    where = sql.SQL("WHERE {} = %s").format(sql.Identifier(column))
                    target = sql.Identifier("ft", name)
                    assert app.execute(sql.SQL("UPDATE {} SET {c} = {c} ").format(
                        target, c=sql.Identifier(column)) + where, (theirs,)).rowcount == 0, name
                    assert app.execute(sql.SQL("DELETE FROM {} ").format(target) + where, (theirs,)).rowcount == 0
            with pytest.raises(errors.InsufficientPrivilege, match="row-level security"), app.transaction():
                app.execute("INSERT INTO ft.farms (id, tenant_id, name) VALUES ('stolen', %s, 'x')", (theirs,))
            with pytest.raises(errors.InsufficientPrivilege, match="row-level security"), app.transaction():
                app.execute("UPDATE ft.farms SET tenant_id = %s WHERE tenant_id = %s", (theirs, mine))


def test_platform_scope_sees_every_tenant(seeded: Seeded, owner_counts) -> None:
    with db.connect(app_url(seeded.owner_url)) as app:
        scope.platform_scope(app)
        for name, column in tenancy.layout(app).tenant_tables.items():
            assert _per_tenant(app, _readable(name), column) == owner_counts[name], name


def test_a_scope_lasts_one_transaction_and_one_scope_replaces_the_other(seeded: Seeded) -> None:
    mine, theirs = seeded.tenants
    with db.connect(app_url(seeded.owner_url)) as app:
        scope.tenant_scope(app, mine)
        assert app.execute("SELECT array_agg(id) FROM ft.tenants").fetchone() == ([mine],)
        scope.set_scope(app, scope.PLATFORM)
        assert app.execute("SELECT count(*) FROM ft.tenants WHERE id = ANY(%s)", (list(seeded.tenants),)
                           ).fetchone() == (2,)
        scope.set_scope(app, theirs)
        assert app.execute("SELECT array_agg(id) FROM ft.tenants").fetchone() == ([theirs],)
        app.commit()
        assert app.execute("SELECT count(*) FROM ft.farms").fetchone() == (0,)  # the next transaction: none
        app.rollback()
        with pytest.raises(ValueError, match="tenant id"):
            scope.tenant_scope(app, "")
    with db.connect(app_url(seeded.owner_url), autocommit=True) as app:
        with pytest.raises(RuntimeError, match="inside a transaction"):
            scope.tenant_scope(app, mine)
        with app.transaction():
            scope.tenant_scope(app, mine)
            assert app.execute("SELECT count(*) FROM ft.farms").fetchone() == (1,)


# -- the migrator's pass ------------------------------------------------------------------------------------


def test_the_pass_changes_nothing_when_settled_and_repairs_what_was_loosened(fresh_db: str) -> None:
    with db.connect(fresh_db) as owner:
        assert tenancy.apply(owner).statements == []
        owner.execute("ALTER TABLE ft.farms NO FORCE ROW LEVEL SECURITY")
        owner.execute("CREATE POLICY open_door ON ft.farms USING (true)")
        owner.execute("DROP POLICY ft_tenant ON ft.devices")
        owner.execute("CREATE POLICY ft_tenant ON ft.devices USING (true)")
        owner.execute("GRANT SELECT ON ft.readings_hourly TO ft_app")
        owner.execute("REVOKE INSERT ON ft.readings FROM ft_app")
        owner.execute("CREATE TABLE ft.unclassified_thing (x int)")
        owner.commit()
    migrate(fresh_db)
    with db.connect(fresh_db) as owner:
        assert tenancy.apply(owner).statements == []
        found = tenancy.layout(owner)
        assert found.unclassified == ["unclassified_thing"]
        privileges = owner.execute(
            "SELECT has_table_privilege(%(r)s, 'ft.unclassified_thing', 'SELECT'),"
            " has_table_privilege(%(r)s, 'ft.readings_hourly', 'SELECT'),"
            " has_table_privilege(%(r)s, 'ft.readings', 'INSERT')", {"r": APP_ROLE}).fetchone()
        assert privileges == (False, False, True)
        policies = owner.execute("SELECT tablename, policyname, qual FROM pg_policies WHERE schemaname = 'ft'"
                                 " AND tablename IN ('farms', 'devices') ORDER BY 1").fetchall()
        assert [(t, p) for t, p, _ in policies] == [("devices", "ft_tenant"), ("farms", "ft_tenant")]
        assert all("current_tenant" in q for _, _, q in policies)
        assert owner.execute("SELECT relforcerowsecurity FROM pg_class WHERE oid = 'ft.farms'::regclass"
                             ).fetchone() == (True,)


# -- TimescaleDB: continuous aggregates behind the filtering views --------------------------------------------


def test_timescale_rollups_are_filtered_by_tenant_through_the_views(pg_server_url: str) -> None:
    with psycopg.connect(pg_server_url) as probe:
        if not db.timescale_available(probe):
            pytest.skip("TimescaleDB cannot be loaded on the test server")
    with database(pg_server_url, "timescale") as owner_url:
        with app_connect(owner_url) as conn:
            sites = [_site(conn, f"{t}{uuid.uuid4().hex[:6]}") for t in "ab"]
            metric = conn.execute("INSERT INTO ft.metrics (name, unit) VALUES ('m', 'u') RETURNING id").fetchone()[0]
            for n, site in enumerate(sites):
                conn.execute("INSERT INTO ft.readings (tenant_id, device_id, metric_id, ts, value, trust, epoch, seq)"
                             " VALUES (%s, %s, %s, %s, %s, 2, 1, 1)",
                             (site.tenant, site.bus[0], metric, rollups.ORIGIN.replace(year=2025), float(n)))
            conn.commit()
        with db.connect(owner_url, autocommit=True) as owner:
            rollups.refresh_rollups(owner, rollups.ORIGIN.replace(year=2025), rollups.ORIGIN.replace(year=2025, day=2))
        with db.connect(app_url(owner_url)) as app:
            for site in sites:
                scope.tenant_scope(app, site.tenant)
                for view in ("readings_hourly_v", "readings_daily_v"):
                    rows = app.execute(sql.SQL("SELECT DISTINCT tenant_id FROM {}").format(sql.Identifier("ft", view)))
                    assert rows.fetchall() == [(site.tenant,)]
                app.commit()
            for name in ("readings_hourly", "readings_daily"):
                with pytest.raises(errors.InsufficientPrivilege), app.transaction():
                    app.execute(sql.SQL("SELECT 1 FROM {}").format(sql.Identifier("ft", name)))
