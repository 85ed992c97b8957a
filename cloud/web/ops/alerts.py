"""The ops console's alerts: the list with filters (state, rule, subject), acknowledge and resolve with a note,
and silences (a maintenance window: create, list, end early).  Device and gateway pages show their own
alerts with the same forms (``ops/macros.html`` ``alert_table``), which come back to the page they were
sent from.

Reads filter in the database; changes go through cloud.fleet (:mod:`cloud.web.ops.changes` for resolving)
and are audited with the note written on the form (:mod:`cloud.web.ops.actions`); the notes are read back
from the audit log and shown under each alert.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from psycopg.rows import class_row
from pydantic import ValidationError

from cloud.fleet import alerts as fleet_alerts
from cloud.fleet import rules
from cloud.store import registry
from cloud.web import session
from cloud.web.i18n import TIME_ZONE
from cloud.web.ops import actions, changes
from cloud.web.session import OpsUser
from cloud.web.templates import render, translator

router = APIRouter()
StateFilter = Literal["active", "open", "acknowledged", "resolved", "all"]
LIMIT = 200

_ALERTS = ("SELECT a.id, a.tenant_id, a.rule_id, r.name AS rule_name, a.subject_kind, a.subject_id, a.state,"
           " a.severity, a.message, a.value, a.silenced, a.opened_at, a.last_seen_at, a.acknowledged_at,"
           " a.acknowledged_by, a.resolved_at FROM ft.alerts a JOIN ft.alert_rules r ON r.id = a.rule_id"
           " WHERE a.tenant_id = %(t)s AND (%(rule)s::bigint IS NULL OR a.rule_id = %(rule)s)"
           " AND (%(subject)s::text IS NULL OR a.subject_id = %(subject)s)"
           " AND CASE %(state)s WHEN 'all' THEN true WHEN 'active' THEN a.state <> 'resolved'"
           " ELSE a.state = %(state)s END ORDER BY a.opened_at DESC, a.id DESC LIMIT %(limit)s")


@dataclass(frozen=True)
class Note:
    at: datetime
    action: str
    who: str
    note: str


def find_alerts(conn: psycopg.Connection, tenant: str, state: StateFilter = "active", rule: int | None = None,
                subject: str | None = None, limit: int = LIMIT) -> list[fleet_alerts.Alert]:
    with conn.cursor(row_factory=class_row(fleet_alerts.Alert)) as cur:
        return cur.execute(_ALERTS, {"t": tenant, "rule": rule, "subject": subject, "state": state,  # type: ignore[arg-type]
                                     "limit": limit}).fetchall()


def notes(conn: psycopg.Connection, tenant: str, alerts: Sequence[fleet_alerts.Alert]) -> dict[int, list[Note]]:
    """Acknowledgements and resolutions of ``alerts`` with their notes, from the audit log, oldest first."""
    if not alerts:
        return {}
    rows = conn.execute(
        "SELECT l.target_id, l.at, l.action, coalesce(nullif(u.display_name, ''), u.login, l.actor_id),"
        " l.detail->>'note'"
        " FROM ft.audit_log l LEFT JOIN ft.users u ON u.id = l.actor_id AND l.actor_kind = 'user'"
        " WHERE l.tenant_id = %s AND l.target_type = 'alert' AND l.target_id = ANY(%s) ORDER BY l.id",
        (tenant, [str(a.id) for a in alerts])).fetchall()
    out: dict[int, list[Note]] = defaultdict(list)
    for target, at, action, who, note in rows:
        out[int(target)].append(Note(at, action, who or "", note or ""))
    return out


@router.get("/alerts")
def alerts_page(request: Request, user: OpsUser, state: StateFilter = "active",
                rule: Annotated[int | None, Query(ge=1)] = None,
                subject: Annotated[str | None, Query(max_length=64)] = None,
                notice: Annotated[str | None, Query(max_length=40)] = None) -> Response:
    return _page(request, user, state, rule, subject or None, notice)


def _page(request: Request, user: session.PageUser, state: StateFilter, rule: int | None, subject: str | None,
          notice: str | None, *, error: str | None = None, values: dict[str, str] | None = None,
          status_code: int = 200) -> Response:
    now = datetime.now(UTC)
    with session.tenant_conn(request, user) as conn:
        found = find_alerts(conn, user.tenant_id, state, rule, subject)
        rule_list = rules.list_rules(conn, user.tenant_id)
        silences = fleet_alerts.list_silences(conn, user.tenant_id, current_at=now)
        alert_notes = notes(conn, user.tenant_id, found)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return render(request, "ops/alerts.html", {
        "user": user, "alerts": found, "rules": rule_list, "silences": silences, "notes": alert_notes,
        "filters": {"state": state, "rule": rule, "subject": subject or ""}, "notice": notice, "here": here,
        "error": error, "values": values or {}, "can_write": user.principal.can(actions.WRITE)},
        status_code=status_code)


@router.post("/alerts/{alert_id}/acknowledge")
def acknowledge(request: Request, alert_id: int, user: OpsUser, csrf_token: actions.Token, note: actions.Note = "",
                next: actions.Next = "") -> Response:
    refusal = actions.check(request, user, csrf_token)
    if refusal is not None:
        return refusal
    try:
        with session.tenant_conn(request, user) as conn:
            fleet_alerts.acknowledge(conn, user.tenant_id, alert_id, actions.by(user))
            actions.audit(conn, user, "alert.acknowledged", "alert", str(alert_id), note)
    except registry.NotFound:
        return actions.back(next, "/ops/alerts", "not_found")
    except registry.Conflict:
        return actions.back(next, "/ops/alerts", "already_resolved")
    return actions.back(next, "/ops/alerts", "acknowledged")


@router.post("/alerts/{alert_id}/resolve")
def resolve(request: Request, alert_id: int, user: OpsUser, csrf_token: actions.Token, note: actions.Note = "",
            next: actions.Next = "") -> Response:
    refusal = actions.check(request, user, csrf_token)
    if refusal is not None:
        return refusal
    try:
        with session.tenant_conn(request, user) as conn:
            changes.resolve_alert(conn, user.tenant_id, alert_id)
            actions.audit(conn, user, "alert.resolved", "alert", str(alert_id), note)
    except registry.NotFound:
        return actions.back(next, "/ops/alerts", "not_found")
    except registry.Conflict:
        return actions.back(next, "/ops/alerts", "already_resolved")
    return actions.back(next, "/ops/alerts", "resolved")


# -- silences -------------------------------------------------------------------------------------------------


def local_time(text: str) -> datetime:
    """A ``datetime-local`` field (the service points' time zone) as an aware time; ValueError if malformed."""
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=TIME_ZONE) if value.tzinfo is None else value


