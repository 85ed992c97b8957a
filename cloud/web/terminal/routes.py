"""The terminal's pages: sign-in (farmer id and PIN, or assisted by a clerk), My farm, My data.

Built for a 1024x600 touch screen on a slow link: one small stylesheet, system fonts, no script needed,
big targets.  The service point's tenant is remembered in the ``ft_tenant`` cookie after the first
sign-in (or given once as ``?tenant=``), so a farmer types only their farmer id and PIN.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from cloud.audit import log
from cloud.auth import sessions
from cloud.consent import store as consents
from cloud.consent.errors import ConsentError
from cloud.web import session
from cloud.web.i18n import Formats
from cloud.web.session import ClerkUser, TerminalUser
from cloud.web.templates import language_of, render, translator
from cloud.web.terminal.farm import my_farms

router = APIRouter(prefix="/terminal", include_in_schema=False)

Field = Annotated[str, Form(max_length=200)]
Secret = Annotated[str, Form(max_length=200)]
Token = Annotated[str, Form(alias=session.FORM_FIELD, max_length=200)]
Next = Annotated[str, Form(max_length=500)]
#: the audit action of a clerk starting a farmer's session at the terminal
ASSISTED = "terminal.assisted"
DATA_PAGE = 50


def _see_other(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303)


@router.get("")
def home() -> RedirectResponse:
    return _see_other("/terminal/farm")


# -- signing in and out -----------------------------------------------------------------------------------


def _sign_in_page(request: Request, template: str, *, error: str | None = None, status_code: int = 200,
                  values: dict[str, str] | None = None) -> Response:
    token = session.sign_in_token(request)
    tenant = request.query_params.get("tenant") or request.cookies.get(session.TENANT_COOKIE) or ""
    response = render(request, template, {
        "form_token": token, "tenant": (values or {}).get("tenant", tenant), "error": error,
        "values": values or {}, "next": session.safe_next(request.query_params.get("next"), ""),
        "refused": request.query_params.get("refused") == "1"}, status_code=status_code)
    session.keep_form_token(response, token)
    return response


def _rejected_form(request: Request, template: str) -> Response:
    _, _n = translator(request)
    return _sign_in_page(request, template, status_code=403,
                         error=_("This form has expired. Please try again."))


@router.get("/sign-in")
def sign_in_page(request: Request) -> Response:
    return _sign_in_page(request, "terminal/sign_in.html")


@router.post("/sign-in")
def sign_in(request: Request, tenant: Field, farmer_id: Field, pin: Secret, csrf_token: Token,
            next: Next = "") -> Response:
    try:
        session.check_sign_in_form(request, csrf_token)
    except session.FormRejected:
        return _rejected_form(request, "terminal/sign_in.html")
    values = {"tenant": tenant.strip(), "farmer_id": farmer_id.strip()}
    outcome = session.sign_in(request, values["tenant"], values["farmer_id"], pin, "pin")
    if outcome.session is None or outcome.principal is None:
        return _sign_in_page(request, "terminal/sign_in.html", status_code=outcome.status, values=values,
                             error=session.refusal_words(request, outcome, "pin"))
    if outcome.principal.farmer_id is None:  # a PIN belongs to farmers only; refuse anything else plainly
        session.end_session(request, outcome.session.token)
        _, _n = translator(request)
        return _sign_in_page(request, "terminal/sign_in.html", status_code=403, values=values,
                             error=_("This is not a farmer's account."))
    response = _see_other(session.safe_next(next, "/terminal/farm"))
    session.set_session(request, response, outcome.session.token)
    response.set_cookie(session.TENANT_COOKIE, values["tenant"], max_age=365 * 86400, path="/terminal",
                        httponly=True, samesite="lax")
    return response


@router.get("/clerk")
def clerk_page(request: Request) -> Response:
    return _sign_in_page(request, "terminal/clerk.html")


@router.post("/clerk")
def clerk_sign_in(request: Request, tenant: Field, login: Field, password: Secret, csrf_token: Token) -> Response:
    try:
        session.check_sign_in_form(request, csrf_token)
    except session.FormRejected:
        return _rejected_form(request, "terminal/clerk.html")
    values = {"tenant": tenant.strip(), "login": login.strip()}
    outcome = session.sign_in(request, values["tenant"], values["login"], password, "password")
    if outcome.session is None or outcome.principal is None:
        return _sign_in_page(request, "terminal/clerk.html", status_code=outcome.status, values=values,
                             error=session.refusal_words(request, outcome, "password"))
    if not session.is_clerk(outcome.principal):
        session.end_session(request, outcome.session.token)
        _, _n = translator(request)
        return _sign_in_page(request, "terminal/clerk.html", status_code=403, values=values,
                             error=_("This account cannot assist farmers at a service point."))
    response = _see_other("/terminal/assist")
    session.set_session(request, response, outcome.session.token)
    response.set_cookie(session.TENANT_COOKIE, values["tenant"], max_age=365 * 86400, path="/terminal",
                        httponly=True, samesite="lax")
    return response


@router.get("/assist")
def assist_page(request: Request, clerk: ClerkUser) -> Response:
    return render(request, "terminal/assist.html", {"user": clerk, "csrf_token": clerk.csrf_token, "error": None,
                                                    "values": {}})


@router.post("/assist")
def assist(request: Request, clerk: ClerkUser, farmer_id: Field, pin: Secret, csrf_token: Token) -> Response:
    """The farmer beside the clerk types their farmer id and PIN: their session starts, the clerk's waits."""
    try:
        session.check_form(clerk, csrf_token)
    except session.FormRejected:
        return _see_other("/terminal/assist")
    values = {"farmer_id": farmer_id.strip()}
    outcome = session.sign_in(request, clerk.tenant_id, values["farmer_id"], pin, "pin")
    if outcome.session is None or outcome.principal is None or outcome.principal.farmer_id is None:
        if outcome.session is not None:
            session.end_session(request, outcome.session.token)
        _, _n = translator(request)
        error = (session.refusal_words(request, outcome, "pin") if outcome.session is None
                 else _("This is not a farmer's account."))
        return render(request, "terminal/assist.html", {"user": clerk, "csrf_token": clerk.csrf_token,
                                                        "error": error, "values": values},
                      status_code=outcome.status if outcome.session is None else 403)
    with session.tenant_conn(request, clerk) as conn:
        log.record(conn, clerk.principal, ASSISTED, "farmer", outcome.principal.farmer_id,
                   farmer_id=outcome.principal.farmer_id, detail={"farmer_user": outcome.principal.id})
    response = _see_other("/terminal/farm")
    session.set_session(request, response, request.cookies.get(sessions.COOKIE_NAME, ""), cookie=session.CLERK_COOKIE)
    session.set_session(request, response, outcome.session.token)
    return response


