"""Row-level security and the services' privileges, applied by the migrator after every run.

Every table in schema ``ft`` is one of two kinds, decided by its columns, not by a list that
someone must remember to extend:

* **tenant-owned**: it has a ``tenant_id`` column.  Row-level security is enabled and FORCEd
  (the owner is subject to it too) with one policy, ``ft_tenant``: a row is visible, and may be
  written, when its ``tenant_id`` is the transaction's tenant (``ft.current_tenant()``) or the
  transaction is in platform scope (``ft.platform_scope()``; see cloud.store.scope).  With
  neither set, the table is empty to the services.  ``ft.tenants`` itself is tenant-owned by
  its ``id``.
* **platform**: no ``tenant_id``; shared by every tenant (metric names, firmware releases,
  broker logins of services, ingest workers' counters, the migration ledger).  Each is named in
  :data:`PLATFORM_TABLES`; a table that is neither tenant-owned nor listed gets no privileges at
  all (fail closed) and the test suite fails until it is classified.

Privileges of the services' role ``ft_app``: SELECT, INSERT, UPDATE, DELETE on every table and
USAGE on every sequence of ``ft``, EXECUTE on its functions, except where :data:`PRIVILEGES`
says otherwise (the audit log is append-only, the ledger read-only, the rollups are read
through their filtering views).  Views get nothing unless listed there.  Partitions of
``ft.readings`` get nothing: a partition queried by its own name is not covered by its parent's
policy (they are created by ``ft.create_readings_partition``, which revokes them, and skipped
here).

No ``ALTER DEFAULT PRIVILEGES`` (a deliberate departure from the first design): a new table is
granted by this pass in the same transaction that enables its row-level security, so there is
no moment at which ft_app can read a tenant-owned table without its policy, and partitions
created at run time are never granted by accident.

The pass compares the catalog with what it should be and changes only what differs, so running
it at every start of every service takes no lock once the schema is settled.  On a tenant-owned
table it drops any other PERMISSIVE policy (policies are OR-ed: one would widen what a tenant
sees); RESTRICTIVE policies, which only narrow it (a farmer's own rows, say), are left alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

SCHEMA = "ft"
#: the login role of every service
APP_ROLE = "ft_app"
#: the one policy of a tenant-owned table
POLICY = "ft_tenant"
TENANT_COLUMN = "tenant_id"

#: tables without tenant_id, shared by the whole platform
PLATFORM_TABLES = frozenset({
    "schema_migrations",  # the migration ledger (cloud.store.migrate)
    "metrics",  # metric names and units, shared by every tenant's readings
    "service_accounts",  # broker logins of cloud services (ingest, downlink, fleet)
    "ingest_workers",  # live counters of the ingest workers
    "fleet_services",  # the status of each running fleet process (migration 047)
    "firmware_blobs",  # firmware files by SHA-256
    "firmware_releases",
    "firmware_release_files",
    "rate_limits",  # request counters per API key / user, counted before any tenant scope (migration 041)
    "signin_sources",  # failed sign-ins per source address, across tenants (migration 041)
    "plans",  # SaaS plans and their quotas, offered to every tenant (migration 046)
})

_ALL = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})
#: ft_app's privileges where they differ from _ALL (tables) or from nothing (views), in one place
PRIVILEGES: dict[str, frozenset[str]] = {
    "audit_log": frozenset({"SELECT", "INSERT"}),  # append-only, in the database itself (migration 042)
    "schema_migrations": frozenset({"SELECT"}),
    "plans": frozenset({"SELECT"}),  # priced by platform admins with the owner's login (fieldtrust cloud plan)
    # rollups: through the views below (continuous aggregates cannot carry row-level security)
    "readings_hourly": frozenset(),
    "readings_daily": frozenset(),
    "readings_hourly_v": frozenset({"SELECT"}),
    "readings_daily_v": frozenset({"SELECT"}),
}


def tenant_rule(column: str) -> str:
    """The policy's expression for a table whose tenant is in ``column``."""
    return f"{column} = ft.current_tenant() OR ft.platform_scope()"


