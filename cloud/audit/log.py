"""Writing and reading the audit log (ft.audit_log, migration 042), and verifying its chains.

:func:`record` is called for every write, every read of a farmer's data by staff or partners, every
credit decision, every refusal worth knowing about.  It writes in the caller's transaction, so the entry
commits or rolls back with what it describes; a refusal that the caller answers with an error must be
committed before the error is raised (cloud/api/routes/consent.py shows how).

The tenant of an entry is the one given, else the principal's, else the transaction's tenant scope
(a platform admin acting in a tenant's path writes to that tenant's chain); with none of them it is a
platform event.  The database assigns id, time, prev_hash and hash (writers cannot forge the chain) and
serialises writers per chain until their transaction ends: record late in a transaction and keep it short.

Actions are dotted lower-case names (``consent.granted``, ``farmer.data_read``); ``data_use_refused`` is the
refusal of a data use without a valid consent (cloud/consent/check.py).
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from cloud.audit import chain
from cloud.auth.principal import Principal
from cloud.store import scope
from cloud.store.db import ROW_SCHEMA

#: a staff or partner read of a farmer's data
DATA_READ = "farmer.data_read"
#: a use of a farmer's data refused for want of a valid consent
DATA_USE_REFUSED = "data_use_refused"
#: a read of the audit log about a farmer (the data-access view, by staff)
AUDIT_READ = "audit.read"

MAX_PAGE = 500


@dataclass(frozen=True)
class Recorded:
    """What the database assigned to a new entry."""

    id: int
    tenant_id: str | None
    at: datetime
    hash: bytes


@dataclass(frozen=True)
class AuditEntry:
    """One audit log entry: who did what, to which record, when, from where, and why."""

    __pydantic_config__ = ROW_SCHEMA
    id: int
    tenant_id: str | None
    """null for platform events"""
    at: datetime
    actor_kind: str
    """user, api_key, platform_admin, system or anonymous"""
    actor_id: str
    actor_name: str | None
    """the user's display name or login, the API key's name"""
    actor_roles: list[str]
    action: str
    target_type: str
    target_id: str
    farmer_id: str | None
    """whose data, when it is a farmer's"""
    purpose: str | None
    source_ip: str | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class Filters:
    """Audit search filters; every one is optional."""

    actor_id: str | None = None
    action: str | None = None  # exact, or a prefix ending in "." ("consent." finds every consent action)
    target_type: str | None = None
    target_id: str | None = None
    farmer_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def record(conn: psycopg.Connection, principal: Principal | None, action: str, target_type: str, target_id: str, *,
           farmer_id: str | None = None, purpose: str | None = None, detail: dict[str, Any] | None = None,
           source_ip: str | None = None, tenant_id: str | None = None) -> Recorded:
    """Append one entry (in the caller's transaction).  ``principal`` None: nobody signed in (a failed sign-in).

    ``source_ip`` defaults to the principal's; a source that is not an IP address (a test client's name) is
    kept in ``detail["source"]`` instead.
    """
    if principal is None:
        kind, actor, roles = "anonymous", "", []
    else:
        kind, actor, roles = principal.kind, principal.id, sorted(principal.roles)
    source = source_ip or (principal.source_ip if principal else None)
    entry_detail = dict(detail or {})
    ip = _ip_or_none(source)
    if source is not None and ip is None:
        entry_detail.setdefault("source", source)
    tenant = tenant_id or (principal.tenant_id if principal else None)
    row = conn.execute(
        """
        INSERT INTO ft.audit_log (tenant_id, actor_kind, actor_id, actor_roles, action, target_type, target_id,
                                  farmer_id, purpose, source_ip, detail)
        VALUES (coalesce(%s, ft.current_tenant()), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        RETURNING id, tenant_id, at, hash
        """,
        (tenant, kind, actor, roles, action, target_type, target_id, farmer_id, purpose, ip,
         Jsonb(entry_detail)),
    ).fetchone()
    assert row is not None
    return Recorded(*row)


