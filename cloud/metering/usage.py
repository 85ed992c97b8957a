"""The usage report of a tenant's month: each meter's quantity, its quota, the share used, the overage cost.

Read in the caller's scope (row-level security): a tenant's connection sees its own usage only; the
platform-scoped one of a platform admin sees every tenant's, for :func:`reports`.  active_devices is
computed here from ``ft.usage_devices``; every other meter is summed over its keys and shards from
``ft.usage_monthly`` (API meters keep one row per caller: the report lists them under ``by_key``; the
ingest adds to one shard per database session, so that concurrent commits never share a row).

Status of a meter, from its plan's quota: ``ok``; ``over_included`` (billed beyond the fee);
``soft_limit`` (a warning); ``hard_limit`` (API meters: calls refused; ingest meters: the data is stored
all the same and what lies beyond the hard limit is reported as ``over_hard_limit``, billed like any
overage — see cloud.metering.quotas).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Literal

import psycopg
from pydantic import BaseModel

from cloud.metering.meters import API_METERS, METERS, UNITS, Meter, month_text
from cloud.metering.plans import Plan, Quota, plan_for, plans_for_month

Status = Literal["ok", "over_included", "soft_limit", "hard_limit"]


class KeyUsage(BaseModel):
    key: str  # 'api_key:<id>' or 'user:<id>'
    quantity: int


class MeterUsage(BaseModel):
    meter: Meter
    unit: str
    quantity: int
    included: int | None  # None: no plan, or the plan does not meter it
    soft_limit: int | None
    hard_limit: int | None
    percent_used: float | None  # of what is included (None when nothing is)
    status: Status
    over_hard_limit: int  # units beyond the hard limit (ingest meters: stored all the same, flagged for billing)
    overage_cost: Decimal
    by_key: list[KeyUsage] = []


class UsageWarning(BaseModel):
    meter: str
    level: Literal["soft", "hard"]
    limit: int
    quantity: int
    found_at: datetime


class UsageReport(BaseModel):
    tenant_id: str
    month: str  # YYYY-MM
    plan_id: str | None
    plan_name: str | None
    currency: str | None
    monthly_fee: Decimal
    overage_cost: Decimal
    total_cost: Decimal
    meters: list[MeterUsage]
    warnings: list[UsageWarning]
    generated_at: datetime


def meter_usage(meter: Meter, quantity: int, quota: Quota | None, by_key: list[KeyUsage]) -> MeterUsage:
    if quota is None:
        return MeterUsage(meter=meter, unit=UNITS[meter], quantity=quantity, included=None, soft_limit=None,
                          hard_limit=None, percent_used=None, status="ok", over_hard_limit=0,
                          overage_cost=Decimal(0), by_key=by_key)
    status: Status = "ok"
    if quota.hard is not None and quantity >= quota.hard:
        status = "hard_limit"
    elif quota.soft is not None and quantity >= quota.soft:
        status = "soft_limit"
    elif quantity > quota.included:
        status = "over_included"
    return MeterUsage(
        meter=meter, unit=UNITS[meter], quantity=quantity, included=quota.included, soft_limit=quota.soft,
        hard_limit=quota.hard, percent_used=round(100 * quantity / quota.included, 2) if quota.included else None,
        status=status, over_hard_limit=max(0, quantity - quota.hard) if quota.hard is not None else 0,
        overage_cost=quota.overage_cost(quantity), by_key=by_key)


def _usage_rows(conn: psycopg.Connection, month: date, tenant: str | None
                ) -> dict[str, dict[str, dict[str, int]]]:
    """tenant -> meter -> key -> quantity (active_devices computed, under key '')."""
    where, params = ("month = %s", [month]) if tenant is None else ("month = %s AND tenant_id = %s", [month, tenant])
    out: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for t, meter, key, quantity in conn.execute(
            f"SELECT tenant_id, meter, key, sum(quantity) FROM ft.usage_monthly WHERE {where}"
            " GROUP BY tenant_id, meter, key", params):
        out[t][meter][key] = int(quantity)
    for t, devices in conn.execute(
            f"SELECT tenant_id, count(*) FROM ft.usage_devices WHERE {where} GROUP BY tenant_id", params):
        out[t]["active_devices"][""] = int(devices)
    return out


def _warnings(conn: psycopg.Connection, month: date, tenant: str | None) -> dict[str, list[UsageWarning]]:
    where, params = ("month = %s", [month]) if tenant is None else ("month = %s AND tenant_id = %s", [month, tenant])
    out: dict[str, list[UsageWarning]] = defaultdict(list)
    for t, meter, level, limit, quantity, found_at in conn.execute(
            f"SELECT tenant_id, meter, level, limit_value, quantity, found_at FROM ft.usage_warnings WHERE {where}"
            " ORDER BY found_at, meter, level", params):
        out[t].append(UsageWarning(meter=meter, level=level, limit=limit, quantity=quantity, found_at=found_at))
    return out


def build_report(tenant: str, month: date, plan: Plan | None, usage: dict[str, dict[str, int]],
                 warnings: list[UsageWarning]) -> UsageReport:
    meters = []
    for meter in METERS:
        keys = usage.get(meter, {})
        by_key = sorted((KeyUsage(key=k, quantity=q) for k, q in keys.items() if k), key=lambda u: u.key)
        quota = plan.quotas.get(meter) if plan else None
        meters.append(meter_usage(meter, sum(keys.values()), quota, by_key if meter in API_METERS else []))
    overage = sum((m.overage_cost for m in meters), Decimal(0))
    fee = plan.monthly_fee if plan else Decimal(0)
    return UsageReport(tenant_id=tenant, month=month_text(month), plan_id=plan.id if plan else None,
                       plan_name=plan.name if plan else None, currency=plan.currency if plan else None,
                       monthly_fee=fee, overage_cost=overage, total_cost=fee + overage, meters=meters,
                       warnings=warnings, generated_at=datetime.now(UTC))


class UnknownTenant(ValueError):
    """The tenant does not exist, or the connection's scope cannot see it."""


