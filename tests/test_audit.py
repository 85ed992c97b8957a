"""The audit log (migration 042, cloud/audit): append-only in the database, hash-chained per tenant, verified in
Python; tampering by the owner (edit, delete, reorder) is found; tenants see only their own entries.

Services' writes go through ft_app (row-level security applies); tampering and verification run as the owner.
The module shares one migrated database (migrating one costs seconds); chains are per tenant, so each test makes
tenants of its own and looks at their chains only (a test's tampering breaks no other test's chain).
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import errors
from typer.testing import CliRunner

from cloud.audit import chain, log, retention
from cloud.auth.principal import Principal
from cloud.store import db
from cloud.store.scope import platform_scope, tenant_scope


def staff(tenant: str, user: str = "u_00000000000000a1", roles: frozenset = frozenset({"credit_officer"})) -> Principal:
    return Principal(kind="user", id=user, tenant_id=tenant, roles=roles, scopes=frozenset({"series:read"}),
                     source_ip="192.0.2.7")


class Dbs:
    def __init__(self, owner_url: str, a: str, b: str) -> None:
        from cloud.config import app_url

        self.owner_url, self.app_url, self.a, self.b = owner_url, app_url(owner_url), a, b


@pytest.fixture
def dbs(module_app_db) -> Dbs:
    """Two new tenants (a, b) in the module's database."""
    tag = uuid.uuid4().hex[:8]
    found = Dbs(module_app_db.owner_url, f"coop-a-{tag}", f"coop-b-{tag}")
    with psycopg.connect(found.owner_url) as conn:
        for tenant in (found.a, found.b):
            conn.execute("INSERT INTO ft.tenants (id, name) VALUES (%s, %s)", (tenant, tenant.upper()))
    return found


def chains(report: chain.VerifyReport) -> dict[str, chain.ChainReport]:
    return {c.chain: c for c in report.chains}


def write(app_url: str, tenant: str | None, n: int = 1, **kwargs) -> list[log.Recorded]:
    """``n`` entries in one ft_app transaction, in ``tenant``'s scope (None: platform scope)."""
    with db.connect(app_url) as conn:
        tenant_scope(conn, tenant) if tenant else platform_scope(conn)
        principal = staff(tenant) if tenant else None
        done = [log.record(conn, principal, "farmer.data_read", "farm", f"farm-{i}", farmer_id="f-1",
                           purpose="credit_assessment", detail={"i": i, "price": 1.50, "name": "李"}, **kwargs)
                for i in range(n)]
        conn.commit()
    return done


def verify(owner_url: str, tenant: str | None = None) -> chain.VerifyReport:
    with db.connect(owner_url) as conn:
        return log.verify(conn, tenant)


def tamper(owner_url: str, statement: str, params: tuple = ()) -> None:
    with db.connect(owner_url) as conn:
        conn.execute("SET LOCAL ft.audit_maintenance = 'on'")
        conn.execute(statement, params)
        conn.commit()


def test_entries_chain_per_tenant_and_verify(dbs):
    written = write(dbs.app_url, dbs.a, 3)
    write(dbs.app_url, dbs.b, 2, source_ip="2001:db8::5")
    write(dbs.app_url, None, 1, source_ip="10.1.2.3")
    found = chains(verify(dbs.owner_url))
    assert found[dbs.a].ok and found[dbs.b].ok and found[""].ok, [c.describe() for c in found.values()]
    assert (found[dbs.a].entries, found[dbs.b].entries) == (3, 2)
    assert found[dbs.a].last_hash == written[-1].hash
    assert [(c.chain, c.entries) for c in verify(dbs.owner_url, dbs.b).chains] == [(dbs.b, 2)]
    # the Python canonical form is byte for byte the database's
    with db.connect(dbs.owner_url) as conn:
        rows = conn.execute(f"SELECT {chain.COLUMNS}, ft_audit.canonical(l) FROM ft.audit_log l"
                            " WHERE tenant_id IN (%s, %s) OR tenant_id IS NULL ORDER BY id", (dbs.a, dbs.b)).fetchall()
    for *columns, database_bytes in rows:
        assert chain.canonical(chain.ChainRow(*columns)) == database_bytes
    first = next(chain.ChainRow(*r[:-1]) for r in rows if r[1] == dbs.a)
    assert first.prev_hash == chain.GENESIS and chain.entry_hash(first.prev_hash, first) == first.hash


