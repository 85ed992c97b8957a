"""Claim codes: a technician types a short code on site, and the node lands on the right farm and field.

A clerk or an admin makes a code for a farm (and optionally a field) when the installation is planned;
the code is shown once and only its SHA-256 is kept.  On site the technician redeems it with the node's
id: the node is put on the code's farm and field, its installation (place, time) is recorded, a ``moved``
event goes into its maintenance history, and the code is spent.  A code is used once, expires
(:data:`DEFAULT_TTL`, at most :data:`MAX_TTL`) and can be revoked.

Codes are 8 characters of Crockford's base32 (no I, L, O, U: nothing to misread), shown as ``ABCD-EFGH``
(40 bits).  Typing is forgiving: case, spaces and hyphens are ignored, O reads as 0 and I or L as 1.
Guessing is bounded by the redemption rate limit (:data:`REDEEM_LIMIT` attempts per
:data:`REDEEM_WINDOW_S` per caller, counted in PostgreSQL by cloud.auth.rate_limit) and the expiry.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import class_row

from cloud.auth import rate_limit
from cloud.auth.principal import Principal
from cloud.store.db import ROW_SCHEMA
from cloud.store.registry import (
    Conflict,
    Device,
    Invalid,
    NotFound,
    _all,
    _found,
    _integrity,
    _paged,
    audit,
    get_device,
    get_farm,
    update_device,
)

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32
CODE_LENGTH = 8
DEFAULT_TTL = timedelta(days=7)
MAX_TTL = timedelta(days=90)
REDEEM_LIMIT, REDEEM_WINDOW_S = 10, 600
_READS_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})


@dataclass(frozen=True)
class ClaimCode:
    """A claim code's record (never the code: it is shown once, when made)."""

    __pydantic_config__ = ROW_SCHEMA
    id: str
    tenant_id: str
    farm_id: str
    field_id: str | None
    note: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    used_by: str | None
    used_by_device: str | None
    revoked_at: datetime | None
    status: str
    """open, used, expired or revoked"""


_COLUMNS = ("id, tenant_id, farm_id, field_id, note, created_by, created_at, expires_at, used_at, used_by,"
            " used_by_device, revoked_at, CASE WHEN used_at IS NOT NULL THEN 'used' WHEN revoked_at IS NOT NULL"
            " THEN 'revoked' WHEN expires_at <= now() THEN 'expired' ELSE 'open' END AS status")
_CODE = f"SELECT {_COLUMNS} FROM ft.claim_codes"


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return f"{raw[:4]}-{raw[4:]}"


def normalise(code: str) -> str:
    """The code as made, from what a person typed; Invalid when it cannot be one."""
    cleaned = "".join(code.split()).replace("-", "").upper().translate(_READS_AS)
    if len(cleaned) != CODE_LENGTH or any(c not in ALPHABET for c in cleaned):
        raise Invalid(f"claim code: {CODE_LENGTH} letters and digits, like ABCD-EFGH; got {code!r}")
    return cleaned


def code_hash(code: str) -> bytes:
    return hashlib.sha256(normalise(code).encode()).digest()