_SELECT = """
    SELECT l.id, l.tenant_id, l.at, l.actor_kind, l.actor_id,
           coalesce(nullif(u.display_name, ''), u.login, k.name,
                    CASE l.actor_kind WHEN 'platform_admin' THEN 'platform administrator' END) AS actor_name,
           l.actor_roles, l.action, l.target_type, l.target_id, l.farmer_id, l.purpose, host(l.source_ip) AS source_ip,
           l.detail
    FROM ft.audit_log l
    LEFT JOIN ft.users u ON l.actor_kind = 'user' AND u.id = l.actor_id AND u.tenant_id = l.tenant_id
    LEFT JOIN ft.api_keys k ON l.actor_kind = 'api_key' AND k.id = l.actor_id AND k.tenant_id = l.tenant_id
"""


def search(conn: psycopg.Connection, tenant_id: str, filters: Filters = Filters(), *, before_id: int | None = None,
           limit: int = 50) -> list[AuditEntry]:
    """A tenant's entries matching ``filters``, newest first; the next page is ``before_id=<last id>``."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be 1-{MAX_PAGE}; got {limit}")
    where, params = ["l.tenant_id = %s"], [tenant_id]  # row-level security decides too: this narrows platform scope

    def add(condition: str, value: object) -> None:
        if value is not None:
            where.append(condition)
            params.append(value)

    add("l.actor_id = %s", filters.actor_id)
    if filters.action is not None and filters.action.endswith("."):
        add("starts_with(l.action, %s)", filters.action)
    else:
        add("l.action = %s", filters.action)
    add("l.target_type = %s", filters.target_type)
    add("l.target_id = %s", filters.target_id)
    add("l.farmer_id = %s", filters.farmer_id)
    add("l.at >= %s", filters.since)
    add("l.at < %s", filters.until)
    add("l.id < %s", before_id)
    query = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY l.id DESC LIMIT %s"
    with conn.cursor(row_factory=class_row(AuditEntry)) as cur:
        return cur.execute(query, (*params, limit)).fetchall()  # type: ignore[arg-type]


def verify(conn: psycopg.Connection, tenant: str | None = None) -> chain.VerifyReport:
    """Recompute every chain (or ``tenant``'s alone) in Python and name the first broken link of each.

    Run as the database owner (it reads ``ft_audit.chain_heads``, which the services cannot): in its own
    transaction, in platform scope, so row-level security hides nothing from an owner that is not a superuser.
    """
    report = chain.VerifyReport()
    with conn.transaction():
        scope.platform_scope(conn)
        heads = {h.chain: h for h in _heads(conn, tenant)}
        chain_key = "coalesce(tenant_id, '')"
        condition, params = ("WHERE tenant_id = %s", (tenant,)) if tenant is not None else ("", ())
        with conn.cursor(name="audit_verify", row_factory=class_row(chain.ChainRow)) as rows:
            rows.itersize = 2000
            rows.execute(f"SELECT {chain.COLUMNS} FROM ft.audit_log {condition} ORDER BY {chain_key}, id",
                         params)  # type: ignore[arg-type]
            for key, entries in itertools.groupby(rows, key=lambda r: r.tenant_id or ""):
                report.chains.append(chain.walk(key, heads.pop(key, None), entries))
        for key, head in sorted(heads.items()):  # chains whose every kept entry is gone (or never had one)
            report.chains.append(chain.walk(key, head, []))
    report.chains.sort(key=lambda c: c.chain)
    return report


def _heads(conn: psycopg.Connection, tenant: str | None) -> list[chain.Head]:
    condition, params = ("WHERE chain = %s", (tenant,)) if tenant is not None else ("", ())
    with conn.cursor(row_factory=class_row(chain.Head)) as cur:
        return cur.execute(f"SELECT chain, last_id, last_hash, entries, base_id, base_hash, archived"
                           f" FROM ft_audit.chain_heads {condition}", params).fetchall()  # type: ignore[arg-type]


def _ip_or_none(source: str | None) -> str | None:
    if source is None:
        return None
    try:
        return str(ipaddress.ip_address(source))
    except ValueError:
        return None
