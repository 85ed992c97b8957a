"""Alerts and silences: open once per rule and subject, acknowledge, resolve when the condition clears.

:func:`reconcile` is the one writer of alert states from evaluations: given what a rule finds firing
now, it opens an alert for each new subject (the partial unique index of migration 045 makes a second
open alert for the same rule and subject impossible even with two evaluators), refreshes the ones
still firing, and resolves the ones that stopped, acknowledged or not.  An alert opened while a
silence matches it is recorded as ``silenced`` and produces no notification, neither at opening nor
at resolution; everything else yields an :class:`Event` for the webhooks (cloud.fleet.webhooks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import psycopg
from psycopg.rows import class_row
from pydantic import AwareDatetime, BaseModel, ConfigDict, StringConstraints, model_validator

from cloud.fleet.rules import Rule
from cloud.store.db import ROW_SCHEMA
from cloud.store.registry import Conflict, NotFound

Subject = tuple[str, str]  # (subject_kind, subject_id)
AlertState = Literal["open", "acknowledged", "resolved"]


@dataclass(frozen=True)
class Firing:
    """A subject for which a rule's condition holds now, with the value that made it so."""

    value: float | None
    message: str


@dataclass(frozen=True)
class Alert:
    """An alert: one rule's condition on one subject, from when it was found until it cleared."""

    __pydantic_config__ = ROW_SCHEMA
    id: int
    tenant_id: str
    rule_id: int
    rule_name: str
    subject_kind: str
    subject_id: str
    state: str
    """open, acknowledged or resolved"""
    severity: str
    message: str
    value: float | None
    silenced: bool
    """opened inside a silence: recorded, never notified"""
    opened_at: datetime
    last_seen_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None


@dataclass(frozen=True)
class Event:
    """Something to notify: an alert opened or resolved (never for silenced alerts)."""

    name: Literal["alert.opened", "alert.resolved"]
    alert: Alert


_ALERT = ("SELECT a.id, a.tenant_id, a.rule_id, r.name AS rule_name, a.subject_kind, a.subject_id, a.state,"
          " a.severity, a.message, a.value, a.silenced, a.opened_at, a.last_seen_at, a.acknowledged_at,"
          " a.acknowledged_by, a.resolved_at FROM ft.alerts a JOIN ft.alert_rules r ON r.id = a.rule_id")


#: whether a silence of the tenant covers (rule, subject) at a time: null fields of a silence match anything
_SILENCED = ("EXISTS (SELECT 1 FROM ft.silences s WHERE s.tenant_id = %(t)s AND s.starts_at <= %(now)s"
             " AND s.ends_at > %(now)s AND (s.rule_id IS NULL OR s.rule_id = %(rule)s)"
             " AND (s.subject_kind IS NULL OR s.subject_kind = %(kind)s)"
             " AND (s.subject_id IS NULL OR s.subject_id = %(sid)s))")


_OPEN = (
    "INSERT INTO ft.alerts AS a (tenant_id, rule_id, subject_kind, subject_id, severity, message, value, silenced,"
    " opened_at, last_seen_at) VALUES (%(t)s, %(rule)s, %(kind)s, %(sid)s, %(sev)s, %(msg)s, %(value)s, "
    + _SILENCED + ", %(now)s, %(now)s)"
    " ON CONFLICT (rule_id, subject_kind, subject_id) WHERE state <> 'resolved' DO UPDATE SET"
    " last_seen_at = excluded.last_seen_at, value = excluded.value, message = excluded.message"
    " RETURNING id, (xmax = 0) AS inserted, silenced"
)


def reconcile(conn: psycopg.Connection, rule: Rule, firing: Mapping[Subject, Firing], now: datetime) -> list[Event]:
    """Bring ``rule``'s alerts in line with what fires now; the events to notify."""
    events: list[Event] = []
    for (kind, sid), fire in sorted(firing.items()):
        row = conn.execute(_OPEN, {"t": rule.tenant_id, "rule": rule.id, "kind": kind, "sid": sid,
                                   "sev": rule.severity, "msg": fire.message, "value": fire.value, "now": now}
        ).fetchone()
        assert row is not None
        alert_id, inserted, silenced = row
        if inserted and not silenced:
            events.append(Event("alert.opened", get_alert(conn, rule.tenant_id, alert_id)))
    active = conn.execute("SELECT id, subject_kind, subject_id, silenced FROM ft.alerts WHERE rule_id = %s"
                          " AND state <> 'resolved'", (rule.id,)).fetchall()
    for alert_id, kind, sid, silenced in active:
        if (kind, sid) in firing:
            continue
        conn.execute("UPDATE ft.alerts SET state = 'resolved', resolved_at = %s WHERE id = %s", (now, alert_id))
        if not silenced:
            events.append(Event("alert.resolved", get_alert(conn, rule.tenant_id, alert_id)))
    return events