def test_writers_cannot_forge_id_time_or_hashes(dbs):
    with db.connect(dbs.app_url) as conn:
        tenant_scope(conn, dbs.a)
        conn.execute("INSERT INTO ft.audit_log (id, tenant_id, at, actor_kind, actor_id, action, target_type,"
                     " target_id, prev_hash, hash) VALUES (1, %s, '2000-01-01', 'user', 'x', 'forged',"
                     " 't', 'i', '\\x01', '\\x02')", (dbs.a,))
        conn.execute("INSERT INTO ft.audit_log (id, tenant_id, at, actor_kind, actor_id, action, target_type,"
                     " target_id) VALUES (1, %s, '2000-01-01', 'user', 'x', 'forged', 't', 'i')", (dbs.a,))
        conn.commit()
        tenant_scope(conn, dbs.a)
        ids, years = zip(*conn.execute("SELECT id, extract(year FROM at) FROM ft.audit_log ORDER BY id"), strict=True)
    assert len(set(ids)) == 2 and 1 not in ids and 2000 not in years
    assert verify(dbs.owner_url, dbs.a).ok


def test_concurrent_writers_keep_one_valid_chain(dbs):
    threads, per_thread = 4, 15
    start = threading.Barrier(threads)
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            start.wait()
            for _ in range(per_thread):
                write(dbs.app_url, dbs.a, 1)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    pool = [threading.Thread(target=writer) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not failures
    report = verify(dbs.owner_url, dbs.a)
    assert report.ok and report.chains[0].entries == threads * per_thread


def test_repeatable_read_writer_cannot_fork_the_chain(dbs):
    """A snapshot older than the chain's head fails (retry) rather than append a second branch."""
    write(dbs.app_url, dbs.a, 1)
    with db.connect(dbs.app_url) as stale, db.connect(dbs.app_url) as fresh:
        stale.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        tenant_scope(stale, dbs.a)
        stale.execute("SELECT count(*) FROM ft.audit_log").fetchone()  # the snapshot is taken here
        tenant_scope(fresh, dbs.a)
        log.record(fresh, staff(dbs.a), "x.y", "t", "1")
        fresh.commit()
        with pytest.raises(errors.SerializationFailure):
            log.record(stale, staff(dbs.a), "x.y", "t", "2")
        stale.rollback()
    report = verify(dbs.owner_url, dbs.a)
    assert report.ok and report.chains[0].entries == 2


CHANGES = ("UPDATE ft.audit_log SET action = 'nothing.happened'", "DELETE FROM ft.audit_log", "TRUNCATE ft.audit_log")


def test_app_role_cannot_change_or_remove_entries(dbs):
    write(dbs.app_url, dbs.a, 2)
    for statement in CHANGES:
        with db.connect(dbs.app_url) as conn:
            tenant_scope(conn, dbs.a)
            conn.execute("SET LOCAL ft.audit_maintenance = 'on'")  # anyone may set it: privileges still refuse
            with pytest.raises(errors.InsufficientPrivilege, match="permission denied"):
                conn.execute(statement)
            conn.rollback()
    assert verify(dbs.owner_url, dbs.a).chains[0].entries == 2


def test_owner_is_refused_without_the_maintenance_setting(dbs):
    write(dbs.app_url, dbs.a, 1)
    for statement in CHANGES:
        with db.connect(dbs.owner_url) as conn:
            with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement + (f" WHERE tenant_id = '{dbs.a}'" if "TRUNCATE" not in statement else ""))
            conn.rollback()
    assert verify(dbs.owner_url, dbs.a).chains[0].entries == 1


