"""A tenant's accounts: users (invite, list, change roles, disable, a clerk's unlock) and partners' API keys.

Tenant admins (scope ``users:admin``) manage users and keys; a clerk (``users:unlock``) unlocks an account
locked after failed sign-ins, once they have checked the person's identity, which the request states
and the audit log keeps.  Invite tokens and API keys are in the answer to their creation only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, status
from pydantic import BaseModel

from cloud.api.deps import TenantConnDep, require
from cloud.api.models import ApiKeyCreate, Unlock, UserCreate, UserUpdate
from cloud.auth import api_keys, lockout, users
from cloud.auth.events import security_event
from cloud.auth.principal import Principal
from cloud.store.registry import Invalid, NotFound

router = APIRouter(prefix="/tenants/{tenant}", tags=["accounts"])
Admin = Annotated[Principal, require("users:admin")]
Unlocker = Annotated[Principal, require("users:unlock")]


class UserInvited(BaseModel):
    """The invited user and the invite token, shown this once: hand it to the person (or print it as a link)."""

    user: users.User
    invite_token: str


class Unlocked(BaseModel):
    user: users.User
    unlocked: list[str]
    """the sign-in names that were locked (login, farmer:<id>)"""


class ApiKeyCreated(BaseModel):
    """The new key's record and the key itself, shown this once."""

    api_key: api_keys.ApiKey
    key: str


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserInvited,
             summary="Invite a user: the invite token is returned this once")
def invite_user(tenant: str, body: UserCreate, principal: Admin, conn: TenantConnDep) -> UserInvited:
    user, token = users.invite(conn, tenant, body.login, body.roles, principal.id, display_name=body.display_name,
                               farmer_id=body.farmer_id)
    security_event(conn, principal, "user.invited", "user", user.id, tenant_id=tenant,
                   detail={"login": user.login, "roles": user.roles})
    return UserInvited(user=user, invite_token=token)


@router.get("/users", response_model=list[users.User], summary="The tenant's users (a clerk: to find one to unlock)")
def read_users(tenant: str, principal: Unlocker, conn: TenantConnDep) -> list[users.User]:
    return users.list_users(conn, tenant)


@router.get("/users/{user_id}", response_model=users.User, summary="One user")
def read_user(tenant: str, user_id: str, principal: Unlocker, conn: TenantConnDep) -> users.User:
    return users.get_user(conn, tenant, user_id)


@router.patch("/users/{user_id}", response_model=users.User, summary="Change a user's roles or display name")
def update_user(tenant: str, user_id: str, body: UserUpdate, principal: Admin, conn: TenantConnDep) -> users.User:
    before = users.get_user(conn, tenant, user_id)
    user = users.update(conn, tenant, user_id, roles=body.roles, display_name=body.display_name)
    if user.roles != before.roles:
        security_event(conn, principal, "user.roles_changed", "user", user_id, tenant_id=tenant,
                       detail={"from": before.roles, "to": user.roles})
    return user


@router.post("/users/{user_id}/disable", response_model=users.User,
             summary="Disable a user: no more sign-ins, and their sessions end")
def disable_user(tenant: str, user_id: str, principal: Admin, conn: TenantConnDep) -> users.User:
    if user_id == principal.id:
        raise Invalid("a user cannot disable themselves")
    user = users.disable(conn, tenant, user_id)
    security_event(conn, principal, "user.disabled", "user", user_id, tenant_id=tenant)
    return user


@router.post("/users/{user_id}/unlock", response_model=Unlocked,
             summary="Unlock an account locked after failed sign-ins, having checked the person's identity")
def unlock_user(tenant: str, user_id: str, body: Unlock, principal: Unlocker, conn: TenantConnDep) -> Unlocked:
    user = users.get_user(conn, tenant, user_id)
    unlocked = lockout.unlock(conn, tenant, users.signin_accounts(user))
    security_event(conn, principal, "account.unlocked", "user", user_id, tenant_id=tenant,
                   detail={"identity_checked": body.identity_checked, "accounts": unlocked})
    return Unlocked(user=users.get_user(conn, tenant, user_id), unlocked=unlocked)


@router.post("/api-keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated,
             summary="Create an API key for a partner: the key is returned this once")
def create_api_key(tenant: str, body: ApiKeyCreate, principal: Admin, conn: TenantConnDep) -> ApiKeyCreated:
    if body.expires_at is not None and body.expires_at <= datetime.now(body.expires_at.tzinfo):
        raise Invalid("expires_at: must be in the future")
    try:
        record, key = api_keys.create(conn, tenant, body.name, body.scopes, principal.id, expires_at=body.expires_at,
                                      rate_limit=body.rate_limit, rate_window_s=body.rate_window_s)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    security_event(conn, principal, "api_key.created", "api_key", record.id, tenant_id=tenant,
                   detail={"name": record.name, "scopes": record.scopes, "expires_at": str(record.expires_at)})
    return ApiKeyCreated(api_key=record, key=key)


@router.get("/api-keys", response_model=list[api_keys.ApiKey], summary="The tenant's API keys (never the keys)")
def read_api_keys(tenant: str, principal: Admin, conn: TenantConnDep) -> list[api_keys.ApiKey]:
    return api_keys.list_keys(conn, tenant)


@router.delete("/api-keys/{key_id}", response_model=api_keys.ApiKey, summary="Revoke an API key at once")
def revoke_api_key(tenant: str, key_id: str, principal: Admin, conn: TenantConnDep) -> api_keys.ApiKey:
    record = api_keys.revoke(conn, tenant, key_id)
    if record is None:
        raise NotFound(f"API key {key_id!r} not found in tenant {tenant!r}")
    security_event(conn, principal, "api_key.revoked", "api_key", key_id, tenant_id=tenant)
    return record
