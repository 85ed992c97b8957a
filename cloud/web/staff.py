"""Staff sign-in and sign-out pages of the consoles (ops, officer): tenant, login and password.

One router per console, built by :func:`staff_router`; the console's pages admit holders of its scope
(:data:`cloud.web.session.AREA_SCOPES`), and someone signed in without it is told so in plain words.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from cloud.auth import sessions
from cloud.web import session
from cloud.web.session import Area
from cloud.web.templates import render, translator

Field = Annotated[str, Form(max_length=200)]
Token = Annotated[str, Form(alias=session.FORM_FIELD, max_length=200)]


def sign_in_page(request: Request, area: Area, *, error: str | None = None, status_code: int = 200,
                 values: dict[str, str] | None = None) -> Response:
    token = session.sign_in_token(request)
    response = render(request, "base/staff_sign_in.html", {
        "area": area, "form_token": token, "error": error, "values": values or {},
        "next": session.safe_next(request.query_params.get("next"), ""),
        "refused": request.query_params.get("refused") == "1"}, status_code=status_code)
    session.keep_form_token(response, token)
    return response


def staff_router(area: Area) -> APIRouter:
    router = APIRouter(include_in_schema=False)  # included by the console's router, under its prefix

    @router.get("/sign-in")
    def show(request: Request) -> Response:
        return sign_in_page(request, area)

    @router.post("/sign-in")
    def sign_in(request: Request, tenant: Field, login: Field, password: Field, csrf_token: Token,
                next: Annotated[str, Form(max_length=500)] = "") -> Response:
        _, _n = translator(request)
        values = {"tenant": tenant.strip(), "login": login.strip()}
        try:
            session.check_sign_in_form(request, csrf_token)
        except session.FormRejected:
            return sign_in_page(request, area, status_code=403, values=values,
                                error=_("This form has expired. Please try again."))
        outcome = session.sign_in(request, values["tenant"], values["login"], password, "password")
        if outcome.session is None or outcome.principal is None:
            return sign_in_page(request, area, status_code=outcome.status, values=values,
                                error=session.refusal_words(request, outcome, "password"))
        if not session.admitted(area, outcome.principal):
            session.end_session(request, outcome.session.token)
            return sign_in_page(request, area, status_code=403, values=values,
                                error=_("This account may not use this console."))
        response = RedirectResponse(session.safe_next(next, f"/{area}"), status_code=303)
        session.set_session(request, response, outcome.session.token)
        return response

    @router.post("/sign-out")
    def sign_out(request: Request, csrf_token: Token) -> Response:
        current = session.resolve(request, request.cookies.get(sessions.COOKIE_NAME))
        if current is not None:
            try:
                session.check_form(session.PageUser(current.principal, current.csrf_secret), csrf_token)
            except session.FormRejected:
                return RedirectResponse(f"/{area}", status_code=303)
            session.end_session(request, request.cookies.get(sessions.COOKIE_NAME))
        response = RedirectResponse(f"/{area}/sign-in", status_code=303)
        response.delete_cookie(sessions.COOKIE_NAME, path="/")
        return response

    return router