@dataclass(frozen=True)
class Layout:
    """The relations of schema ft, by kind (names without the schema)."""

    tenant_tables: dict[str, str]  # table -> its tenant column ("tenant_id", or "id" for ft.tenants)
    platform_tables: list[str]
    unclassified: list[str]  # neither tenant-owned nor in PLATFORM_TABLES: no privileges until classified
    views: list[str]
    partitions: list[str]
    sequences: list[str]
    functions: list[str]  # regprocedure text, e.g. "ft.current_tenant()"


@dataclass
class Applied:
    """What one pass changed (empty when the catalog was already as it should be)."""

    statements: list[str] = field(default_factory=list)


def layout(conn: psycopg.Connection) -> Layout:
    """Classify every relation and function of schema ft."""
    rows = conn.execute(
        """
        SELECT c.relname, c.relkind, c.relispartition,
               EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = %s
                       AND a.attnum > 0 AND NOT a.attisdropped)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
        ORDER BY c.relname
        """,
        (TENANT_COLUMN, SCHEMA),
    ).fetchall()
    tenant: dict[str, str] = {}
    platform, unclassified, views, parts, sequences = [], [], [], [], []
    for name, kind, is_partition, has_tenant in rows:
        if kind == "S":
            sequences.append(name)
        elif kind in ("v", "m"):
            views.append(name)
        elif is_partition:
            parts.append(name)
        elif name == "tenants":
            tenant[name] = "id"
        elif has_tenant:
            tenant[name] = TENANT_COLUMN
        elif name in PLATFORM_TABLES:
            platform.append(name)
        else:
            unclassified.append(name)
    functions = [r[0] for r in conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = %s AND p.prokind IN ('f', 'p') ORDER BY 1", (SCHEMA,))]
    return Layout(tenant, platform, unclassified, views, parts, sequences, functions)


def apply(conn: psycopg.Connection) -> Applied:
    """Bring policies and privileges in line with :func:`layout` (inside the caller's transaction).

    Run by the migrator (as the owner) after every run, under its advisory lock.
    """
    done = Applied()
    found = layout(conn)
    for name in found.unclassified:
        log.error("ft.%s has no %s column and is not in cloud.store.tenancy.PLATFORM_TABLES: "
                  "%s gets no privileges on it until it is classified", name, TENANT_COLUMN, APP_ROLE)

    def run(statement: sql.Composed) -> None:
        done.statements.append(statement.as_string(conn))
        conn.execute(statement)

    if not _has_privilege(conn, "has_schema_privilege(%s, %s, 'USAGE')", SCHEMA):
        run(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(SCHEMA), sql.Identifier(APP_ROLE)))

    security = {name: (enabled, forced) for name, enabled, forced in conn.execute(
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = ANY(%s)",
        (SCHEMA, list(found.tenant_tables)))}
    policies = _policies(conn)
    for name, column in found.tenant_tables.items():
        table = sql.Identifier(SCHEMA, name)
        enabled, forced = security[name]
        if not enabled:
            run(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(table))
        if not forced:
            run(sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(table))
        ours = policies.get(name, {})
        for other in sorted(set(ours) - {POLICY}):
            if ours[other][3]:  # permissive: it would widen what a tenant sees (restrictive ones only narrow it)
                log.warning("tenancy: dropping permissive policy %s on ft.%s (only %s decides visibility)",
                            other, name, POLICY)
                run(sql.SQL("DROP POLICY {} ON {}").format(sql.Identifier(other), table))
        if ours.get(POLICY) != _expected_policy(conn, column):
            rule = sql.SQL(tenant_rule(column))  # type: ignore[arg-type]
            run(sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(sql.Identifier(POLICY), table))
            run(sql.SQL("CREATE POLICY {} ON {} USING ({}) WITH CHECK ({})").format(
                sql.Identifier(POLICY), table, rule, rule))

    granted = _table_grants(conn)
    for name in [*found.tenant_tables, *found.platform_tables, *found.unclassified, *found.views, *found.partitions]:
        if name in found.unclassified or name in found.partitions:
            wanted: frozenset[str] = frozenset()
        elif name in found.views:
            wanted = PRIVILEGES.get(name, frozenset())
        else:
            wanted = PRIVILEGES.get(name, _ALL)
        have = granted.get(name, frozenset())
        if have != wanted:
            table = sql.Identifier(SCHEMA, name)
            if have:
                run(sql.SQL("REVOKE ALL ON {} FROM {}").format(table, sql.Identifier(APP_ROLE)))
            if wanted:
                run(sql.SQL("GRANT {} ON {} TO {}").format(
                    sql.SQL(", ").join(sql.SQL(p) for p in sorted(wanted)), table,  # type: ignore[arg-type]
                    sql.Identifier(APP_ROLE)))

    for name in found.sequences:
        if not _has_privilege(conn, "has_sequence_privilege(%s, %s, 'USAGE')", f"{SCHEMA}.{name}"):
            run(sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(sql.Identifier(SCHEMA, name),
                                                                   sql.Identifier(APP_ROLE)))
    for function in found.functions:
        if not _has_privilege(conn, "has_function_privilege(%s, %s, 'EXECUTE')", function):
            run(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(function),  # type: ignore[arg-type]
                                                                     sql.Identifier(APP_ROLE)))
    if done.statements:
        log.info("tenancy: %d change(s) to row-level security and privileges", len(done.statements))
    return done