def create_code(conn: psycopg.Connection, tenant: str, farm_id: str, *, field_id: str | None = None, note: str = "",
                ttl: timedelta = DEFAULT_TTL, actor: Principal) -> tuple[ClaimCode, str]:
    """A new code for ``farm_id`` (and ``field_id``, which must be on it): its record and the code itself."""
    if not timedelta(minutes=5) <= ttl <= MAX_TTL:
        raise Invalid(f"a claim code lives 5 minutes to {MAX_TTL.days} days; got {ttl}")
    with conn.transaction():
        farm = get_farm(conn, tenant, farm_id)
        if field_id is not None:
            row = conn.execute("SELECT farm_id FROM ft.fields WHERE tenant_id = %s AND id = %s",
                               (tenant, field_id)).fetchone()
            if row is None:
                raise NotFound(f"field {field_id!r} not found in tenant {tenant!r}")
            if row[0] != farm_id:
                raise Invalid(f"field {field_id!r} is on farm {row[0]!r}, not on farm {farm_id!r}")
        code, ident = new_code(), f"cc_{secrets.token_hex(8)}"
        expires = datetime.now(UTC) + ttl
        with _integrity("claim code"), conn.cursor(row_factory=class_row(ClaimCode)) as cur:
            cur.execute("INSERT INTO ft.claim_codes (id, tenant_id, code_hash, farm_id, field_id, note, created_by,"
                        f" expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                        (ident, tenant, code_hash(code), farm_id, field_id, note, actor.id, expires))
            record = cur.fetchone()
        assert record is not None
        audit(conn, actor, "claim_code.created", "claim_code", ident, tenant, farmer_id=farm.farmer_id,
              detail={"farm_id": farm_id, "field_id": field_id, "expires_at": expires})
    return record, code


def get_code(conn: psycopg.Connection, tenant: str, code_id: str) -> ClaimCode:
    return _found(conn, ClaimCode, _CODE + " WHERE tenant_id = %s AND id = %s", (tenant, code_id),
                  f"claim code {code_id!r} not found in tenant {tenant!r}")


def list_codes(conn: psycopg.Connection, tenant: str, *, farm_id: str | None = None, limit: int | None = None,
               after: str | None = None) -> list[ClaimCode]:
    query, params = _CODE + " WHERE tenant_id = %s", [tenant]
    if farm_id is not None:
        query, params = query + " AND farm_id = %s", [*params, farm_id]
    return _all(conn, ClaimCode, *_paged(query, params, "id", limit, after))


def revoke_code(conn: psycopg.Connection, tenant: str, code_id: str, *, actor: Principal) -> ClaimCode:
    """Revoke an unused code (revoking twice keeps the first time)."""
    with conn.transaction():
        code = get_code(conn, tenant, code_id)
        if code.used_at is not None:
            raise Conflict(f"claim code {code_id!r} was used already (by device {code.used_by_device!r})")
        if code.revoked_at is None:
            conn.execute("UPDATE ft.claim_codes SET revoked_at = now() WHERE tenant_id = %s AND id = %s",
                         (tenant, code_id))
            audit(conn, actor, "claim_code.revoked", "claim_code", code_id, tenant)
    return get_code(conn, tenant, code_id)


def count_attempt(conn: psycopg.Connection, actor: Principal) -> rate_limit.Decision:
    """Count one redemption attempt of ``actor`` (commit it before answering, so refusals count too)."""
    return rate_limit.hit(conn, f"claim:{actor.kind}:{actor.id}", REDEEM_LIMIT, REDEEM_WINDOW_S)


@dataclass(frozen=True)
class Install:
    """Where and when a device is installed, as the technician reports it on site."""

    note: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    at: datetime | None = None  # default: now
    gateway_id: str | None = None  # the gateway it reports through, when it changes


def redeem(conn: psycopg.Connection, tenant: str, code: str, device_id: str, install: Install, *,
           actor: Principal) -> tuple[ClaimCode, Device]:
    """Spend ``code`` on ``device_id`` (a device of the tenant): the device goes to the code's farm and field.

    NotFound for a code that does not exist (or is another tenant's), Conflict for one used, revoked or
    expired; either way nothing changes.  The caller counts the attempt first (:func:`count_attempt`)."""
    hashed = code_hash(code)
    with conn.transaction():
        found = conn.execute("SELECT id FROM ft.claim_codes WHERE tenant_id = %s AND code_hash = %s FOR UPDATE",
                             (tenant, hashed)).fetchone()
        if found is None:
            raise NotFound("claim code not found: check the letters (each code is for one tenant and one use)")
        record = get_code(conn, tenant, found[0])
        if record.status != "open":
            when = {"used": record.used_at, "revoked": record.revoked_at, "expired": record.expires_at}[record.status]
            by = f" by device {record.used_by_device!r}" if record.status == "used" else ""
            raise Conflict(f"claim code {record.id} was {record.status}{by} on {when:%Y-%m-%d %H:%M} UTC")
        get_device(conn, tenant, device_id)
        changes: dict[str, object] = {"farm_id": record.farm_id, "field_id": record.field_id,
                                      "installed_at": install.at or datetime.now(UTC)}
        if install.note is not None:
            changes["install_note"] = install.note
        if install.latitude is not None or install.longitude is not None:
            changes |= {"install_latitude": install.latitude, "install_longitude": install.longitude}
        if install.gateway_id is not None:
            changes["gateway_id"] = install.gateway_id
        device = update_device(conn, tenant, device_id, changes, actor=actor,
                               event_detail={"claim_code": record.id})
        conn.execute("UPDATE ft.claim_codes SET used_at = now(), used_by = %s, used_by_device = %s"
                     " WHERE tenant_id = %s AND id = %s", (actor.id, device_id, tenant, record.id))
        audit(conn, actor, "claim_code.redeemed", "claim_code", record.id, tenant,
              detail={"device_id": device_id, "farm_id": record.farm_id, "field_id": record.field_id})
    return get_code(conn, tenant, record.id), device
