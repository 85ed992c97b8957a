"""Farmers' consents over HTTP: the text to show, grant (with the farmer's PIN), list, revoke; and the 403 of a
data use without consent.

Refusals that must be kept (a wrong PIN counts against the farmer's account and is audited) are committed
before the error answer.  :func:`consent_required` is the app's handler for ConsentRequired raised by any route
(cloud/consent/check.py): the route's transaction has rolled back by then, so the handler makes sure the
``data_use_refused`` entry exists, writing it again in a transaction of its own when it was lost.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from cloud.api.deps import CONNECTION_WAIT_S, PrincipalDep, TenantConnDep, require
from cloud.api.models import ErrorBody, Ident
from cloud.auth.principal import Principal
from cloud.consent import check, store, texts
from cloud.consent.errors import ConsentError, ConsentRequired, PinRejected
from cloud.store.scope import scoped_connection

router = APIRouter(tags=["consent"])

_REFUSALS = {403: {"model": ErrorBody, "description": "the farmer's PIN was missing or wrong, or is locked"}}


class ConsentText(BaseModel):
    """The consent text to show the farmer, and the version to send back with the grant."""

    version: str
    language: str
    text: str


class ConsentGrant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    purpose: Literal["credit_assessment", "insurance", "advice"]
    scopes: list[Literal["soil", "weather", "yields", "registry"]] = Field(min_length=1)
    days: int = Field(ge=1, le=store.MAX_DAYS, description="how long the consent lasts")
    pin: str = Field(min_length=1, max_length=16, description="the farmer's PIN, entered by the farmer")
    text_version: str = Field(pattern=r"^[0-9a-f]{64}$", description="the version of the text shown (GET consent-text)")
    language: Literal["zh-CN", "en"]


class ConsentRevoke(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pin: str | None = Field(default=None, min_length=1, max_length=16,
                            description="the farmer's PIN: required unless the farmer revokes it themself")


def _refuse(conn: psycopg.Connection, exc: ConsentError) -> HTTPException:
    """The HTTP error for a consent refusal, after committing what the refusal recorded (counters, audit)."""
    conn.commit()
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, PinRejected) and exc.retry_after_s else None
    return HTTPException(exc.status, str(exc), headers=headers)


@router.get("/tenants/{tenant}/consent-text", response_model=ConsentText,
            summary="The consent text to show a farmer (and its version, which the grant must name)")
def consent_text(tenant: str, principal: Annotated[Principal, require("consent:manage")],
                 purpose: Literal["credit_assessment", "insurance", "advice"],
                 scopes: Annotated[list[Literal["soil", "weather", "yields", "registry"]], Query(min_length=1)],
                 days: Annotated[int, Query(ge=1, le=store.MAX_DAYS)], language: Literal["zh-CN", "en"] = "zh-CN",
                 ) -> ConsentText:
    until = datetime.now(UTC) + timedelta(days=days)
    return ConsentText(version=texts.VERSION, language=language,
                       text=texts.render(purpose, scopes, language, tenant=tenant, until=until))


@router.post("/tenants/{tenant}/farmers/{farmer}/consents", response_model=store.Consent,
             status_code=status.HTTP_201_CREATED, responses=_REFUSALS,
             summary="Record a farmer's consent, confirmed with the farmer's PIN (also when a clerk assists)")
def grant_consent(tenant: str, farmer: Ident, body: ConsentGrant,
                  principal: Annotated[Principal, require("consent:manage")], conn: TenantConnDep) -> store.Consent:
    try:
        return store.grant(conn, principal, farmer, body.purpose, list(body.scopes), days=body.days, pin=body.pin,
                           text_version=body.text_version, language=body.language, tenant_id=tenant)
    except ConsentError as exc:
        raise _refuse(conn, exc) from None


@router.get("/tenants/{tenant}/farmers/{farmer}/consents", response_model=list[store.Consent],
            summary="A farmer's consents, newest first: active, expired and revoked")
def list_farmer_consents(tenant: str, farmer: Ident, principal: PrincipalDep, conn: TenantConnDep,
                         ) -> list[store.Consent]:
    try:
        return store.list_consents(conn, principal, farmer, tenant_id=tenant)
    except ConsentError as exc:
        raise _refuse(conn, exc) from None


@router.post("/tenants/{tenant}/consents/{consent_id}/revoke", response_model=store.Consent, responses=_REFUSALS,
             summary="Revoke a consent: the farmer themself, or a clerk with the farmer's PIN")
def revoke_consent(tenant: str, consent_id: str, body: ConsentRevoke,
                   principal: Annotated[Principal, require("consent:manage")], conn: TenantConnDep) -> store.Consent:
    try:
        return store.revoke(conn, principal, consent_id, pin=body.pin, tenant_id=tenant)
    except ConsentError as exc:
        raise _refuse(conn, exc) from None


@router.get("/me/consents", response_model=list[store.Consent], summary="The signed-in farmer's own consents")
def my_consents(principal: PrincipalDep, conn: TenantConnDep) -> list[store.Consent]:
    if principal.farmer_id is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "only a farmer has consents of their own")
    return store.list_consents(conn, principal, principal.farmer_id)


async def consent_required(request: Request, exc: Exception) -> JSONResponse:
    """403 for a data use without consent, its ``data_use_refused`` entry made sure of."""
    assert isinstance(exc, ConsentRequired)
    await run_in_threadpool(_keep_refusal, request, exc)
    body = ErrorBody(error="consent_required", message=str(exc)).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status.HTTP_403_FORBIDDEN)


def _keep_refusal(request: Request, exc: ConsentRequired) -> None:
    with scoped_connection(request.app.state.pool, exc.tenant_id, timeout=CONNECTION_WAIT_S) as conn:
        kept = exc.entry_id is not None and conn.execute(
            "SELECT 1 FROM ft.audit_log WHERE tenant_id = %s AND id = %s", (exc.tenant_id, exc.entry_id)).fetchone()
        if not kept:
            check.record_refusal(conn, exc)