def report(conn: psycopg.Connection, tenant: str, month: date) -> UsageReport:
    """One tenant's month (any tenant the connection's scope can see; else :class:`UnknownTenant`)."""
    if conn.execute("SELECT 1 FROM ft.tenants WHERE id = %s", (tenant,)).fetchone() is None:
        raise UnknownTenant(f"tenant {tenant!r} not found")
    usage = _usage_rows(conn, month, tenant).get(tenant, {})
    return build_report(tenant, month, plan_for(conn, tenant, month), usage,
                        _warnings(conn, month, tenant).get(tenant, []))


def reports(conn: psycopg.Connection, month: date) -> list[UsageReport]:
    """Every visible tenant's month (platform scope: all of them), by tenant id."""
    usage = _usage_rows(conn, month, None)
    warnings = _warnings(conn, month, None)
    plans = plans_for_month(conn, month)
    tenants = [t for (t,) in conn.execute("SELECT id FROM ft.tenants ORDER BY id")]
    return [build_report(t, month, plans.get(t), usage.get(t, {}), warnings.get(t, [])) for t in tenants]


CSV_COLUMNS = ("tenant_id", "month", "meter", "key", "unit", "quantity", "included", "soft_limit", "hard_limit",
               "percent_used", "status", "over_hard_limit", "overage_cost", "currency")


def to_csv(reports_: list[UsageReport]) -> str:
    """One row per tenant and meter (key empty), then one per caller of the API meters; costs in the currency."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for rep in reports_:
        for m in rep.meters:
            writer.writerow([rep.tenant_id, rep.month, m.meter, "", m.unit, m.quantity, _blank(m.included),
                             _blank(m.soft_limit), _blank(m.hard_limit), _blank(m.percent_used), m.status,
                             m.over_hard_limit, m.overage_cost, rep.currency or ""])
            for k in m.by_key:
                writer.writerow([rep.tenant_id, rep.month, m.meter, k.key, m.unit, k.quantity, "", "", "", "", "", "",
                                 "", rep.currency or ""])
    return out.getvalue()


def _blank(value: object) -> object:
    return "" if value is None else value


def to_text(rep: UsageReport) -> str:
    """A report for a terminal: one line per meter, callers of the API meters indented below theirs."""
    plan = f"plan {rep.plan_id} ({rep.plan_name}), {rep.currency}" if rep.plan_id else "no plan"
    lines = [f"tenant {rep.tenant_id}, {rep.month}: {plan}",
             f"  {'meter':22} {'quantity':>16} {'included':>14} {'soft':>14} {'hard':>14} {'used':>8}  {'status':14}"
             f" {'overage':>12}"]
    for m in rep.meters:
        used = f"{m.percent_used:.1f}%" if m.percent_used is not None else "-"
        lines.append(f"  {m.meter:22} {m.quantity:>16,} {_dash(m.included):>14} {_dash(m.soft_limit):>14} "
                     f"{_dash(m.hard_limit):>14} {used:>8}  {m.status:14} {m.overage_cost:>12.2f}")
        lines += [f"    {k.key:40} {k.quantity:>16,}" for k in m.by_key]
    lines.append(f"  fee {rep.monthly_fee:.2f} + overage {rep.overage_cost:.2f} = {rep.total_cost:.2f}"
                 f" {rep.currency or ''}".rstrip())
    lines += [f"  warning: {w.meter} reached its {w.level} limit of {w.limit:,} ({w.quantity:,} at "
              f"{w.found_at:%Y-%m-%d %H:%M} UTC)" for w in rep.warnings]
    return "\n".join(lines)


def _dash(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"