#: statements on the ids of a chain's 5 entries ({0} ... {4}), the break expected (kind, index of the entry)
TAMPERING = {
    # an entry edited in place: its hash no longer matches
    "edit": ("UPDATE ft.audit_log SET detail = '{{\"i\": 99}}' WHERE id = {2}", "edited", 2),
    # edited and rehashed by someone who knows the scheme: the next entry no longer follows it
    "edit_rehashed": ("UPDATE ft.audit_log l SET purpose = 'advice', hash = sha256(l.prev_hash ||"
                      " ft_audit.canonical((l.id, l.tenant_id, l.at, l.actor_kind, l.actor_id, l.actor_roles,"
                      " l.action, l.target_type, l.target_id, l.farmer_id, 'advice', l.source_ip, l.detail,"
                      " l.prev_hash, l.hash)::ft.audit_log)) WHERE id = {2}", "link", 3),
    "delete_middle": ("DELETE FROM ft.audit_log WHERE id = {2}", "link", 3),
    "delete_first": ("DELETE FROM ft.audit_log WHERE id = {0}", "link", 1),
    "delete_last": ("DELETE FROM ft.audit_log WHERE id = {4}", "tail", None),
    # two entries swap places
    "reorder": ("UPDATE ft.audit_log SET id = -id WHERE id = {1}; UPDATE ft.audit_log SET id = {1} WHERE id = {3};"
                " UPDATE ft.audit_log SET id = {3} WHERE id = -{1}", "link", 1),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampering_is_detected(dbs, case):
    ids = [r.id for r in write(dbs.app_url, dbs.a, 5)]
    write(dbs.app_url, dbs.b, 2)
    statement, kind, index = TAMPERING[case]
    tamper(dbs.owner_url, statement.format(*ids))
    found = chains(verify(dbs.owner_url))
    assert found[dbs.b].ok  # another tenant's chain is untouched
    broken = found[dbs.a].broken
    assert broken is not None and (broken.kind, broken.entry_id) == (kind, None if index is None else ids[index]), \
        broken


def test_cli_verify_exit_status(dbs):
    ids = [r.id for r in write(dbs.app_url, dbs.a, 3)]
    runner, env = CliRunner(), {"FIELDTRUST_DATABASE_URL": dbs.owner_url}
    from fieldtrust.cli.main import app

    ok = runner.invoke(app, ["cloud", "audit", "verify", "--tenant", dbs.a], env=env)
    assert ok.exit_code == 0, ok.output
    assert f"tenant {dbs.a}: 3 entries, chain intact" in ok.output
    shown = runner.invoke(app, ["cloud", "audit", "show", dbs.a, "--limit", "2"], env=env)
    assert shown.exit_code == 0 and shown.output.count("farmer.data_read") == 2, shown.output
    tamper(dbs.owner_url, "DELETE FROM ft.audit_log WHERE id = %s", (ids[1],))
    broken = runner.invoke(app, ["cloud", "audit", "verify", "--tenant", dbs.a], env=env)
    assert broken.exit_code == 1
    assert "BROKEN" in broken.output and f"entry {ids[2]} does not follow entry {ids[0]}" in broken.output


def test_tenants_see_only_their_own_entries(dbs):
    write(dbs.app_url, dbs.a, 2)
    write(dbs.app_url, None, 1)
    with db.connect(dbs.app_url) as conn:
        assert conn.execute("SELECT count(*) FROM ft.audit_log").fetchone() == (0,)  # no scope: nothing
        tenant_scope(conn, dbs.b)
        assert conn.execute("SELECT count(*) FROM ft.audit_log").fetchone() == (0,)
        assert log.search(conn, dbs.a) == []
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
            log.record(conn, staff(dbs.b), "x.y", "t", "1", tenant_id=dbs.a)  # into another tenant's chain
    with db.connect(dbs.app_url) as conn:
        tenant_scope(conn, dbs.a)
        found = log.search(conn, dbs.a)
        assert [e.target_id for e in found] == ["farm-1", "farm-0"]  # newest first; not the platform event
        assert found[0].source_ip == "192.0.2.7" and found[0].detail["name"] == "李"


def test_search_filters_and_pages(dbs):
    with db.connect(dbs.app_url) as conn:
        tenant_scope(conn, dbs.a)
        officer, clerk = staff(dbs.a), staff(dbs.a, "u_00000000000000c1", frozenset({"clerk"}))
        for i in range(5):
            log.record(conn, officer, "farmer.data_read", "field", f"fl-{i}", farmer_id="f-1", purpose="advice")
        log.record(conn, clerk, "consent.granted", "consent", "c_1", farmer_id="f-2")
        log.record(conn, clerk, "consent.revoked", "consent", "c_1", farmer_id="f-2", source_ip="testclient")
        page = log.search(conn, dbs.a, log.Filters(actor_id=officer.id), limit=3)
        rest = log.search(conn, dbs.a, log.Filters(actor_id=officer.id), before_id=page[-1].id, limit=3)
        assert [e.target_id for e in page + rest] == [f"fl-{i}" for i in range(4, -1, -1)]
        consent = log.search(conn, dbs.a, log.Filters(action="consent."))
        assert [e.action for e in consent] == ["consent.revoked", "consent.granted"]
        assert consent[0].source_ip is None and consent[0].detail == {"source": "testclient"}
        assert len(log.search(conn, dbs.a, log.Filters(farmer_id="f-2", target_id="c_1"))) == 2
        later = datetime.now(UTC) + timedelta(minutes=1)
        assert log.search(conn, dbs.a, log.Filters(since=later)) == []
        assert len(log.search(conn, dbs.a, log.Filters(until=later))) == 7
        with pytest.raises(ValueError, match="limit"):
            log.search(conn, dbs.a, limit=0)


def test_retention_archives_a_prefix_and_the_chain_still_verifies(dbs, tmp_path: Path):
    ids = [r.id for r in write(dbs.app_url, dbs.a, 3)]
    write(dbs.app_url, dbs.b, 1)
    with db.connect(dbs.owner_url) as conn:
        cut = conn.execute("SELECT at FROM ft.audit_log WHERE id = %s", (ids[2],)).fetchone()[0]
    write(dbs.app_url, dbs.a, 2)
    archive = tmp_path / "audit-archive.jsonl"
    with db.connect(dbs.owner_url) as conn:
        pruned = retention.prune(conn, cut, archive, tenant=dbs.a)
    assert [(p.chain, p.entries, p.base_id) for p in pruned] == [(dbs.a, 2, ids[1])]
    assert len(archive.read_text(encoding="utf-8").splitlines()) == 2
    for tenant, entries in ((dbs.a, 3), (dbs.b, 1)):
        report = verify(dbs.owner_url, tenant)
        assert report.ok and report.chains[0].entries == entries
    write(dbs.app_url, dbs.a, 1)
    assert verify(dbs.owner_url, dbs.a).ok
    with db.connect(dbs.owner_url) as conn, pytest.raises(FileExistsError):
        retention.prune(conn, cut, archive, tenant=dbs.a)  # never overwrites an archive
    assert archive.exists()
    tamper(dbs.owner_url, "DELETE FROM ft.audit_log WHERE id = (SELECT max(id) FROM ft.audit_log WHERE tenant_id = %s)",
           (dbs.a,))
    with db.connect(dbs.owner_url) as conn, pytest.raises(retention.PruneRefused, match="removed"):
        retention.prune(conn, datetime.now(UTC), tmp_path / "second.jsonl", tenant=dbs.a)
    assert not (tmp_path / "second.jsonl").exists()
