"""What the API accepts (``…Create``) and returns: never a stored key or password hash.

Stored rows are answered as the store's own row types (:class:`cloud.store.series.Point`, ...),
which hold no secret; the models here are what the store has no type for.  Secrets appear in
exactly one place, the answer to the request that created them (:class:`KeyRotated`, and the
registry's ``GatewayCreated`` and ``DeviceCreated``); they cannot be read back.  The registry's
models (Base/Create/Update/Public per entity) are in :mod:`cloud.api.schemas.registry`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from cloud.store.ingest_status import BatchTotals
from cloud.store.series import Point

Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", examples=["gw-kisumu-01"],
                             description="1-64 characters of A-Z a-z 0-9 - _ .")]
KeyHex = Annotated[str, Field(pattern=r"^([0-9a-fA-F]{2}){16,64}$", description="16-64 bytes as hex")]


class _Create(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeyRotate(_Create):
    key_hex: KeyHex | None = Field(default=None, description="the new key; generated when absent")


class KeyRotated(BaseModel):
    owner_kind: str
    owner_id: str
    key_epoch: int
    key_hex: str


class ErrorBody(BaseModel):
    """Every error: a short code, a sentence for people and, for invalid requests, the fields at fault."""

    error: str
    message: str
    fields: list[dict[str, object]] | None = None


class SeriesPublic(BaseModel):
    metric: str
    start: datetime
    end: datetime
    bucket: str = Field(description="'raw', or the bucket length in seconds such as '3600s'")
    points: list[Point]


class DeadLetterTotals(BaseModel):
    total: int
    by_reason: dict[str, int]


class IngestStatus(BaseModel):
    since: datetime | None
    batches: BatchTotals
    dead_letters: DeadLetterTotals
    workers: list[dict[str, object]] = Field(description="each ingest worker's last published counters")


# -- accounts: sign-in, users, API keys (cloud/auth) ------------------------------------------------------

Login = Annotated[str, Field(min_length=1, max_length=128, examples=["amina.w"],
                             description="lower-case letters, digits and _ . @ + - (compared in lower case)")]
RoleName = Literal["farmer", "clerk", "technician", "credit_officer", "ops", "tenant_admin"]


class SignIn(_Create):
    tenant: Ident
    login: Login
    password: str = Field(min_length=1, max_length=256)


class FarmerSignIn(_Create):
    tenant: Ident
    farmer_id: Ident
    pin: str = Field(min_length=1, max_length=16, description="the farmer's 6-digit PIN")


class Me(BaseModel):
    """Who the request is from, and what they may do."""

    kind: Literal["user", "api_key", "platform_admin"]
    id: str
    tenant_id: str | None
    roles: list[str]
    scopes: list[str]
    farmer_id: str | None
    csrf_token: str | None = Field(default=None, description="cookie sessions: send it as X-CSRF-Token on writes")


class SignedIn(BaseModel):
    """A new session: the token for ``Authorization: Bearer`` (apps) — the same is set as the ft_session
    cookie (web pages, which send ``csrf_token`` as X-CSRF-Token on writes)."""

    session_token: str
    csrf_token: str
    expires_at: datetime
    me: Me


class UserBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    display_name: str = Field(default="", max_length=200)
    roles: list[RoleName] = Field(min_length=1)


class UserCreate(UserBase):
    """An invitation: the user sets a password (and a PIN, for farmers) with the invite token."""

    login: Login
    farmer_id: Ident | None = Field(default=None, description="the farmer's own record (required for farmers)")


class UserUpdate(_Create):
    display_name: str | None = Field(default=None, max_length=200)
    roles: list[RoleName] | None = Field(default=None, min_length=1)


class InviteAccept(_Create):
    token: str = Field(min_length=1, max_length=200, description="the invite token (fti_...)")
    password: str | None = Field(default=None, max_length=256, description="required for all roles but farmer")
    pin: str | None = Field(default=None, max_length=16, description="6 digits; required for farmers")


class Unlock(_Create):
    identity_checked: str = Field(min_length=3, max_length=500, examples=["national ID card seen"],
                                  description="how the person's identity was checked (kept in the audit log)")


class ApiKeyCreate(_Create):
    name: str = Field(min_length=1, max_length=200, examples=["bank mobile app"])
    scopes: list[str] = Field(min_length=1, examples=[["registry:read", "series:read"]],
                              description="any scope but users:admin and users:unlock")
    expires_at: datetime | None = Field(default=None, description="none: until revoked")
    rate_limit: int = Field(default=600, ge=1, le=1_000_000, description="requests per rate window")
    rate_window_s: int = Field(default=60, ge=1, le=86_400)
