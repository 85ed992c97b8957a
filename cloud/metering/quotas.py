"""Soft and hard limits: found crossed, recorded once, notified; API callers of a tenant over a hard limit refused.

:func:`evaluate` compares every tenant's usage of a month with its plan (set-based: a few queries
whatever the number of tenants).  A limit found crossed is recorded once per tenant, month, meter and
level in ``ft.usage_warnings`` (the usage API lists them) and, the first time, notified to the tenant's
webhooks (cloud.fleet.webhooks delivers them, with its retries) as ``usage.soft_limit`` /
``usage.hard_limit``.  The API's meter runs it at every flush (cloud.metering.api_calls).

What a hard limit does depends on the meter:

* **API meters** (api_calls, data_exported_bytes): the tenant's API calls are refused with 402 and a
  message naming the meter and the limit, except the usage routes (a tenant must be able to see why).
* **Ingest meters** (messages, bytes, readings): never refused.  Readings over a hard quota are stored
  like any other and the part beyond the limit is reported as ``over_hard_limit`` for billing, not
  dead-lettered: farm data that a credit assessment will rest on must not be lost or delayed over a
  billing matter, and a gateway whose batches were refused would re-send them (its outbox keeps what is
  not receipted) until its disk fills.  The hard limit is a billing flag and a warning to the tenant.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import psycopg
from psycopg.types.json import Jsonb

from cloud.metering.meters import API_METERS, current_month, month_text
from cloud.metering.usage import UsageReport, reports


@dataclass(frozen=True)
class Crossing:
    tenant_id: str
    meter: str
    level: str  # soft | hard
    limit: int
    quantity: int


@dataclass(frozen=True)
class Evaluation:
    found: list[Crossing]  # newly recorded this time
    blocked: dict[str, str]  # tenant -> why its API calls are refused


def crossings(report: UsageReport) -> list[Crossing]:
    out = []
    for m in report.meters:
        for level, limit in (("soft", m.soft_limit), ("hard", m.hard_limit)):
            if limit is not None and m.quantity >= limit:
                out.append(Crossing(report.tenant_id, m.meter, level, limit, m.quantity))
    return out


def refusal(report: UsageReport) -> str | None:
    """Why the tenant's API calls are refused this month, or None."""
    for m in report.meters:
        if m.meter in API_METERS and m.hard_limit is not None and m.quantity >= m.hard_limit:
            return (f"the monthly quota of plan {report.plan_id!r} is used up: {m.meter} {m.quantity:,} of a hard "
                    f"limit of {m.hard_limit:,} {m.unit} in {report.month}; calls are refused until the plan "
                    f"changes or the month ends (the usage routes still answer)")
    return None


def evaluate(conn: psycopg.Connection, month: date | None = None) -> Evaluation:
    """Record and notify limits newly crossed in ``month`` (default: this one); the tenants to refuse.

    Runs in the connection's scope: platform scope for every tenant."""
    month = month or current_month()
    found: list[Crossing] = []
    blocked: dict[str, str] = {}
    for rep in reports(conn, month):
        if rep.plan_id is None:
            continue
        why = refusal(rep)
        if why is not None:
            blocked[rep.tenant_id] = why
        for crossing in crossings(rep):
            if _record(conn, month, crossing):
                found.append(crossing)
                _notify(conn, month, crossing)
    return Evaluation(found, blocked)


def _record(conn: psycopg.Connection, month: date, c: Crossing) -> bool:
    row = conn.execute(
        "INSERT INTO ft.usage_warnings (tenant_id, month, meter, level, limit_value, quantity)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
        (c.tenant_id, month, c.meter, c.level, c.limit, c.quantity)).fetchone()
    return row is not None


def _notify(conn: psycopg.Connection, month: date, c: Crossing) -> None:
    """A pending webhook delivery per enabled webhook of the tenant (the fleet's delivery loop sends it)."""
    body = {"event": f"usage.{c.level}_limit", "tenant": c.tenant_id, "month": month_text(month),
            "usage": {"meter": c.meter, "level": c.level, "limit": c.limit, "quantity": c.quantity}}
    conn.execute("INSERT INTO ft.webhook_deliveries (tenant_id, webhook_id, event, body)"
                 " SELECT tenant_id, id, %s, %s FROM ft.webhooks WHERE tenant_id = %s AND enabled",
                 (body["event"], Jsonb(body), c.tenant_id))
