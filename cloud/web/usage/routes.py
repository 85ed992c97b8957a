"""The terminal's side of usage events: the question (asked once, yes or no), the consent page, and the endpoint
the page's small script (cloud/web/static/usage.js) sends its events to with ``navigator.sendBeacon``.

The endpoint is a form post carrying the session's CSRF token like every other form, so another site can
neither send events in a farmer's name nor read anything back.  The terminal's layout asks
:func:`page_state` (a template global, see :func:`cloud.web.app.mount`) whether to show the question and
whether to load the script: a farmer without an active consent never sends an event.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from pydantic import ValidationError

from cloud.consent import store as consents
from cloud.consent import texts
from cloud.consent.errors import ConsentError, PinRejected
from cloud.web import session
from cloud.web.session import PageUser, TerminalUser
from cloud.web.templates import language_of, render, translator
from cloud.web.usage import events

router = APIRouter(prefix="/terminal", include_in_schema=False)
Token = Annotated[str, Form(alias=session.FORM_FIELD, max_length=200)]
Next = Annotated[str, Form(max_length=500)]
PAGE = "/terminal/service-metrics"
ENDPOINT = "/terminal/usage-events"
_STATE = "usage_state"


def page_state(request: Request, user: PageUser) -> events.UsageState | None:
    """The signed-in farmer's usage state (once per request), or None for anyone else."""
    if user.principal.farmer_id is None:
        return None
    cached = getattr(request.state, _STATE, None)
    if cached is None:
        with session.tenant_conn(request, user) as conn:
            cached = events.state(conn, user.principal)
        setattr(request.state, _STATE, cached)
    return cached


def _consent_text(request: Request, user: PageUser) -> str:
    with session.tenant_conn(request, user) as conn:
        row = conn.execute("SELECT name FROM ft.tenants WHERE id = %s", (user.tenant_id,)).fetchone()
    until = datetime.now(UTC) + timedelta(days=events.CONSENT_DAYS)
    return texts.render(events.PURPOSE, [events.SCOPE], language_of(request), tenant=row[0] if row else user.tenant_id,
                        until=until)


def _consent_page(request: Request, user: PageUser, next_path: str, *, error: str | None = None,
                  status_code: int = 200) -> Response:
    return render(request, "terminal/usage_consent.html", {
        "user": user, "text": _consent_text(request, user), "next": next_path, "error": error,
        "text_version": texts.VERSION}, status_code=status_code)


@router.get("/service-metrics")
def consent_page(request: Request, user: TerminalUser) -> Response:
    return _consent_page(request, user, session.safe_next(request.query_params.get("next"), "/terminal/farm"))


@router.post("/service-metrics")
def answer(request: Request, user: TerminalUser, csrf_token: Token, answer: Annotated[str, Form(pattern="^(yes|no)$")],
           pin: Annotated[str, Form(max_length=200)] = "", next: Next = "") -> Response:
    """The farmer's answer: yes (confirmed with their PIN) records the consent, no is remembered; both end the
    question."""
    back = session.safe_next(next, "/terminal/farm")
    try:
        session.check_form(user, csrf_token)
    except session.FormRejected:
        return RedirectResponse(back, status_code=303)
    _, _n = translator(request)
    if answer == "yes" and not pin:
        return _consent_page(request, user, back, status_code=422,
                             error=_("Please enter your PIN to say yes, or press No."))
    error = None
    with session.tenant_conn(request, user) as conn:
        if answer == "yes":
            try:
                consents.grant(conn, user.principal, user.principal.farmer_id or "", events.PURPOSE, [events.SCOPE],
                               days=events.CONSENT_DAYS, pin=pin, text_version=texts.VERSION,
                               language=language_of(request))
            except PinRejected:
                error = _("Wrong PIN. Please try again.")  # the refusal is counted and audited, then committed
            except ConsentError:
                error = _("This could not be recorded. Please try again.")
        if error is None:
            events.record_answer(conn, user.principal, "yes" if answer == "yes" else "no")
    if error is not None:
        return _consent_page(request, user, back, status_code=403, error=error)
    return RedirectResponse(back, status_code=303)


@router.post("/usage-events", status_code=204)
def receive(request: Request, user: TerminalUser, csrf_token: Token,
            events_json: Annotated[str, Form(alias="events", max_length=20_000)]) -> Response:
    """A page's events (a JSON list in the ``events`` field); kept only under the farmer's active consent."""
    try:
        session.check_form(user, csrf_token)
    except session.FormRejected:
        return PlainTextResponse("form token missing or wrong", status_code=403)
    try:
        batch = events.Batch.model_validate({"events": json.loads(events_json)})
    except (ValueError, ValidationError) as exc:
        return PlainTextResponse(f"events: {exc}", status_code=422)
    if user.principal.farmer_id is None:
        return Response(status_code=204)
    with session.tenant_conn(request, user) as conn:
        usage = events.state(conn, user.principal)
        try:
            events.keep(conn, request.app.state.page_routes, user.principal, usage, batch, assisted=user.assisted)
        except events.BadEvents as exc:
            return PlainTextResponse(str(exc), status_code=422)
    return Response(status_code=204)
