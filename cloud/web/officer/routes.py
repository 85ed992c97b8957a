"""The officer console's pages, over the credit service's functions (cloud/credit, called directly).

* ``/officer`` — the queue: filters (status, grade, trust band, village — the farm's village stands for the
  branch, as in :mod:`cloud.credit.queue`) and a whitelisted sort; overrides waiting for a second officer
  are marked, so another officer sees them.
* ``/officer/applications/{id}`` — score and grade, reason codes in plain words (the library's texts in
  the page's language), trust breakdown and coverage, the farm's season chart (consent-gated,
  :mod:`cloud.web.officer.evidence`), provenance hash, recommendation and limit, the decision form, pending
  overrides with approve/reject for a *different* officer, the appeal review, the audit trail, and
  ``case-file.pdf`` (:mod:`cloud.web.officer.case_file`).  Opening it is an audited staff read.
* ``/officer/portfolio`` — :mod:`cloud.web.officer.portfolio`.

Every form carries the session's CSRF token; deciding needs ``credit:decide`` (a role without it sees the
page but not the form, and a post is refused with 403).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from cloud.credit import queue as credit_queue
from cloud.credit import service
from cloud.credit.errors import CreditError, CreditInvalid, CreditNotFound
from cloud.web import session
from cloud.web.credit_words import STATUSES, TRUST_BANDS, credit_word
from cloud.web.i18n import Formats
from cloud.web.officer import case_file, evidence
from cloud.web.officer.portfolio import portfolio
from cloud.web.session import OfficerUser, PageUser
from cloud.web.staff import staff_router
from cloud.web.templates import language_of, render, translator

router = APIRouter(prefix="/officer", include_in_schema=False)
router.include_router(staff_router("officer"))

Token = Annotated[str, Form(alias=session.FORM_FIELD, max_length=200)]
Text = Annotated[str, Form(max_length=2000)]
GRADES = ("A", "B", "C", "D", "E")
PAGE = 100


def _see_other(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303)


def _not_found(request: Request, user: PageUser) -> Response:
    return render(request, "base/not_found.html", {"user": user, "area": "officer"}, status_code=404)


@router.get("")
def queue(request: Request, user: OfficerUser, status: Annotated[list[str] | None, Query()] = None,
          grade: Annotated[list[str] | None, Query()] = None, trust: str = "", village: str = "",
          sort: str = "created_at", order: str = "desc") -> Response:
    status = [s for s in status or [] if s in STATUSES]
    grade = [g for g in grade or [] if g in GRADES]
    band = trust if trust in TRUST_BANDS else None
    sort = sort if sort in credit_queue.SORTS else "created_at"
    filters = credit_queue.Filters(status=status or None, grade=grade or None, trust=band,  # type: ignore[arg-type]
                                   village=village.strip() or None)
    with session.tenant_conn(request, user) as conn:
        rows = credit_queue.queue(conn, user.tenant_id, filters, sort, order != "asc", limit=PAGE)  # type: ignore[arg-type]
        villages = [r[0] for r in conn.execute(
            "SELECT DISTINCT f.village FROM ft.loan_applications a JOIN ft.farms f ON f.tenant_id = a.tenant_id"
            " AND f.id = a.farm_id WHERE a.tenant_id = %s AND f.village IS NOT NULL ORDER BY 1",
            (user.tenant_id,)).fetchall()]
    return render(request, "officer/queue.html", {
        "user": user, "applications": rows, "cw": credit_word, "statuses": STATUSES, "grades": GRADES,
        "bands": TRUST_BANDS, "sorts": list(credit_queue.SORTS), "villages": villages,
        "chosen": {"status": status, "grade": grade, "trust": band or "", "village": village.strip(), "sort": sort,
                   "order": "asc" if order == "asc" else "desc"},
        "filtered": bool(status or grade or band or village.strip())})


def _page(request: Request, user: PageUser, application_id: str, *, error: str | None = None,
          notice: str | None = None, status_code: int = 200) -> Response:
    try:
        with session.tenant_conn(request, user) as conn:
            view = service.get(conn, user.principal, user.tenant_id, application_id)
            charts = evidence.season_charts(conn, user.principal, view.application, Formats(language_of(request)))
            trail = evidence.audit_trail(conn, view.application)
    except CreditNotFound:
        return _not_found(request, user)
    return render(request, "officer/application.html", {
        "user": user, "view": view, "app": view.application, "a": view.assessment, "charts": charts,
        "trail": trail, "cw": credit_word, "error": error, "notice": notice,
        "may_decide": user.principal.can("credit:decide"),
        "decidable": view.application.status in service.DECIDABLE and view.pending_override is None,
        "lang_key": "zh-CN" if language_of(request) == "zh-CN" else "en"}, status_code=status_code)


@router.get("/applications/{application_id}")
def application(request: Request, application_id: str, user: OfficerUser, notice: str | None = None) -> Response:
    return _page(request, user, application_id, notice=notice)


def _act(request: Request, user: PageUser, application_id: str, token: str, notice: str, action) -> Response:  # type: ignore[no-untyped-def]
    """Check the form and the scope, run ``action(conn)``, and answer with the page (error) or a redirect."""
    _, _n = translator(request)
    try:
        session.check_form(user, token)
    except session.FormRejected:
        return _page(request, user, application_id, status_code=403,
                     error=_("This form has expired. Please try again."))
    if not user.principal.can("credit:decide"):
        return _page(request, user, application_id, status_code=403,
                     error=_("Your account may read applications but not decide them."))
    try:
        with session.tenant_conn(request, user) as conn:
            action(conn)
    except CreditNotFound:
        return _not_found(request, user)
    except CreditError as exc:
        return _page(request, user, application_id, status_code=exc.status,
                     error=_("Not done: %(why)s") % {"why": str(exc)})
    return _see_other(f"/officer/applications/{application_id}?notice={notice}")


@router.post("/applications/{application_id}/decide")
def decide(request: Request, application_id: str, user: OfficerUser, csrf_token: Token,
           outcome: Annotated[str, Form(max_length=20)], reason: Text = "") -> Response:
    def run(conn) -> None:  # type: ignore[no-untyped-def]
        if outcome not in service.STATUS_OF:
            raise CreditInvalid(f"outcome must be one of {', '.join(service.STATUS_OF)}; got {outcome!r}")
        service.decide(conn, user.principal, user.tenant_id, application_id, outcome, reason)

    return _act(request, user, application_id, csrf_token, "decided", run)


@router.post("/applications/{application_id}/overrides/{decision_id}")
def check_override(request: Request, application_id: str, decision_id: str, user: OfficerUser, csrf_token: Token,
                   verdict: Annotated[str, Form(max_length=10)], note: Text = "") -> Response:
    def run(conn) -> None:  # type: ignore[no-untyped-def]
        service.check_override(conn, user.principal, user.tenant_id, application_id, decision_id,
                               verdict == "approve", note)

    return _act(request, user, application_id, csrf_token, "checked", run)


@router.post("/applications/{application_id}/review")
def start_review(request: Request, application_id: str, user: OfficerUser, csrf_token: Token) -> Response:
    def run(conn) -> None:  # type: ignore[no-untyped-def]
        service.start_review(conn, user.principal, user.tenant_id, application_id)

    return _act(request, user, application_id, csrf_token, "review", run)


@router.get("/applications/{application_id}/case-file.pdf")
def case_file_pdf(request: Request, application_id: str, user: OfficerUser) -> Response:
    try:
        with session.tenant_conn(request, user) as conn:
            view = service.get(conn, user.principal, user.tenant_id, application_id)
            trail = evidence.audit_trail(conn, view.application)
            row = conn.execute("SELECT name FROM ft.tenants WHERE id = %s", (user.tenant_id,)).fetchone()
    except CreditNotFound:
        return _not_found(request, user)
    made = case_file.case_file(view, trail, row[0] if row else user.tenant_id)
    return Response(made.pdf, media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="case-{application_id}.pdf"', "Cache-Control": "no-store",
        "X-Case-File-CJK": "yes" if made.cjk else "no"})


@router.get("/portfolio")
def portfolio_page(request: Request, user: OfficerUser) -> Response:
    with session.tenant_conn(request, user) as conn:
        view = portfolio(conn, user.tenant_id)
    return render(request, "officer/portfolio.html", {"user": user, "p": view, "cw": credit_word})
