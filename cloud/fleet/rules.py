"""Alert rules of a tenant: what each kind of rule needs, checked once here, and their SQL.

Six kinds (migration 045 says what each measures).  A rule names the subjects it watches with
``subject_kind``/``subject_id`` (both empty: every subject of the kinds it applies to); the fields a
kind needs are required, the ones it ignores must be left out, so a rule never looks like it checks
something it does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import psycopg
from psycopg import errors
from psycopg.rows import class_row
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from cloud.store.db import ROW_SCHEMA
from cloud.store.registry import Conflict, NotFound

RuleKind = Literal["threshold", "no_data", "rate_of_change", "battery_low", "backlog_growing", "device_offline"]
Op = Literal[">", "<", ">=", "<="]
Ident = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]

#: per kind: fields required, fields allowed, subject kinds it applies to
_NEEDS: dict[str, tuple[set[str], set[str], set[str]]] = {
    "threshold": ({"metric", "op", "threshold"}, {"metric", "op", "threshold"}, {"device"}),
    "no_data": (set(), {"metric"}, {"device"}),
    "rate_of_change": ({"metric", "threshold"}, {"metric", "threshold"}, {"device"}),
    "battery_low": ({"threshold"}, {"threshold"}, {"device"}),
    "backlog_growing": ({"threshold"}, {"threshold"}, {"gateway"}),
    "device_offline": (set(), set(), {"gateway", "device"}),
}
_OPTIONAL = ("metric", "op", "threshold")


class RuleBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    kind: RuleKind
    subject_kind: Literal["gateway", "device"] | None = None
    subject_id: Ident | None = None
    metric: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")] | None = None
    op: Op | None = None
    threshold: float | None = Field(default=None, allow_inf_nan=False)
    window_s: int = Field(default=3600, ge=1, le=31 * 86400, description="how far back the rule looks, in seconds")
    severity: Literal["info", "warning", "critical"] = "warning"
    enabled: bool = True

    @model_validator(mode="after")
    def _fits_kind(self) -> RuleBase:
        required, allowed, subjects = _NEEDS[self.kind]
        given = {name for name in _OPTIONAL if getattr(self, name) is not None}
        missing = sorted(required - given)
        if missing:
            raise ValueError(f"a {self.kind} rule needs {', '.join(missing)}")
        extra = sorted(given - allowed)
        if extra:
            raise ValueError(f"a {self.kind} rule does not use {', '.join(extra)}; leave them out")
        if self.subject_id is not None and self.subject_kind is None:
            raise ValueError("subject_id needs subject_kind (gateway or device)")
        if self.subject_kind is not None and self.subject_kind not in subjects:
            raise ValueError(f"a {self.kind} rule watches {' or '.join(sorted(subjects))}s, "
                             f"not {self.subject_kind}s")
        return self


class RuleCreate(RuleBase):
    """A new alert rule."""


class RuleUpdate(BaseModel):
    """Switch a rule on or off, or change its severity (change anything else with a new rule)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool | None = None
    severity: Literal["info", "warning", "critical"] | None = None


@dataclass(frozen=True)
class Rule:
    """An alert rule as stored."""

    __pydantic_config__ = ROW_SCHEMA
    id: int
    tenant_id: str
    name: str
    kind: str
    subject_kind: str | None
    subject_id: str | None
    metric: str | None
    op: str | None
    threshold: float | None
    window_s: int
    severity: str
    enabled: bool
    created_at: datetime
    created_by: str

    def applies_to(self, kind: str) -> bool:
        return (self.subject_kind or kind) == kind and kind in _NEEDS[self.kind][2]


_RULE = ("SELECT id, tenant_id, name, kind, subject_kind, subject_id, metric, op, threshold, window_s, severity,"
         " enabled, created_at, created_by FROM ft.alert_rules")


def create_rule(conn: psycopg.Connection, tenant: str, body: RuleCreate, created_by: str) -> Rule:
    values = body.model_dump()
    try:
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO ft.alert_rules (tenant_id, name, kind, subject_kind, subject_id, metric, op, threshold,"
                " window_s, severity, enabled, created_by) VALUES (%(t)s, %(name)s, %(kind)s, %(subject_kind)s,"
                " %(subject_id)s, %(metric)s, %(op)s, %(threshold)s, %(window_s)s, %(severity)s, %(enabled)s, %(by)s)"
                " RETURNING id", values | {"t": tenant, "by": created_by}).fetchone()
    except errors.UniqueViolation:
        raise Conflict(f"tenant {tenant!r} already has an alert rule named {body.name!r}") from None
    assert row is not None
    return get_rule(conn, tenant, row[0])


def get_rule(conn: psycopg.Connection, tenant: str, rule_id: int) -> Rule:
    rows = _all(conn, Rule, _RULE + " WHERE tenant_id = %s AND id = %s", (tenant, rule_id))
    if not rows:
        raise NotFound(f"alert rule {rule_id} not found in tenant {tenant!r}")
    return rows[0]


def list_rules(conn: psycopg.Connection, tenant: str | None, *, enabled_only: bool = False) -> list[Rule]:
    """A tenant's rules (``tenant`` None: every rule the connection's scope shows, for the evaluator)."""
    query = _RULE + " WHERE (%s::text IS NULL OR tenant_id = %s)" + (" AND enabled" if enabled_only else "")
    return _all(conn, Rule, query + " ORDER BY tenant_id, id", (tenant, tenant))


def update_rule(conn: psycopg.Connection, tenant: str, rule_id: int, body: RuleUpdate) -> Rule:
    get_rule(conn, tenant, rule_id)
    changes = body.model_dump(exclude_none=True)
    if changes:
        sets = ", ".join(f"{name} = %({name})s" for name in changes)
        conn.execute(f"UPDATE ft.alert_rules SET {sets} WHERE tenant_id = %(t)s AND id = %(id)s",
                     changes | {"t": tenant, "id": rule_id})
    return get_rule(conn, tenant, rule_id)


def delete_rule(conn: psycopg.Connection, tenant: str, rule_id: int) -> None:
    """Remove a rule, its alerts and silences (cascade)."""
    get_rule(conn, tenant, rule_id)
    conn.execute("DELETE FROM ft.alert_rules WHERE tenant_id = %s AND id = %s", (tenant, rule_id))


def _all(conn: psycopg.Connection, row_type: type[Any], query: str, params: Sequence[object]) -> list[Any]:
    with conn.cursor(row_factory=class_row(row_type)) as cur:
        return cur.execute(query, params).fetchall()  # type: ignore[arg-type]