def get_alert(conn: psycopg.Connection, tenant: str, alert_id: int) -> Alert:
    rows = _all(conn, Alert, _ALERT + " WHERE a.tenant_id = %s AND a.id = %s", (tenant, alert_id))
    if not rows:
        raise NotFound(f"alert {alert_id} not found in tenant {tenant!r}")
    return rows[0]


def list_alerts(conn: psycopg.Connection, tenant: str, *, state: AlertState | None = None,
                active_only: bool = False, limit: int = 200) -> list[Alert]:
    query = _ALERT + " WHERE a.tenant_id = %s"
    params: list[object] = [tenant]
    if state is not None:
        query, params = query + " AND a.state = %s", [*params, state]
    if active_only:
        query += " AND a.state <> 'resolved'"
    return _all(conn, Alert, query + " ORDER BY a.opened_at DESC, a.id DESC LIMIT %s", [*params, limit])


def acknowledge(conn: psycopg.Connection, tenant: str, alert_id: int, by: str) -> Alert:
    """An open alert is acknowledged (someone is on it); it still resolves when the condition clears."""
    alert = get_alert(conn, tenant, alert_id)
    if alert.state == "resolved":
        raise Conflict(f"alert {alert_id} is resolved already")
    if alert.state == "open":
        conn.execute("UPDATE ft.alerts SET state = 'acknowledged', acknowledged_at = now(), acknowledged_by = %s"
                     " WHERE id = %s AND state = 'open'", (by, alert_id))
    return get_alert(conn, tenant, alert_id)


# -- silences -------------------------------------------------------------------------------------------


class SilenceCreate(BaseModel):
    """A maintenance window: alerts of the rule and subject (empty: any) opened in it are not notified."""

    model_config = ConfigDict(extra="forbid")
    rule_id: int | None = None
    subject_kind: Literal["gateway", "device"] | None = None
    subject_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")] | None = None
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    reason: Annotated[str, StringConstraints(max_length=500)] = ""

    @model_validator(mode="after")
    def _window(self) -> SilenceCreate:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.subject_id is not None and self.subject_kind is None:
            raise ValueError("subject_id needs subject_kind (gateway or device)")
        return self


@dataclass(frozen=True)
class Silence:
    __pydantic_config__ = ROW_SCHEMA
    id: int
    tenant_id: str
    rule_id: int | None
    subject_kind: str | None
    subject_id: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_at: datetime
    created_by: str


_SILENCE = ("SELECT id, tenant_id, rule_id, subject_kind, subject_id, starts_at, ends_at, reason, created_at,"
            " created_by FROM ft.silences")


def create_silence(conn: psycopg.Connection, tenant: str, body: SilenceCreate, created_by: str) -> Silence:
    if body.rule_id is not None:
        from cloud.fleet.rules import get_rule

        get_rule(conn, tenant, body.rule_id)
    row = conn.execute(
        "INSERT INTO ft.silences (tenant_id, rule_id, subject_kind, subject_id, starts_at, ends_at, reason,"
        " created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (tenant, body.rule_id, body.subject_kind, body.subject_id, body.starts_at, body.ends_at, body.reason,
         created_by)).fetchone()
    assert row is not None
    return _all(conn, Silence, _SILENCE + " WHERE id = %s", (row[0],))[0]


def list_silences(conn: psycopg.Connection, tenant: str, *, current_at: datetime | None = None) -> list[Silence]:
    """The tenant's silences (``current_at``: only those not over by then)."""
    return _all(conn, Silence, _SILENCE + " WHERE tenant_id = %s AND (%s::timestamptz IS NULL OR ends_at > %s)"
                " ORDER BY starts_at DESC", (tenant, current_at, current_at))


def end_silence(conn: psycopg.Connection, tenant: str, silence_id: int) -> None:
    """End a silence now (kept, for the record)."""
    row = conn.execute("UPDATE ft.silences SET ends_at = greatest(starts_at + interval '1 microsecond', now())"
                       " WHERE tenant_id = %s AND id = %s RETURNING id", (tenant, silence_id)).fetchone()
    if row is None:
        raise NotFound(f"silence {silence_id} not found in tenant {tenant!r}")


def _all(conn: psycopg.Connection, row_type: type[Any], query: str, params: Sequence[object]) -> list[Any]:
    with conn.cursor(row_factory=class_row(row_type)) as cur:
        return cur.execute(query, params).fetchall()  # type: ignore[arg-type]
