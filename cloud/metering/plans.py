"""Plans (a monthly fee and, per meter, what it includes, a soft and a hard limit, the price beyond) and the
plan each tenant is on, month by month.

Plans are platform data: ft_app may only read them (cloud.store.tenancy), platform admins write them with
the owner's login (``fieldtrust cloud plan put``).  A tenant's plan changes at a month boundary: each
month has one plan, or none (then usage is metered but neither limited nor priced).

Prices are decimals per ``per`` units (0.40 per 1,000 messages, 2.00 per 1,000,000,000 bytes), so no
price needs more digits than a currency has.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Self

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from cloud.metering.meters import Meter, month_text

PlanId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class Quota(BaseModel):
    """One meter of a plan."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    included: int = Field(default=0, ge=0, description="units included in the monthly fee")
    soft: int | None = Field(default=None, ge=0, description="a warning when usage reaches it")
    hard: int | None = Field(default=None, ge=0, description="API meters: calls refused from here; ingest meters: "
                                                             "data still stored, flagged over quota for billing")
    price: Decimal = Field(default=Decimal(0), ge=0, description="price of `per` units beyond `included`")
    per: int = Field(default=1, ge=1, description="units the price is for")

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.soft is not None and self.hard is not None and self.soft > self.hard:
            raise ValueError(f"soft limit {self.soft} is above the hard limit {self.hard}")
        return self

    def overage_cost(self, quantity: int) -> Decimal:
        """The price of what ``quantity`` uses beyond what is included (started blocks of ``per`` are not rounded up:
        billed pro rata)."""
        beyond = max(0, quantity - self.included)
        return self.price * beyond / self.per


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: PlanId
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = Field(description="ISO 4217, e.g. EUR")
    monthly_fee: Decimal = Field(default=Decimal(0), ge=0, max_digits=14, decimal_places=4)
    quotas: dict[Meter, Quota] = Field(default_factory=dict)


class TenantPlan(BaseModel):
    tenant_id: str
    plan_id: str
    valid_from: str  # YYYY-MM
    valid_to: str | None  # YYYY-MM, exclusive; None = open


_PLAN_COLUMNS = "id, name, currency, monthly_fee, quotas"


def _plan(row: tuple) -> Plan:
    return Plan(id=row[0], name=row[1], currency=row[2], monthly_fee=row[3], quotas=row[4])


def put_plan(conn: psycopg.Connection, plan: Plan) -> Plan:
    """Create or replace a plan (the owner's connection: ft_app may not write plans)."""
    quotas = {meter: q.model_dump(mode="json", exclude_none=True) for meter, q in plan.quotas.items()}
    conn.execute(f"INSERT INTO ft.plans ({_PLAN_COLUMNS}) VALUES (%s, %s, %s, %s, %s)"
                 " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, currency = EXCLUDED.currency,"
                 " monthly_fee = EXCLUDED.monthly_fee, quotas = EXCLUDED.quotas, updated_at = now()",
                 (plan.id, plan.name, plan.currency, plan.monthly_fee, Jsonb(quotas)))
    return plan


def get_plan(conn: psycopg.Connection, plan_id: str) -> Plan | None:
    row = conn.execute(f"SELECT {_PLAN_COLUMNS} FROM ft.plans WHERE id = %s", (plan_id,)).fetchone()
    return _plan(row) if row else None


def list_plans(conn: psycopg.Connection) -> list[Plan]:
    return [_plan(r) for r in conn.execute(f"SELECT {_PLAN_COLUMNS} FROM ft.plans ORDER BY id")]


def assign_plan(conn: psycopg.Connection, tenant_id: str, plan_id: str, from_month: date, by: str) -> TenantPlan:
    """Put ``tenant_id`` on ``plan_id`` from ``from_month`` on: the plan in force then ends there, later ones are
    replaced.  ValueError naming the plan when it does not exist."""
    if get_plan(conn, plan_id) is None:
        raise ValueError(f"plan {plan_id!r} does not exist (create it with `fieldtrust cloud plan put`)")
    conn.execute("DELETE FROM ft.tenant_plans WHERE tenant_id = %s AND valid_from >= %s", (tenant_id, from_month))
    conn.execute("UPDATE ft.tenant_plans SET valid_to = %s WHERE tenant_id = %s AND valid_from < %s"
                 " AND (valid_to IS NULL OR valid_to > %s)", (from_month, tenant_id, from_month, from_month))
    conn.execute("INSERT INTO ft.tenant_plans (tenant_id, plan_id, valid_from, assigned_by) VALUES (%s, %s, %s, %s)",
                 (tenant_id, plan_id, from_month, by))
    return TenantPlan(tenant_id=tenant_id, plan_id=plan_id, valid_from=month_text(from_month), valid_to=None)


def plan_for(conn: psycopg.Connection, tenant_id: str, month: date) -> Plan | None:
    """The plan ``tenant_id`` is on in ``month`` (None: none)."""
    row = conn.execute(
        f"SELECT {', '.join('p.' + c.strip() for c in _PLAN_COLUMNS.split(','))} FROM ft.tenant_plans tp"
        " JOIN ft.plans p ON p.id = tp.plan_id WHERE tp.tenant_id = %s AND tp.valid_from <= %s"
        " AND (tp.valid_to IS NULL OR tp.valid_to > %s)", (tenant_id, month, month)).fetchone()
    return _plan(row) if row else None


def plans_for_month(conn: psycopg.Connection, month: date) -> dict[str, Plan]:
    """The plan of every visible tenant that has one in ``month``, by tenant."""
    rows = conn.execute(
        f"SELECT tp.tenant_id, {', '.join('p.' + c.strip() for c in _PLAN_COLUMNS.split(','))} FROM ft.tenant_plans tp"
        " JOIN ft.plans p ON p.id = tp.plan_id WHERE tp.valid_from <= %s AND (tp.valid_to IS NULL OR tp.valid_to > %s)",
        (month, month)).fetchall()
    return {row[0]: _plan(row[1:]) for row in rows}
