"""The terminal's loan pages: "Products for me", "Apply", my applications (status, receipt, appeal, cancel).

* **Products for me** ranks the tenant's shelf for one of the farmer's farms and the amount, term and
  purpose typed in (:func:`cloud.credit.service.farm_products`: an assessment run under the farmer's consent,
  not stored), with the plain cost figures (total interest, each instalment, total to repay).  Without a
  consent yet, it lists the shelf with its ranges only and says that Apply asks for the consent.
* **Apply** shows the data-use consent in full (:mod:`cloud.consent.texts`, in the page's language) and files
  the application only when the farmer ticked it *and* typed their own PIN: the consent is granted with the
  PIN (:func:`cloud.consent.store.grant`, the same lockout as PIN sign-ins, also when a clerk assists), then
  the application is submitted and assessed (:func:`cloud.credit.service.submit`).  A wrong PIN is committed
  (counted and audited) before the page answers; nothing is filed.
* **My applications**: each with its status in plain words, a printable receipt, the adverse-action notice
  of a decline, an appeal with the farmer's note, and cancel in one action.

Everything runs as the farmer (their session's principal, the clerk's help recorded by the session), in the
tenant's scope; errors of the credit service are shown in words, never acted on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from cloud.consent import check as consent_check
from cloud.consent import store as consents
from cloud.consent import texts
from cloud.consent.errors import ConsentError, ConsentRequired, PinRejected
from cloud.credit import queue, service, shelves
from cloud.credit.errors import CreditError, CreditNotFound, NotDeployed
from cloud.store import registry
from cloud.web import session
from cloud.web.credit_words import LOAN_PURPOSES, credit_word
from cloud.web.session import PageUser, TerminalUser
from cloud.web.templates import language_of, render, translator

router = APIRouter(prefix="/terminal", include_in_schema=False)

Token = Annotated[str, Form(alias=session.FORM_FIELD, max_length=200)]
Note = Annotated[str, Form(max_length=2000)]
#: what the credit assessment reads, and for how long the consent given at Apply lasts
CONSENT_PURPOSE = "credit_assessment"
CONSENT_SCOPES = ("registry", "soil", "weather")
CONSENT_DAYS = 180
DEFAULTS = {"amount": "500", "term": "6", "purpose": "inputs"}
MAX_AMOUNT = 1_000_000.0


@dataclass(frozen=True)
class LoanForm:
    """What the farmer typed (as text, to show it again) and what it means (None: not valid)."""

    farm: str
    product: str
    amount_text: str
    term_text: str
    purpose: str
    amount: float | None
    term: int | None

    @property
    def errors(self) -> list[str]:
        bad = []
        if self.amount is None:
            bad.append("amount")
        if self.term is None:
            bad.append("term")
        if self.purpose not in LOAN_PURPOSES:
            bad.append("purpose")
        return bad

    def application(self) -> service.ApplicationInput:
        assert self.amount is not None and self.term is not None
        return service.ApplicationInput(farm_id=self.farm, amount=self.amount, term_months=self.term,
                                        purpose=self.purpose, product_id=self.product or None)


def read_form(farm: str, product: str, amount: str, term: str, purpose: str) -> LoanForm:
    try:
        money = float(amount.replace(",", "").strip())
        money_ok: float | None = money if 0 < money <= MAX_AMOUNT else None
    except ValueError:
        money_ok = None
    months = int(term.strip()) if term.strip().isdigit() and 1 <= int(term.strip()) <= 120 else None
    return LoanForm(farm.strip(), product.strip(), amount.strip(), term.strip(), purpose.strip(), money_ok, months)


def _farmer(user: PageUser) -> str:
    assert user.principal.farmer_id is not None  # the terminal admits farmers only
    return user.principal.farmer_id


def _farms(conn: Any, user: PageUser) -> list[registry.Farm]:
    return registry.list_farms(conn, user.tenant_id, farmer_id=_farmer(user))


def _shelf(conn: Any, tenant: str) -> shelves.ShelfVersion | None:
    try:
        return shelves.current_shelf(conn, tenant)
    except NotDeployed:
        return None


def _see_other(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303)


def consent_text(request: Request, tenant_name: str) -> str:
    language = language_of(request)
    until = datetime.now(UTC) + timedelta(days=CONSENT_DAYS)
    return texts.render(CONSENT_PURPOSE, CONSENT_SCOPES, language if language in texts.LANGUAGES else "zh-CN",
                        tenant=tenant_name, until=until)


def _tenant_name(conn: Any, tenant: str) -> str:
    row = conn.execute("SELECT name FROM ft.tenants WHERE id = %s", (tenant,)).fetchone()
    return row[0] if row else tenant


# -- products for me -------------------------------------------------------------------------------------------


@router.get("/products")
def products(request: Request, user: TerminalUser, farm: str = "", amount: str = DEFAULTS["amount"],
             term: str = DEFAULTS["term"], purpose: str = DEFAULTS["purpose"]) -> Response:
    form = read_form(farm, "", amount, term, purpose)
    ranked: service.FarmProducts | None = None
    needs_consent = False
    with session.tenant_conn(request, user) as conn:
        farms = _farms(conn, user)
        shelf = _shelf(conn, user.tenant_id)
        chosen = next((f for f in farms if f.id == form.farm), farms[0] if farms else None)
        if chosen is not None and shelf is not None and not form.errors:
            try:
                with conn.transaction():  # a refusal's audit entry stays; the rest of the page goes on
                    ranked = service.farm_products(conn, user.principal, user.tenant_id,
                                                   service.ApplicationInput(chosen.id, form.amount or 0,
                                                                            form.term or 0, form.purpose))
            except ConsentRequired as refusal:
                consent_check.record_refusal(conn, refusal)  # its first entry went with the savepoint
                needs_consent = True
            except CreditError:
                ranked = None
    return render(request, "terminal/products.html", {
        "user": user, "farms": farms, "farm": chosen, "form": form, "shelf": shelf, "ranked": ranked,
        "needs_consent": needs_consent, "purposes": LOAN_PURPOSES, "cw": credit_word})


# -- apply -----------------------------------------------------------------------------------------------------


def _apply_page(request: Request, user: PageUser, form: LoanForm, *, error: str | None = None,
                status_code: int = 200) -> Response:
    with session.tenant_conn(request, user) as conn:
        farms = _farms(conn, user)
        shelf = _shelf(conn, user.tenant_id)
        text = consent_text(request, _tenant_name(conn, user.tenant_id))
    return render(request, "terminal/apply.html", {
        "user": user, "farms": farms, "form": form, "shelf": shelf, "consent_text": text, "error": error,
        "purposes": LOAN_PURPOSES, "cw": credit_word, "text_version": texts.VERSION}, status_code=status_code)


@router.get("/apply")
def apply_page(request: Request, user: TerminalUser, farm: str = "", product: str = "",
               amount: str = DEFAULTS["amount"], term: str = DEFAULTS["term"],
               purpose: str = DEFAULTS["purpose"]) -> Response:
    return _apply_page(request, user, read_form(farm, product, amount, term, purpose))


@router.post("/apply")
def apply(request: Request, user: TerminalUser, csrf_token: Token, farm: Annotated[str, Form(max_length=200)],
          amount: Annotated[str, Form(max_length=40)], term: Annotated[str, Form(max_length=10)],
          purpose: Annotated[str, Form(max_length=40)], pin: Annotated[str, Form(max_length=200)] = "",
          product: Annotated[str, Form(max_length=200)] = "", agree: Annotated[str, Form(max_length=10)] = "",
          text_version: Annotated[str, Form(max_length=100)] = "") -> Response:
    _, _n = translator(request)
    form = read_form(farm, product, amount, term, purpose)
    try:
        session.check_form(user, csrf_token)
    except session.FormRejected:
        return _apply_page(request, user, form, status_code=403,
                           error=_("This form has expired. Please try again."))
    if form.errors:
        return _apply_page(request, user, form, status_code=422,
                           error=_("Please check the amount, the number of months and the purpose."))
    if agree != "yes":
        return _apply_page(request, user, form, status_code=422, error=_(
            "Without your consent your farm data cannot be used, so the application was not sent. "
            "Nothing was recorded."))
    if text_version != texts.VERSION:
        return _apply_page(request, user, form, status_code=409,
                           error=_("The consent text has changed. Please read it again."))
    refused: PinRejected | None = None
    with session.tenant_conn(request, user) as conn:  # a wrong PIN is counted and audited: committed here
        try:
            consents.grant(conn, user.principal, _farmer(user), CONSENT_PURPOSE, list(CONSENT_SCOPES),
                           days=CONSENT_DAYS, pin=pin, text_version=text_version,
                           language=language_of(request) if language_of(request) in texts.LANGUAGES else "zh-CN")
        except PinRejected as exc:
            refused = exc
    if refused is not None:
        return _apply_page(request, user, form, status_code=403, error=_(
            "Wrong PIN: your consent was not confirmed and the application was not sent. "
            "Please type your own PIN."))
    try:
        with session.tenant_conn(request, user) as conn:
            view = service.submit(conn, user.principal, user.tenant_id, form.application())
    except (CreditError, ConsentError) as exc:
        return _apply_page(request, user, form, status_code=getattr(exc, "status", 400),
                           error=_("The application could not be sent: %(why)s") % {"why": str(exc)})
    return _see_other(f"/terminal/applications/{view.application.id}?notice=filed")


# -- my applications -------------------------------------------------------------------------------------------


@router.get("/applications")
def my_applications(request: Request, user: TerminalUser) -> Response:
    with session.tenant_conn(request, user) as conn:
        rows = queue.queue(conn, user.tenant_id, queue.Filters(farmer_id=_farmer(user)), limit=100)
    return render(request, "terminal/applications.html", {"user": user, "rows": rows, "cw": credit_word})


def _application(request: Request, user: PageUser, application_id: str) -> service.ApplicationView | None:
    try:
        with session.tenant_conn(request, user) as conn:
            return service.get(conn, user.principal, user.tenant_id, application_id)
    except CreditNotFound:
        return None


def chosen_product(view: service.ApplicationView) -> dict[str, Any] | None:
    """The product asked for, else the cheapest one that fits, with its costs (from the assessment)."""
    products = view.assessment.products if view.assessment else []
    wanted = view.application.product_id
    if wanted:
        return next((p for p in products if p["product_id"] == wanted), None)
    return view.matched_products[0] if view.matched_products else None


def _detail(request: Request, user: PageUser, application_id: str, template: str, *, notice: str | None = None,
            error: str | None = None, status_code: int = 200) -> Response:
    view = _application(request, user, application_id)
    if view is None:
        return render(request, "base/not_found.html", {"user": user, "area": "terminal"}, status_code=404)
    app = view.application
    return render(request, template, {
        "user": user, "view": view, "app": app, "product": chosen_product(view), "cw": credit_word,
        "notice": notice, "error": error, "currency": view.assessment.currency if view.assessment else "CNY",
        "can_appeal": app.status in service.APPEALABLE and app.outcome is not None and not view.appeals,
        "can_cancel": app.status in service.CANCELLABLE or (app.status == "decided" and app.outcome == "approve")},
        status_code=status_code)


@router.get("/applications/{application_id}")
def application_page(request: Request, application_id: str, user: TerminalUser, notice: str | None = None
                     ) -> Response:
    return _detail(request, user, application_id, "terminal/application.html", notice=notice)


@router.get("/applications/{application_id}/receipt")
def receipt(request: Request, application_id: str, user: TerminalUser) -> Response:
    return _detail(request, user, application_id, "terminal/receipt.html")


@router.post("/applications/{application_id}/appeal")
def appeal(request: Request, application_id: str, user: TerminalUser, csrf_token: Token, note: Note = "") -> Response:
    _, _n = translator(request)
    try:
        session.check_form(user, csrf_token)
    except session.FormRejected:
        return _see_other(f"/terminal/applications/{application_id}")
    try:
        with session.tenant_conn(request, user) as conn:
            service.appeal(conn, user.principal, user.tenant_id, application_id, note)
    except CreditNotFound:
        return _detail(request, user, application_id, "terminal/application.html")
    except CreditError as exc:
        return _detail(request, user, application_id, "terminal/application.html", status_code=exc.status,
                       error=_("The appeal was not sent: %(why)s") % {"why": str(exc)})
    return _see_other(f"/terminal/applications/{application_id}?notice=appealed")


@router.post("/applications/{application_id}/cancel")
def cancel(request: Request, application_id: str, user: TerminalUser, csrf_token: Token) -> Response:
    _, _n = translator(request)
    try:
        session.check_form(user, csrf_token)
    except session.FormRejected:
        return _see_other(f"/terminal/applications/{application_id}")
    try:
        with session.tenant_conn(request, user) as conn:
            service.cancel(conn, user.principal, user.tenant_id, application_id, "cancelled at the terminal")
    except CreditNotFound:
        return _detail(request, user, application_id, "terminal/application.html")
    except CreditError as exc:
        return _detail(request, user, application_id, "terminal/application.html", status_code=exc.status,
                       error=_("The application could not be cancelled: %(why)s") % {"why": str(exc)})
    return _see_other(f"/terminal/applications/{application_id}?notice=cancelled")
