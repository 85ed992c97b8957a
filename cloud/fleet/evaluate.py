"""What each kind of alert rule finds firing now: one query per rule, over readings and fleet state.

Every function answers ``{(subject_kind, subject_id): Firing}`` for one rule at time ``now`` (passed in,
so that a simulated fleet can be evaluated at any instant).  Readings come from ``ft.readings`` (under
row-level security like everything else), fleet state and history from cloud.fleet.presence's tables.
The subject filter of the rule (``subject_kind``/``subject_id``) narrows every query.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import psycopg

from cloud.fleet import webhooks
from cloud.fleet.alerts import Event, Firing, Subject, reconcile
from cloud.fleet.rules import Rule, list_rules

Found = dict[Subject, Firing]

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b}


def _params(rule: Rule, now: datetime) -> dict[str, object]:
    return {"t": rule.tenant_id, "sid": rule.subject_id, "metric": rule.metric, "w": rule.window_s, "now": now,
            "x": rule.threshold}


_DEVICE_FILTER = " AND (%(sid)s::text IS NULL OR d.id = %(sid)s)"
_SINCE = "%(now)s::timestamptz - %(w)s * interval '1 second'"


def threshold(conn: psycopg.Connection, rule: Rule, now: datetime) -> Found:
    """The latest reading of the metric within the window compared with the threshold."""
    assert rule.op is not None and rule.threshold is not None
    rows = conn.execute(
        "SELECT DISTINCT ON (r.device_id) r.device_id, r.value FROM ft.readings r"
        " JOIN ft.metrics m ON m.id = r.metric_id JOIN ft.devices d ON d.id = r.device_id"
        " WHERE r.tenant_id = %(t)s AND m.name = %(metric)s AND r.value IS NOT NULL"
        " AND r.ts > " + _SINCE + " AND r.ts <= %(now)s" + _DEVICE_FILTER +
        " ORDER BY r.device_id, r.ts DESC", _params(rule, now)).fetchall()
    compare = _OPS[rule.op]
    return {("device", dev): Firing(value, f"{rule.metric} = {value:g} {rule.op} {rule.threshold:g}")
            for dev, value in rows if compare(value, rule.threshold)}


def no_data(conn: psycopg.Connection, rule: Rule, now: datetime) -> Found:
    """Devices (older than the window) with no reading (of the metric, if named) within the window."""
    rows = conn.execute(
        "SELECT d.id FROM ft.devices d WHERE d.tenant_id = %(t)s AND d.created_at <= " + _SINCE + _DEVICE_FILTER +
        " AND NOT EXISTS (SELECT 1 FROM ft.readings r WHERE r.device_id = d.id AND r.ts > " + _SINCE +
        " AND r.ts <= %(now)s AND (%(metric)s::text IS NULL OR r.metric_id IN"
        "   (SELECT m.id FROM ft.metrics m WHERE m.name = %(metric)s)))", _params(rule, now)).fetchall()
    what = rule.metric or "readings"
    return {("device", r[0]): Firing(None, f"no {what} for {rule.window_s} s") for r in rows}


def rate_of_change(conn: psycopg.Connection, rule: Rule, now: datetime) -> Found:
    """|last - first| / hours between them, over the metric's readings in the window, above the threshold."""
    assert rule.threshold is not None
    rows = conn.execute(
        "SELECT device_id, (last_v - first_v) / (extract(epoch FROM last_ts - first_ts) / 3600) FROM ("
        " SELECT r.device_id, (array_agg(r.value ORDER BY r.ts))[1] AS first_v,"
        " (array_agg(r.value ORDER BY r.ts DESC))[1] AS last_v, min(r.ts) AS first_ts, max(r.ts) AS last_ts"
        " FROM ft.readings r JOIN ft.metrics m ON m.id = r.metric_id JOIN ft.devices d ON d.id = r.device_id"
        " WHERE r.tenant_id = %(t)s AND m.name = %(metric)s AND r.value IS NOT NULL"
        " AND r.ts > " + _SINCE + " AND r.ts <= %(now)s" + _DEVICE_FILTER +
        " GROUP BY r.device_id) w WHERE last_ts > first_ts", _params(rule, now)).fetchall()
    return {("device", dev): Firing(rate, f"{rule.metric} changes {rate:+.3g}/h (limit {rule.threshold:g}/h)")
            for dev, rate in rows if abs(rate) > rule.threshold}


