"""Users of a tenant: invite, accept the invitation (set a password and/or PIN), list, change roles, disable.

A user starts *invited*, with a one-time invite token (``fti_`` + 256 random bits, valid for
:data:`INVITE_TTL`, stored as its SHA-256).  Accepting the invitation sets the password (required for
any role but farmer) and the PIN (required for farmers, who sign in at a service point or on a basic
phone) and makes the user *active*.  *Disabled* users cannot sign in and their sessions end.

Every function but :func:`accept_invite`'s lookup runs in the tenant's scope (row-level security);
errors are the registry's (NotFound, Conflict, Invalid), which the API maps to 404, 409 and 422.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg import errors
from psycopg.rows import class_row

from cloud.auth import lockout, passwords, sessions, tokens
from cloud.auth.principal import TENANT_ROLES
from cloud.store.db import ROW_SCHEMA
from cloud.store.registry import Conflict, Invalid, NotFound
from cloud.store.scope import tenant_scope

INVITE_PREFIX = "fti_"
INVITE_TTL = timedelta(days=7)


@dataclass(frozen=True)
class User:
    """A user of a tenant (never a password, PIN or token)."""

    __pydantic_config__ = ROW_SCHEMA
    id: str
    tenant_id: str
    login: str
    display_name: str
    roles: list[str]
    farmer_id: str | None
    """the farmer's own record (farmers)"""
    status: str
    """invited, active or disabled"""
    has_pin: bool
    invite_expires_at: datetime | None
    created_by: str
    created_at: datetime
    locked: bool = False
    """too many failed sign-ins: a clerk's unlock is needed"""


_COLUMNS = ("id, tenant_id, login, display_name, roles, farmer_id, status, pin_hash IS NOT NULL AS has_pin,"
            " invite_expires_at, created_by, created_at")


def normalise_login(login: str) -> str:
    return login.strip().lower()


def check_roles(roles: Iterable[str], farmer_id: str | None) -> list[str]:
    """The roles as stored (sorted, unique); Invalid naming what is wrong."""
    wanted = sorted(set(roles))
    if not wanted:
        raise Invalid("roles: give at least one")
    unknown = [role for role in wanted if role not in TENANT_ROLES]
    if unknown:
        raise Invalid(f"roles: {', '.join(unknown)} cannot be given to a user (roles: {', '.join(TENANT_ROLES)})")
    if "farmer" in wanted and farmer_id is None:
        raise Invalid("farmer_id: required for a user with the farmer role")
    return wanted


def invite(conn: psycopg.Connection, tenant_id: str, login: str, roles: Iterable[str], created_by: str, *,
           display_name: str = "", farmer_id: str | None = None) -> tuple[User, str]:
    """A new invited user and the invite token, to hand over once."""
    login = normalise_login(login)
    stored_roles = check_roles(roles, farmer_id)
    token = tokens.new_token(INVITE_PREFIX)
    try:
        with conn.transaction(), conn.cursor(row_factory=class_row(User)) as cur:
            user = cur.execute(
                f"INSERT INTO ft.users (id, tenant_id, login, display_name, roles, farmer_id, invite_token_hash,"
                f" invite_expires_at, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, now() + %s, %s)"
                f" RETURNING {_COLUMNS}",
                (f"u_{secrets.token_hex(8)}", tenant_id, login, display_name, stored_roles, farmer_id,
                 tokens.digest(token), INVITE_TTL, created_by)).fetchone()
    except errors.UniqueViolation as exc:
        what = "farmer" if "farmer" in (exc.diag.constraint_name or "") else "login"
        raise Conflict(f"user: tenant {tenant_id!r} has a user with this {what} already") from None
    except errors.CheckViolation as exc:
        raise Invalid(f"user {login!r}: not allowed by constraint {exc.diag.constraint_name}"
                      " (login: lower-case letters, digits and _ . @ + -, at most 128)") from None
    except errors.ForeignKeyViolation:
        raise NotFound(f"tenant {tenant_id!r} not found") from None
    assert user is not None
    return user, token


