"""Who is signed in on a page, and signing in and out through forms.

Pages use the API's sessions (:mod:`cloud.auth.sessions`, the ``ft_session`` cookie) and its sign-in
(:mod:`cloud.auth.signin`: the same delays, lockout and audit entries as ``/api/v1/auth/*``).  What
differs from the API is how forms prove they come from our pages:

* a signed-in page's form carries the session's CSRF token in a hidden ``csrf_token`` field (the
  synchronizer token of :mod:`cloud.auth.csrf`; the API takes the same token in a header);
* a sign-in form, before any session exists, carries a random token that is also in the ``ft_form``
  cookie (HttpOnly, SameSite=Strict): another site can neither read the cookie nor set it, so it cannot
  post a sign-in form that signs the terminal into an account of its choosing.

A page that needs someone signed in raises :class:`SignInRequired`, which :mod:`cloud.web.app` turns
into a redirect to the area's sign-in page (the page asked for comes back as ``next``).  Each area
admits its own people: the terminal farmers (and clerks, who assist them), the ops console holders of
``fleet:read``, the officer console holders of ``credit:read``.

Clerk-assisted mode at the terminal: a clerk signs in with login and password, then the farmer enters
their farmer id and PIN; the farmer's session becomes the page's, the clerk's is kept in the
``ft_clerk`` cookie and comes back when the farmer signs out.  The assistance is an audit entry
(``terminal.assisted``) naming the farmer, so the farmer sees it under "My data".
"""

from __future__ import annotations

import secrets
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlencode

import psycopg
from fastapi import Depends, Request, Response
from psycopg_pool import ConnectionPool

from cloud.api.deps import CONNECTION_WAIT_S
from cloud.auth import csrf, rate_limit, sessions, signin
from cloud.auth.events import security_event
from cloud.auth.principal import Principal
from cloud.config import CloudSettings
from cloud.store.scope import scoped_connection, tenant_scope
from cloud.web.templates import translator

Area = Literal["terminal", "ops", "officer"]
FORM_COOKIE = "ft_form"
CLERK_COOKIE = "ft_clerk"
TENANT_COOKIE = "ft_tenant"
FORM_FIELD = "csrf_token"
#: the scope each staff console needs (the terminal admits farmers, and clerks who assist them)
AREA_SCOPES: dict[Area, str] = {"ops": "fleet:read", "officer": "credit:read"}