def _has_privilege(conn: psycopg.Connection, check: str, target: str) -> bool:
    row = conn.execute(f"SELECT {check}", (APP_ROLE, target)).fetchone()  # type: ignore[arg-type]
    return bool(row and row[0])


Policy = tuple[str | None, str | None, str, bool]  # USING, WITH CHECK, command, permissive


def _policies(conn: psycopg.Connection) -> dict[str, dict[str, Policy]]:
    """Table -> policy name -> how pg_policies shows it (roles other than PUBLIC show as a different command)."""
    rows = conn.execute(
        "SELECT tablename, policyname, qual, with_check,"
        " CASE WHEN roles = '{public}' THEN cmd ELSE cmd || ' TO ' || array_to_string(roles, ',') END,"
        " permissive = 'PERMISSIVE' FROM pg_policies WHERE schemaname = %s", (SCHEMA,)).fetchall()
    found: dict[str, dict[str, Policy]] = {}
    for table, name, qual, check, cmd, permissive in rows:
        found.setdefault(table, {})[name] = (qual, check, cmd, permissive)
    return found


_expected_cache: dict[str, Policy] = {}


def _expected_policy(conn: psycopg.Connection, column: str) -> Policy:
    """How pg_policies shows our policy on a table whose tenant is in ``column``: deparsed by this server
    from a throw-away table, so that the comparison is like with like whatever the server's version."""
    if column not in _expected_cache:
        rule = tenant_rule(column)
        with conn.transaction(force_rollback=True):
            conn.execute(sql.SQL("CREATE TEMP TABLE tenancy_probe ({} text)").format(sql.Identifier(column)))
            conn.execute(f"CREATE POLICY probe ON tenancy_probe USING ({rule}) WITH CHECK ({rule})")  # type: ignore
            row = conn.execute("SELECT qual, with_check, cmd, permissive = 'PERMISSIVE' FROM pg_policies"
                               " WHERE tablename = 'tenancy_probe' AND policyname = 'probe'").fetchone()
        assert row is not None
        _expected_cache[column] = (row[0], row[1], row[2], row[3])
    return _expected_cache[column]


def _table_grants(conn: psycopg.Connection) -> dict[str, frozenset[str]]:
    """Relation -> the privileges granted to APP_ROLE on it directly."""
    rows = conn.execute(
        """
        SELECT c.relname, array_agg(a.privilege_type)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        CROSS JOIN LATERAL aclexplode(c.relacl) a
        WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm') AND a.grantee = %s::regrole
        GROUP BY c.relname
        """,
        (SCHEMA, APP_ROLE),
    ).fetchall()
    return {name: frozenset(privileges) for name, privileges in rows}