@router.post("/silences")
def create_silence(request: Request, user: OpsUser, csrf_token: actions.Token,
                   starts_at: Annotated[str, Form(max_length=40)], ends_at: Annotated[str, Form(max_length=40)],
                   rule_id: Annotated[str, Form(max_length=20)] = "",
                   subject_kind: Annotated[str, Form(max_length=20)] = "",
                   subject_id: Annotated[str, Form(max_length=64)] = "", reason: actions.Note = "") -> Response:
    refusal = actions.check(request, user, csrf_token)
    if refusal is not None:
        return refusal
    _, _n = translator(request)
    values = {"starts_at": starts_at, "ends_at": ends_at, "rule_id": rule_id, "subject_kind": subject_kind,
              "subject_id": subject_id, "reason": reason}
    try:
        body = fleet_alerts.SilenceCreate(
            rule_id=int(rule_id) if rule_id else None, subject_kind=subject_kind or None,  # type: ignore[arg-type]
            subject_id=subject_id.strip() or None, starts_at=local_time(starts_at), ends_at=local_time(ends_at),
            reason=reason.strip())
    except ValidationError as exc:
        return _page(request, user, "active", None, None, None, values=values, status_code=422,
                     error=_("The silence was not created: %(why)s") % {"why": "; ".join(
                         str(e["msg"]) for e in exc.errors())})
    except ValueError:
        return _page(request, user, "active", None, None, None, values=values, status_code=422,
                     error=_("The silence was not created: give its start and end as date and time."))
    try:
        with session.tenant_conn(request, user) as conn:
            if body.subject_id is not None:
                (registry.get_gateway if body.subject_kind == "gateway" else registry.get_device)(
                    conn, user.tenant_id, body.subject_id)
            silence = fleet_alerts.create_silence(conn, user.tenant_id, body, actions.by(user))
            actions.audit(conn, user, "silence.created", "silence", str(silence.id), body.reason,
                          window=[body.starts_at.isoformat(), body.ends_at.isoformat()], rule_id=body.rule_id,
                          subject=f"{body.subject_kind}:{body.subject_id}" if body.subject_id else None)
    except registry.NotFound:
        return _page(request, user, "active", None, None, None, values=values, status_code=422,
                     error=_("The silence was not created: there is no such rule, gateway or device."))
    return actions.back("/ops/alerts", "/ops/alerts", "silence_created")


@router.post("/silences/{silence_id}/end")
def end_silence(request: Request, silence_id: int, user: OpsUser, csrf_token: actions.Token,
                note: actions.Note = "") -> Response:
    refusal = actions.check(request, user, csrf_token)
    if refusal is not None:
        return refusal
    try:
        with session.tenant_conn(request, user) as conn:
            fleet_alerts.end_silence(conn, user.tenant_id, silence_id)
            actions.audit(conn, user, "silence.ended", "silence", str(silence_id), note)
    except registry.NotFound:
        return actions.back("/ops/alerts", "/ops/alerts", "not_found")
    return actions.back("/ops/alerts", "/ops/alerts", "silence_ended")