def battery_low(conn: psycopg.Connection, rule: Rule, now: datetime) -> Found:
    """Devices whose last reported battery is below the threshold (in the unit the node reports)."""
    rows = conn.execute(
        "SELECT subject_id, battery, coalesce(battery_unit, '') FROM ft.fleet_state WHERE tenant_id = %(t)s"
        " AND subject_kind = 'device' AND battery < %(x)s AND (%(sid)s::text IS NULL OR subject_id = %(sid)s)",
        _params(rule, now)).fetchall()
    return {("device", dev): Firing(value, f"battery {value:g} {unit} below {rule.threshold:g}".replace("  ", " "))
            for dev, value, unit in rows}


def backlog_growing(conn: psycopg.Connection, rule: Rule, now: datetime) -> Found:
    """Gateways whose outbox depth now exceeds its smallest depth within the window by more than the threshold."""
    rows = conn.execute(
        "SELECT s.subject_id, s.outbox_depth - min(h.outbox_depth) FROM ft.fleet_state s"
        " JOIN ft.fleet_history h ON h.subject_kind = 'gateway' AND h.subject_id = s.subject_id"
        "  AND h.bucket >= " + _SINCE +
        " WHERE s.tenant_id = %(t)s AND s.subject_kind = 'gateway' AND s.outbox_depth IS NOT NULL"
        " AND h.outbox_depth IS NOT NULL AND (%(sid)s::text IS NULL OR s.subject_id = %(sid)s)"
        " GROUP BY s.subject_id, s.outbox_depth", _params(rule, now)).fetchall()
    return {("gateway", gw): Firing(float(growth), f"outbox grew by {growth} batches within {rule.window_s} s")
            for gw, growth in rows if growth > rule.threshold}  # type: ignore[operator]


def device_offline(conn: psycopg.Connection, rule: Rule, now: datetime) -> Found:
    """Gateways or devices offline (last will, or silent past the timeout) for at least the window."""
    rows = conn.execute(
        "SELECT subject_kind, subject_id, presence FROM ft.fleet_state WHERE tenant_id = %(t)s AND NOT online"
        " AND presence_at <= " + _SINCE + " AND (%(kind)s::text IS NULL OR subject_kind = %(kind)s)"
        " AND (%(sid)s::text IS NULL OR subject_id = %(sid)s)",
        _params(rule, now) | {"kind": rule.subject_kind}).fetchall()
    return {(kind, sid): Firing(None, f"{kind} offline ({presence}) for more than {rule.window_s} s")
            for kind, sid, presence in rows}


EVALUATORS: dict[str, Callable[[psycopg.Connection, Rule, datetime], Found]] = {
    "threshold": threshold, "no_data": no_data, "rate_of_change": rate_of_change, "battery_low": battery_low,
    "backlog_growing": backlog_growing, "device_offline": device_offline}


def evaluate(conn: psycopg.Connection, rule: Rule, now: datetime) -> Found:
    return EVALUATORS[rule.kind](conn, rule, now)


def evaluate_rules(conn: psycopg.Connection, now: datetime, tenant: str | None = None) -> list[Event]:
    """Evaluate every enabled rule (of ``tenant``, or every tenant the scope shows) and bring the alerts in line;
    each rule in its own transaction, its notifications queued in the same one.  The events, for the record."""
    events: list[Event] = []
    with conn.transaction():
        rules = list_rules(conn, tenant, enabled_only=True)
    for rule in rules:
        with conn.transaction():
            found = evaluate(conn, rule, now)
            changed = reconcile(conn, rule, found, now)
            webhooks.enqueue(conn, changed)
        events += changed
    return events