@router.post("/sign-out")
def sign_out(request: Request, user: TerminalUser, csrf_token: Token) -> Response:
    try:
        session.check_form(user, csrf_token)
    except session.FormRejected:
        return _see_other("/terminal/farm")
    session.end_session(request, request.cookies.get(sessions.COOKIE_NAME))
    clerk_token = request.cookies.get(session.CLERK_COOKIE)
    if clerk_token:  # back to the clerk who assisted
        response = _see_other("/terminal/assist")
        session.set_session(request, response, clerk_token)
        response.delete_cookie(session.CLERK_COOKIE, path="/")
        return response
    response = _see_other("/terminal/sign-in")
    response.delete_cookie(sessions.COOKIE_NAME, path="/")
    return response


@router.post("/clerk/sign-out")
def clerk_sign_out(request: Request, clerk: ClerkUser, csrf_token: Token) -> Response:
    try:
        session.check_form(clerk, csrf_token)
    except session.FormRejected:
        return _see_other("/terminal/assist")
    session.end_session(request, request.cookies.get(sessions.COOKIE_NAME))
    response = _see_other("/terminal/clerk")
    response.delete_cookie(sessions.COOKIE_NAME, path="/")
    return response


# -- my farm, my data ---------------------------------------------------------------------------------------


@router.get("/farm")
def my_farm(request: Request, user: TerminalUser) -> Response:
    now = datetime.now(UTC)
    assert user.principal.farmer_id is not None
    with session.tenant_conn(request, user) as conn:
        farms = my_farms(conn, user.tenant_id, user.principal.farmer_id, now, Formats(language_of(request)))
    return render(request, "terminal/farm.html", {"user": user, "farms": farms, "now": now})


@router.get("/data")
def my_data(request: Request, user: TerminalUser, notice: str | None = None) -> Response:
    farmer_id = user.principal.farmer_id
    assert farmer_id is not None
    with session.tenant_conn(request, user) as conn:
        entries = log.search(conn, user.tenant_id, log.Filters(farmer_id=farmer_id), limit=DATA_PAGE)
        mine = consents.list_consents(conn, user.principal, farmer_id)
    return render(request, "terminal/data.html", {"user": user, "entries": entries, "consents": mine,
                                                  "notice": notice})


@router.post("/consents/{consent_id}/revoke")
def revoke_consent(request: Request, consent_id: str, user: TerminalUser, csrf_token: Token) -> Response:
    try:
        session.check_form(user, csrf_token)
    except session.FormRejected:
        return _see_other("/terminal/data")
    try:
        with session.tenant_conn(request, user) as conn:
            consents.revoke(conn, user.principal, consent_id)
    except ConsentError:
        return _see_other("/terminal/data?notice=revoke_failed")
    return _see_other("/terminal/data?notice=revoked")