class SignInRequired(Exception):
    """The page needs someone (else) signed in: :mod:`cloud.web.app` redirects to ``location``."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


class FormRejected(Exception):
    """A form without the right CSRF token: shown as a plain message, never acted on."""


@dataclass(frozen=True)
class PageUser:
    principal: Principal
    csrf_token: str
    assisted: bool = False  # a clerk's session is kept while a farmer is signed in with their help

    @property
    def tenant_id(self) -> str:
        assert self.principal.tenant_id is not None
        return self.principal.tenant_id


def pool_of(request: Request) -> ConnectionPool:
    return request.app.state.pool


def settings_of(request: Request) -> CloudSettings:
    return request.app.state.settings


def source_of(request: Request) -> str | None:
    return request.client.host if request.client else None


def admitted(area: Area, principal: Principal) -> bool:
    if area == "terminal":
        return principal.farmer_id is not None
    return principal.can(AREA_SCOPES[area])


def is_clerk(principal: Principal) -> bool:
    """A service-point clerk (or anyone who may unlock farmers' accounts) who is not a farmer."""
    return principal.farmer_id is None and principal.can("users:unlock")


def resolve(request: Request, token: str | None) -> sessions.Session | None:
    """The live session of ``token`` (counted against the user's rate limit), or None."""
    if not token or not token.startswith(sessions.TOKEN_PREFIX):
        return None
    with pool_of(request).connection(timeout=CONNECTION_WAIT_S) as conn:
        session = sessions.resolve(conn, token, source_of(request))
        if session is None:
            return None
        tenant_scope(conn, session.principal.tenant_id)  # type: ignore[arg-type]  # users have a tenant
        decision = rate_limit.hit(conn, f"user:{session.principal.id}", rate_limit.USER_RATE_LIMIT,
                                  rate_limit.USER_RATE_WINDOW_S)
    return session if decision.allowed else None


def page_user(area: Area) -> object:
    """A dependency: the signed-in user admitted to ``area``, else :class:`SignInRequired` (to the area's
    sign-in page, with ``refused=1`` when someone not admitted is signed in; a clerk at the terminal goes to
    the assisted sign-in)."""

    def dependency(request: Request) -> PageUser:
        session = resolve(request, request.cookies.get(sessions.COOKIE_NAME))
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if session is None:
            raise SignInRequired(f"/{area}/sign-in?{urlencode({'next': here})}")
        if not admitted(area, session.principal):
            if area == "terminal" and is_clerk(session.principal):
                raise SignInRequired("/terminal/assist")
            raise SignInRequired(f"/{area}/sign-in?{urlencode({'next': here, 'refused': '1'})}")
        assisted = area == "terminal" and bool(request.cookies.get(CLERK_COOKIE))
        return PageUser(session.principal, session.csrf_secret, assisted=assisted)

    return Depends(dependency)


def clerk_user(request: Request) -> PageUser:
    """A dependency: a clerk signed in at the terminal, else :class:`SignInRequired` to the clerk's sign-in."""
    session = resolve(request, request.cookies.get(sessions.COOKIE_NAME))
    if session is None or not is_clerk(session.principal):
        raise SignInRequired("/terminal/clerk")
    return PageUser(session.principal, session.csrf_secret)


TerminalUser = Annotated[PageUser, page_user("terminal")]
OpsUser = Annotated[PageUser, page_user("ops")]
OfficerUser = Annotated[PageUser, page_user("officer")]
ClerkUser = Annotated[PageUser, Depends(clerk_user)]


def tenant_conn(request: Request, user: PageUser) -> AbstractContextManager[psycopg.Connection]:
    """A connection in the user's tenant scope (row-level security), committed at the end of the block."""
    return scoped_connection(pool_of(request), user.tenant_id, timeout=CONNECTION_WAIT_S)


# -- forms ---------------------------------------------------------------------------------------------


def check_form(user: PageUser, token: str | None) -> None:
    """FormRejected unless ``token`` is the session's CSRF token."""
    try:
        csrf.check("POST", token, user.csrf_token)
    except csrf.CsrfError:
        raise FormRejected("form token missing or wrong") from None


def sign_in_token(request: Request) -> str:
    """The sign-in form's token: the one in the ``ft_form`` cookie, or a new one (set by :func:`keep_form_token`)."""
    return request.cookies.get(FORM_COOKIE) or secrets.token_urlsafe(24)


def keep_form_token(response: Response, token: str) -> None:
    response.set_cookie(FORM_COOKIE, token, path="/", httponly=True, samesite="strict")


def check_sign_in_form(request: Request, token: str | None) -> None:
    cookie = request.cookies.get(FORM_COOKIE)
    if not cookie:
        raise FormRejected("no form cookie")
    try:
        csrf.check("POST", token, cookie)
    except csrf.CsrfError:
        raise FormRejected("form token missing or wrong") from None


def sign_in(request: Request, tenant: str, name: str, secret: str, method: signin.Method) -> signin.Outcome:
    """One sign-in attempt; a refusal's counters and audit entries are committed with it."""
    with pool_of(request).connection(timeout=CONNECTION_WAIT_S) as conn:
        return signin.sign_in(conn, tenant, name, secret, method, source_ip=source_of(request),
                              user_agent=request.headers.get("user-agent"))


def end_session(request: Request, token: str | None) -> None:
    """End a session (sign-out), in its tenant's scope; nothing when there is none."""
    session = resolve(request, token)
    if session is None or token is None:
        return
    tenant = session.principal.tenant_id
    assert tenant is not None
    with scoped_connection(pool_of(request), tenant, timeout=CONNECTION_WAIT_S) as conn:
        if sessions.end(conn, token):
            security_event(conn, session.principal, "signout", "user", session.principal.id)


def set_session(request: Request, response: Response, token: str, *, cookie: str = sessions.COOKIE_NAME) -> None:
    """The session cookie, as the API sets it: HttpOnly, SameSite=Lax, Secure unless development over http."""
    settings = settings_of(request)
    response.set_cookie(cookie, token, max_age=int(sessions.SESSION_TTL.total_seconds()), path="/", httponly=True,
                        samesite="lax", secure=not (settings.dev_mode and request.url.scheme == "http"))


def safe_next(next_path: str | None, default: str) -> str:
    """A local path to go to after signing in (never another site)."""
    if next_path and next_path.startswith("/") and not next_path.startswith("//") and "\\" not in next_path:
        return next_path
    return default


def refusal_words(request: Request, outcome: signin.Outcome, method: signin.Method) -> str:
    """A refused sign-in in plain words, in the page's language."""
    _, ngettext = translator(request)
    if outcome.status == 423:
        return _("This account is locked after too many wrong tries. A clerk at your service point can unlock it "
                 "after checking who you are.")
    if outcome.status == 429:
        seconds = outcome.retry_after_s or 1
        return ngettext("Too many wrong tries. Please wait %(num)d second and try again.",
                        "Too many wrong tries. Please wait %(num)d seconds and try again.", seconds) % {"num": seconds}
    if method == "pin":
        return _("Wrong farmer ID or PIN. Please check and try again.")
    return _("Wrong login or password. Please check and try again.")
