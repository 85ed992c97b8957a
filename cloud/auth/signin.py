"""Signing in: a login and password, or a farmer id and PIN, in a named tenant → a session.

One transaction per attempt, in the named tenant's scope from the start: the request names the tenant,
and everything the attempt reads or writes belongs to it (the user's row through ``ft.auth_user_by_*``,
the tenant's failure counters, the new session) except the per-source counter, a platform table.  The
outcome is returned, not raised, so the caller commits the counters and the audit entries of a refusal
before answering it.

Every refusal of a wrong secret reads the same ("wrong login or password") and takes the same time
whether the account exists, is disabled or only invited (:func:`cloud.auth.passwords.verify` hashes
against a dummy when there is nothing to check against).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import psycopg

from cloud.auth import lockout, passwords, scopes, sessions
from cloud.auth.events import security_event
from cloud.auth.principal import Principal
from cloud.store.scope import platform_scope, tenant_scope

Method = Literal["password", "pin"]


@dataclass(frozen=True)
class Outcome:
    """A session, or the HTTP status, message and Retry-After of the refusal."""

    principal: Principal | None = None
    session: sessions.NewSession | None = None
    status: int = 200
    message: str = ""
    retry_after_s: int | None = None


_WRONG = {"password": "wrong login or password", "pin": "wrong farmer id or PIN"}
_LOOKUP = {"password": "ft.auth_user_by_login", "pin": "ft.auth_user_by_farmer"}


def sign_in(conn: psycopg.Connection, tenant_id: str, name: str, secret: str, method: Method, *,
            source_ip: str | None, user_agent: str | None) -> Outcome:
    """Try one sign-in; ``name`` is the login (password) or the farmer id (PIN)."""
    tenant_scope(conn, tenant_id)
    known = conn.execute("SELECT EXISTS (SELECT FROM ft.tenants WHERE id = %s)", (tenant_id,)).fetchone()
    event = _Events(conn, tenant_id, tenant_known=bool(known and known[0]), source_ip=source_ip)
    if method == "password":
        name = name.strip().lower()
        account = name
    else:
        account = lockout.farmer_account(name)
    detail = {"method": method, "account": account}
    gate = lockout.check(conn, tenant_id, account, source_ip)
    if gate.locked:
        event("signin.refused_locked", account, detail)
        return Outcome(status=423, message="this account is locked after too many failed sign-ins: a clerk at your "
                                           "service point can unlock it after checking your identity")
    if not gate.allowed:
        event("signin.throttled", account, {**detail, "by": gate.by, "retry_after_s": gate.retry_after_s})
        return Outcome(status=429, message=f"too many failed sign-ins: try again in {gate.retry_after_s} s",
                       retry_after_s=gate.retry_after_s)

    row = conn.execute(f"SELECT id, roles, farmer_id, secret_hash, status FROM {_LOOKUP[method]}(%s, %s)",
                       (tenant_id, name)).fetchone()
    user_id, roles, farmer_id, stored_hash, status = row if row is not None else (None, [], None, None, None)
    matched = passwords.verify(stored_hash if status == "active" else None, secret)
    if not matched or user_id is None:
        failure = lockout.failed(conn, tenant_id, account, source_ip)
        event("signin.failed", account, {**detail, "failures": failure.account_failures})
        if failure.locked_now:
            event("signin.locked", account, {**detail, "failures": failure.account_failures})
        return Outcome(status=401, message=_WRONG[method])

    lockout.succeeded(conn, tenant_id, account)
    assert stored_hash is not None
    if passwords.needs_rehash(stored_hash):
        column = "password_hash" if method == "password" else "pin_hash"
        conn.execute(f"UPDATE ft.users SET {column} = %s WHERE id = %s", (passwords.hash_secret(secret), user_id))
    principal = scopes.user_principal(user_id, tenant_id, roles, farmer_id, source_ip)
    session = sessions.create(conn, principal, user_agent)
    security_event(conn, principal, "signin.ok", "user", user_id, detail=detail)
    return Outcome(principal=principal, session=session)


class _Events:
    """Security events of one attempt without a principal: in the named tenant's audit log, or, when no such
    tenant exists, as a platform event naming it (written in platform scope, then back to the tenant's)."""

    def __init__(self, conn: psycopg.Connection, tenant_id: str, *, tenant_known: bool, source_ip: str | None):
        self.conn, self.tenant_id, self.tenant_known, self.source_ip = conn, tenant_id, tenant_known, source_ip

    def __call__(self, action: str, account: str, detail: dict[str, object]) -> None:
        if self.tenant_known:
            security_event(self.conn, None, action, "account", account, tenant_id=self.tenant_id,
                           source_ip=self.source_ip, detail=detail)
            return
        platform_scope(self.conn)
        security_event(self.conn, None, action, "account", account, source_ip=self.source_ip,
                       detail={**detail, "unknown_tenant": self.tenant_id})
        tenant_scope(self.conn, self.tenant_id)
