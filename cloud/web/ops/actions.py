"""What every change made from the ops console goes through: the form's CSRF token, the write scope, the audit
entry, and the answer (back to the page, with a notice).

A form whose token is missing or wrong, or sent by someone who may look but not change (a technician holds
``fleet:read`` only), is answered 403 with a page that says so and changes nothing.  Changes are audited
with the note the person wrote, in the same transaction as the change.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

import psycopg
from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response

from cloud.store import registry
from cloud.web import session
from cloud.web.session import PageUser
from cloud.web.templates import render

Token = Annotated[str, Form(alias=session.FORM_FIELD, max_length=200)]
Note = Annotated[str, Form(max_length=500)]
Next = Annotated[str, Form(max_length=500)]
WRITE = "fleet:write"


def refused(request: Request, user: PageUser, reason: str) -> Response:
    """The 403 page: ``reason`` form (token missing or wrong) or role (no write scope)."""
    return render(request, "ops/refused.html", {"user": user, "reason": reason}, status_code=403)


def check(request: Request, user: PageUser, token: str | None, scope: str = WRITE) -> Response | None:
    """None when the form may act; else the refusal to answer with."""
    try:
        session.check_form(user, token)
    except session.FormRejected:
        return refused(request, user, "form")
    if not user.principal.can(scope):
        return refused(request, user, "role")
    return None


def audit(conn: psycopg.Connection, user: PageUser, action: str, target_type: str, target_id: str,
          note: str = "", **detail: Any) -> None:
    values = ({"note": note.strip()} if note.strip() else {}) | detail
    registry.audit(conn, user.principal, action, target_type, target_id, user.tenant_id, detail=values)


def back(next_path: str | None, default: str, notice: str | None = None) -> RedirectResponse:
    """303 to the page the form came from (a local path only), with ``notice`` for it to show."""
    target = session.safe_next(next_path, default)
    if notice:
        target += ("&" if "?" in target else "?") + urlencode({"notice": notice})
    return RedirectResponse(target, status_code=303)


def by(user: PageUser) -> str:
    """Who made a change, as the fleet tables record it (the API's form: kind:id)."""
    return f"{user.principal.kind}:{user.principal.id}"
