"""Metered usage over HTTP (scope usage:read): a tenant's month, as JSON or CSV; every tenant's for platform admins.

Each meter comes with its quota, the share used, its status and the cost beyond what the plan includes
(cloud.metering.usage).  These routes answer even when the tenant is over a hard limit (its other API
calls are refused with 402 then: cloud.metering.api_calls), so a tenant can always see why.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status

from cloud.api.deps import TenantConnDep, require
from cloud.auth.principal import Principal
from cloud.metering import usage
from cloud.metering.meters import current_month, month_text, parse_month

router = APIRouter(tags=["usage"])
Reader = Annotated[Principal, require("usage:read")]
MonthQuery = Annotated[str | None, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
                                         description="YYYY-MM (UTC); default: the current month")]


def _month(text: str | None) -> date:
    return parse_month(text) if text is not None else current_month()


def _tenant_report(conn: TenantConnDep, tenant: str, month: str | None) -> usage.UsageReport:
    try:
        return usage.report(conn, tenant, _month(month))
    except usage.UnknownTenant as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


def _csv(reports: list[usage.UsageReport], name: str) -> Response:
    return Response(usage.to_csv(reports), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


@router.get("/tenants/{tenant}/usage", response_model=usage.UsageReport,
            summary="A tenant's usage in a month: per meter the quantity, quota, share used and overage cost")
def read_usage(tenant: str, principal: Reader, conn: TenantConnDep, month: MonthQuery = None) -> usage.UsageReport:
    return _tenant_report(conn, tenant, month)


@router.get("/tenants/{tenant}/usage.csv", response_class=Response,
            responses={200: {"content": {"text/csv": {}}, "description": "one row per meter, then per API caller"}},
            summary="A tenant's usage in a month as CSV")
def read_usage_csv(tenant: str, principal: Reader, conn: TenantConnDep, month: MonthQuery = None) -> Response:
    report = _tenant_report(conn, tenant, month)
    return _csv([report], f"usage-{tenant}-{report.month}")


def _platform_admin(principal: Principal) -> None:
    if principal.kind != "platform_admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "not allowed: every tenant's usage is for platform admins")


@router.get("/usage", response_model=list[usage.UsageReport],
            summary="Every tenant's usage in a month (platform admins)")
def read_all_usage(principal: Reader, conn: TenantConnDep, month: MonthQuery = None) -> list[usage.UsageReport]:
    _platform_admin(principal)
    return usage.reports(conn, _month(month))


@router.get("/usage.csv", response_class=Response, responses={200: {"content": {"text/csv": {}}}},
            summary="Every tenant's usage in a month as CSV (platform admins)")
def read_all_usage_csv(principal: Reader, conn: TenantConnDep, month: MonthQuery = None) -> Response:
    _platform_admin(principal)
    chosen = _month(month)
    return _csv(usage.reports(conn, chosen), f"usage-{month_text(chosen)}")