def accept_invite(conn: psycopg.Connection, token: str, password: str | None, pin: str | None) -> User:
    """Set the password and/or PIN of an invited user and make them active (leaves the transaction in the
    user's tenant scope).  NotFound for an unknown, used or expired token; WeakSecret for a weak one."""
    row = conn.execute("SELECT id, tenant_id, login, roles, invite_expires_at > now() FROM ft.auth_invite(%s)",
                       (tokens.digest(token),)).fetchone()
    if row is None or not row[4]:
        raise NotFound("invitation not found, already used or expired: ask for a new one")
    user_id, tenant_id, login, roles, _ = row
    if password is None and set(roles) != {"farmer"}:
        raise Invalid("password: required for these roles")
    if pin is None and "farmer" in roles:
        raise Invalid("pin: required for a farmer")
    if password is not None:
        passwords.check_password(password, login)
    if pin is not None:
        passwords.check_pin(pin)
    tenant_scope(conn, tenant_id)
    with conn.cursor(row_factory=class_row(User)) as cur:
        user = cur.execute(
            f"UPDATE ft.users SET status = 'active', password_hash = %s, pin_hash = %s, invite_token_hash = NULL,"
            f" invite_expires_at = NULL WHERE id = %s AND status = 'invited' RETURNING {_COLUMNS}",
            (passwords.hash_secret(password) if password else None, passwords.hash_secret(pin) if pin else None,
             user_id)).fetchone()
    if user is None:  # accepted at the same moment by another request
        raise NotFound("invitation not found, already used or expired: ask for a new one")
    return user


def get_user(conn: psycopg.Connection, tenant_id: str, user_id: str) -> User:
    with conn.cursor(row_factory=class_row(User)) as cur:
        user = cur.execute(f"SELECT {_COLUMNS} FROM ft.users WHERE tenant_id = %s AND id = %s",
                           (tenant_id, user_id)).fetchone()
    if user is None:
        raise NotFound(f"user {user_id!r} not found in tenant {tenant_id!r}")
    return _with_lock(user, lockout.locked(conn, tenant_id))


def list_users(conn: psycopg.Connection, tenant_id: str) -> list[User]:
    with conn.cursor(row_factory=class_row(User)) as cur:
        found = cur.execute(f"SELECT {_COLUMNS} FROM ft.users WHERE tenant_id = %s ORDER BY login",
                            (tenant_id,)).fetchall()
    locked = lockout.locked(conn, tenant_id)
    return [_with_lock(user, locked) for user in found]


def update(conn: psycopg.Connection, tenant_id: str, user_id: str, *, roles: Iterable[str] | None = None,
           display_name: str | None = None) -> User:
    """Change a user's roles and/or display name (roles take effect at the user's next request)."""
    current = get_user(conn, tenant_id, user_id)
    new_roles = check_roles(roles, current.farmer_id) if roles is not None else current.roles
    with conn.cursor(row_factory=class_row(User)) as cur:
        user = cur.execute(f"UPDATE ft.users SET roles = %s, display_name = %s WHERE tenant_id = %s AND id = %s"
                           f" RETURNING {_COLUMNS}",
                           (new_roles, current.display_name if display_name is None else display_name,
                            tenant_id, user_id)).fetchone()
    assert user is not None
    return _with_lock(user, lockout.locked(conn, tenant_id))


def disable(conn: psycopg.Connection, tenant_id: str, user_id: str) -> User:
    """Disable a user and end their sessions (again: no change)."""
    get_user(conn, tenant_id, user_id)
    with conn.cursor(row_factory=class_row(User)) as cur:
        user = cur.execute(f"UPDATE ft.users SET status = 'disabled', invite_token_hash = NULL WHERE tenant_id = %s"
                           f" AND id = %s RETURNING {_COLUMNS}", (tenant_id, user_id)).fetchone()
    assert user is not None
    sessions.end_all(conn, user_id)
    return user


def signin_accounts(user: User) -> list[str]:
    """The names failed sign-ins of this user are counted under (:mod:`cloud.auth.lockout`)."""
    return [user.login] + ([lockout.farmer_account(user.farmer_id)] if user.farmer_id else [])


def _with_lock(user: User, locked: set[str]) -> User:
    is_locked = any(account in locked for account in signin_accounts(user))
    return user if is_locked == user.locked else User(**{**user.__dict__, "locked": is_locked})
