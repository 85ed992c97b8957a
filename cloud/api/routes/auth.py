"""Signing in and out: sessions for people (password, or a farmer's PIN), ``/auth/me``, accepting invitations.

Sign-in answers with the session token (apps send it as ``Authorization: Bearer``) and sets the same as
the ``ft_session`` cookie for web pages: HttpOnly, SameSite=Lax, and Secure unless development mode
serves plain http.  Cookie-authenticated writes need the CSRF token of the answer (``X-CSRF-Token``).
Refused sign-ins answer 401, 429 (``Retry-After``) during a delay after failures, 423 when the account
waits for a clerk's unlock (cloud/auth/lockout.py).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status

from cloud.api.deps import AnonymousConnDep, PrincipalDep, SettingsDep, TenantConnDep
from cloud.api.models import FarmerSignIn, InviteAccept, Me, SignedIn, SignIn
from cloud.auth import sessions, signin, users
from cloud.auth.events import security_event
from cloud.auth.passwords import WeakSecret
from cloud.auth.principal import Principal
from cloud.store.registry import Invalid

router = APIRouter(prefix="/auth", tags=["auth"])

_REFUSALS = {401: {"description": "wrong credentials"}, 423: {"description": "locked: a clerk must unlock it"},
             429: {"description": "too many failures: wait Retry-After seconds"}}


def me_of(principal: Principal, csrf_token: str | None = None) -> Me:
    return Me(kind=principal.kind, id=principal.id, tenant_id=principal.tenant_id, roles=sorted(principal.roles),
              scopes=sorted(principal.scopes), farmer_id=principal.farmer_id, csrf_token=csrf_token)


def _signed_in(request: Request, response: Response, conn: AnonymousConnDep, settings: SettingsDep,
               outcome: signin.Outcome) -> SignedIn:
    if outcome.session is None or outcome.principal is None:
        conn.commit()  # the failure counters and security events stay, although the answer is an error
        headers = {"Retry-After": str(outcome.retry_after_s)} if outcome.retry_after_s else None
        if outcome.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        raise HTTPException(outcome.status, outcome.message, headers=headers)
    session = outcome.session
    response.set_cookie(sessions.COOKIE_NAME, session.token, max_age=int(sessions.SESSION_TTL.total_seconds()),
                        path="/", httponly=True, samesite="lax",
                        secure=not (settings.dev_mode and request.url.scheme == "http"))
    return SignedIn(session_token=session.token, csrf_token=session.csrf_token, expires_at=session.expires_at,
                    me=me_of(outcome.principal, session.csrf_token))


def _source(request: Request) -> str | None:
    return request.client.host if request.client else None


@router.post("/sign-in", response_model=SignedIn, responses=_REFUSALS,
             summary="Sign in with a login and password: a session token, also set as the ft_session cookie")
def sign_in(body: SignIn, request: Request, response: Response, conn: AnonymousConnDep,
            settings: SettingsDep) -> SignedIn:
    outcome = signin.sign_in(conn, body.tenant, body.login, body.password, "password", source_ip=_source(request),
                             user_agent=request.headers.get("user-agent"))
    return _signed_in(request, response, conn, settings, outcome)


@router.post("/farmer-sign-in", response_model=SignedIn, responses=_REFUSALS,
             summary="A farmer signs in with their farmer id and PIN")
def farmer_sign_in(body: FarmerSignIn, request: Request, response: Response, conn: AnonymousConnDep,
                   settings: SettingsDep) -> SignedIn:
    outcome = signin.sign_in(conn, body.tenant, body.farmer_id, body.pin, "pin", source_ip=_source(request),
                             user_agent=request.headers.get("user-agent"))
    return _signed_in(request, response, conn, settings, outcome)


@router.post("/sign-out", status_code=status.HTTP_204_NO_CONTENT, summary="End this session")
def sign_out(request: Request, principal: PrincipalDep, conn: TenantConnDep) -> Response:
    authorization = request.headers.get("authorization", "")
    token = authorization.partition(" ")[2].strip() or request.cookies.get(sessions.COOKIE_NAME, "")
    if principal.kind != "user" or not sessions.end(conn, token):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "only a session can sign out (API keys are revoked)")
    security_event(conn, principal, "signout", "user", principal.id)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(sessions.COOKIE_NAME, path="/")
    return response


@router.get("/me", response_model=Me, summary="Who this request is from and what it may do")
def read_me(request: Request, principal: PrincipalDep, conn: TenantConnDep) -> Me:
    csrf_token = None
    token = request.cookies.get(sessions.COOKIE_NAME)
    if principal.kind == "user" and token and "authorization" not in request.headers:
        session = sessions.resolve(conn, token, principal.source_ip)
        csrf_token = session.csrf_secret if session else None
    return me_of(principal, csrf_token)


@router.post("/accept-invite", response_model=users.User,
             summary="Accept an invitation: set a password (and a PIN, for farmers); then sign in")
def accept_invite(body: InviteAccept, request: Request, conn: AnonymousConnDep) -> users.User:
    try:
        user = users.accept_invite(conn, body.token, body.password, body.pin)
    except WeakSecret as exc:
        raise Invalid(str(exc)) from None
    security_event(conn, None, "user.activated", "user", user.id, tenant_id=user.tenant_id,
                   source_ip=_source(request))
    return user
