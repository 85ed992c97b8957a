"""Loan applications over HTTP: apply, read, the officers' queue, decide (overrides with maker-checker),
appeal, review, cancel, batch scoring, and the products that fit a farm.

Scopes: ``credit:apply`` files, appeals and cancels (a farmer for their own farms only; a clerk for the
tenant's farmers), ``credit:read`` reads any application and the queue, ``credit:decide`` decides, checks
overrides, opens appeal reviews and runs batch scoring.  The rules and the audit trail are
``cloud.credit.service``'s: every decision, override, appeal and every staff read of an application is
audited there.  A use of farm data without the farmer's consent answers 403 (its refusal kept on record by
the app's ConsentRequired handler); a refusal after farm data was read keeps the reads' audit entries.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from cloud.api.deps import TenantConnDep, require
from cloud.api.models import Ident
from cloud.auth.principal import Principal
from cloud.credit import batch, queue, records, service
from cloud.credit.errors import CreditError

router = APIRouter(prefix="/tenants/{tenant}", tags=["credit"])

Applicant = Annotated[Principal, require("credit:apply")]
Reader = Annotated[Principal, require("credit:read")]
Decider = Annotated[Principal, require("credit:decide")]
Anyone = Annotated[Principal, require()]  # the tenant of the path is checked; the route checks the scopes
Purpose = Annotated[str, Field(pattern=r"^[a-z][a-z_]{1,39}$", examples=["inputs"],
                               description="inputs, equipment, irrigation, livestock (the shelf says which)")]
SeasonName = Annotated[str, Field(pattern=r"^[0-9]{4}-[a-z0-9-]{1,32}$", examples=["2025-long-rains"])]
Status = Literal["submitted", "scored", "approved", "referred", "declined", "appealed", "under_review", "decided",
                 "cancelled"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApplicationTerms(_Body):
    amount: float = Field(gt=0, lt=1e9, description="in the shelf's currency")
    term_months: int = Field(ge=1, le=120)
    purpose: Purpose
    prior_loans: int = Field(0, ge=0, le=1000, description="loans taken before")
    prior_repaid: int = Field(0, ge=0, le=1000, description="of which repaid on time")
    season: SeasonName | None = Field(None, description="the farm-season whose data is assessed (default: the latest "
                                                        "that has begun)")


class ApplicationCreate(ApplicationTerms):
    farm_id: Ident
    product_id: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9_-]*$", description="the product asked for")


class DecisionCreate(_Body):
    outcome: Literal["approve", "refer", "decline"]
    reason: str = Field("", max_length=2000, description="required (10+ characters) for an override, and to close "
                                                         "an appeal")


class OverrideCheck(_Body):
    approve: bool = Field(description="true: the override takes effect; false: the recommendation stands")
    note: str = Field("", max_length=2000)


class AppealCreate(_Body):
    note: str = Field(min_length=1, max_length=2000, description="the farmer's note to the reviewing officer")


class Cancel(_Body):
    note: str = Field("", max_length=2000)


@contextmanager
def _refused(conn: psycopg.Connection, *, keep: bool = False) -> Iterator[None]:
    """A credit refusal as its HTTP status; ``keep``: commit what was recorded first (audited reads)."""
    try:
        yield
    except CreditError as exc:
        if keep:
            conn.commit()
        raise HTTPException(exc.status, str(exc)) from None


def _can(principal: Principal, *scopes: str) -> None:
    if not any(principal.can(s) for s in scopes):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"not allowed: this needs the scope {' or '.join(scopes)}")


@router.post("/credit/applications", status_code=status.HTTP_201_CREATED, response_model=service.ApplicationView,
             summary="File a loan application; it is assessed at once on the farm's data (with the farmer's consent)")
def submit_application(tenant: str, body: ApplicationCreate, principal: Applicant,
                       conn: TenantConnDep) -> service.ApplicationView:
    with _refused(conn, keep=True):
        return service.submit(conn, principal, tenant, service.ApplicationInput(**body.model_dump()))


@router.get("/credit/applications", response_model=list[queue.QueueRow],
            summary="The officers' queue: applications with their current assessment, filtered and sorted")
def application_queue(tenant: str, principal: Reader, conn: TenantConnDep,
                      status_: Annotated[list[Status] | None, Query(alias="status")] = None,
                      grade: Annotated[list[Annotated[str, Field(pattern=r"^[A-Z]{1,2}$")]] | None, Query()] = None,
                      trust: queue.TrustBand | None = None,
                      village: Annotated[str | None, Query(max_length=200)] = None,
                      farmer_id: Ident | None = None, farm_id: Ident | None = None, sort: queue.Sort = "created_at",
                      order: Literal["asc", "desc"] = "desc",
                      limit: Annotated[int, Query(ge=1, le=queue.MAX_LIMIT)] = 100,
                      offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> list[queue.QueueRow]:
    filters = queue.Filters(status=status_, grade=grade, trust=trust, village=village, farmer_id=farmer_id,
                            farm_id=farm_id)
    return queue.queue(conn, tenant, filters, sort, order == "desc", limit, offset)


@router.get("/credit/applications/{application_id}", response_model=service.ApplicationView,
            summary="An application: score, grade, reasons, data trust, provenance, recommendation, decisions, "
                    "appeals and notices (staff reads are audited)")
def read_application(tenant: str, application_id: str, principal: Anyone, conn: TenantConnDep
                     ) -> service.ApplicationView:
    _can(principal, "credit:read", "credit:apply")
    with _refused(conn):
        return service.get(conn, principal, tenant, application_id)


@router.post("/credit/applications/{application_id}/decisions", status_code=status.HTTP_201_CREATED,
             response_model=records.Decision,
             summary="An officer's decision: the recommendation's outcome takes effect; another is an override "
                     "waiting for a second officer")
def decide_application(tenant: str, application_id: str, body: DecisionCreate, principal: Decider,
                       conn: TenantConnDep) -> records.Decision:
    with _refused(conn):
        return service.decide(conn, principal, tenant, application_id, body.outcome, body.reason)


@router.post("/credit/applications/{application_id}/decisions/{decision_id}/check", response_model=records.Decision,
             summary="A second officer approves or rejects a pending override (never its maker)")
def check_override(tenant: str, application_id: str, decision_id: str, body: OverrideCheck, principal: Decider,
                   conn: TenantConnDep) -> records.Decision:
    with _refused(conn):
        return service.check_override(conn, principal, tenant, application_id, decision_id, body.approve, body.note)


@router.post("/credit/applications/{application_id}/appeal", status_code=status.HTTP_201_CREATED,
             response_model=records.Appeal, summary="The farmer appeals a decline or referral: a person reviews it")
def appeal_application(tenant: str, application_id: str, body: AppealCreate, principal: Applicant,
                       conn: TenantConnDep) -> records.Appeal:
    with _refused(conn):
        return service.appeal(conn, principal, tenant, application_id, body.note)


@router.post("/credit/applications/{application_id}/review", response_model=records.Appeal,
             summary="An officer takes up an appeal")
def review_appeal(tenant: str, application_id: str, principal: Decider, conn: TenantConnDep) -> records.Appeal:
    with _refused(conn):
        return service.start_review(conn, principal, tenant, application_id)


@router.post("/credit/applications/{application_id}/cancel", response_model=records.Application,
             summary="Cancel an open application (the farmer, a clerk, or an officer)")
def cancel_application(tenant: str, application_id: str, body: Cancel, principal: Anyone,
                       conn: TenantConnDep) -> records.Application:
    _can(principal, "credit:apply", "credit:decide")
    with _refused(conn):
        return service.cancel(conn, principal, tenant, application_id, body.note)


class BatchRequest(ApplicationTerms):
    """The notional application every farm without an open one is scored on."""


@router.post("/credit/batch-scores", status_code=status.HTTP_201_CREATED, response_model=batch.BatchRun,
             summary="Score every farm of the tenant at once (farms without consent are skipped, with the reason)")
def batch_score(tenant: str, body: BatchRequest, principal: Decider, conn: TenantConnDep) -> batch.BatchRun:
    notional = batch.NotionalApplication(**body.model_dump(exclude={"season"}))
    with _refused(conn, keep=True):
        return batch.score_tenant(conn, principal, tenant, notional, body.season)


@router.get("/farms/{farm_id}/credit-products", response_model=service.FarmProducts,
            summary="The tenant's products ranked for a farm and a prospective application, with their costs "
                    "(an assessment under the farmer's consent, not stored)")
def farm_products(tenant: str, farm_id: Ident, principal: Applicant, conn: TenantConnDep,
                  amount: Annotated[float, Query(gt=0, lt=1e9)], term_months: Annotated[int, Query(ge=1, le=120)],
                  purpose: Annotated[str, Query(pattern=r"^[a-z][a-z_]{1,39}$")],
                  prior_loans: Annotated[int, Query(ge=0, le=1000)] = 0,
                  prior_repaid: Annotated[int, Query(ge=0, le=1000)] = 0,
                  season: Annotated[str | None, Query(pattern=r"^[0-9]{4}-[a-z0-9-]{1,32}$")] = None,
                  ) -> service.FarmProducts:
    inp = service.ApplicationInput(farm_id=farm_id, amount=amount, term_months=term_months, purpose=purpose,
                                   prior_loans=prior_loans, prior_repaid=prior_repaid, season=season)
    with _refused(conn, keep=True):
        return service.farm_products(conn, principal, tenant, inp)
