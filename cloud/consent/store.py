"""Granting, revoking and listing farmers' consents (ft.consents), each confirmed and audited.

Who may act for a farmer: the farmer themself (a farmer principal whose ``farmer_id`` it is) or staff of the
farmer's tenant holding ``consent:manage`` (a service-point clerk).  A grant is always confirmed with the
farmer's own PIN, checked against the farmer user's PIN hash (cloud/auth/passwords.py), also when the farmer
is signed in and also when a clerk assists; a clerk's revocation needs the PIN too, the farmer's own does not.
PIN failures count against the farmer's account exactly as failed PIN sign-ins do (cloud/auth/lockout.py), so
a consent form is no way around the lockout.

Every function runs in the caller's transaction, in the tenant's scope, and writes its audit entry there.
Refusals (a wrong PIN: counted and audited) must be committed by the caller before it answers with an error.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg.rows import class_row

from cloud.audit import log
from cloud.auth import lockout, passwords
from cloud.auth.principal import Principal
from cloud.auth.scopes import self_only
from cloud.consent import texts
from cloud.consent.errors import ConsentConflict, ConsentInvalid, ConsentNotFound, PinRejected
from cloud.store.db import ROW_SCHEMA

MAX_DAYS = 5 * 366
CONSENT_COLUMNS = ("id, tenant_id, farmer_id, purpose, scopes, granted_at, expires_at, revoked_at, revoked_by,"
            " confirmed_with, granted_by, assisted_by, text_version, language,"
            " CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN expires_at <= now() THEN 'expired'"
            " ELSE 'active' END AS status")


@dataclass(frozen=True)
class Consent:
    """A farmer's consent to the use of some of their data for one purpose, until it expires or is revoked."""

    __pydantic_config__ = ROW_SCHEMA
    id: str
    tenant_id: str
    farmer_id: str
    purpose: str
    """credit_assessment, insurance or advice"""
    scopes: list[str]
    """the data it covers: soil, weather, yields, registry"""
    granted_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None
    confirmed_with: str
    """farmer_pin: the farmer confirmed it with their own PIN"""
    granted_by: str
    assisted_by: str | None
    """the clerk who assisted, if one did"""
    text_version: str
    """SHA-256 of the consent texts shown (cloud/consent/texts.py)"""
    language: str
    status: str
    """active, expired or revoked"""


def tenant_of(principal: Principal, tenant_id: str | None) -> str:
    """The tenant a consent operation acts in: the principal's (platform admins: the one named)."""
    tenant = principal.tenant_id or tenant_id
    if tenant is None:
        raise ConsentInvalid("a consent belongs to a tenant: name the tenant")
    if tenant_id is not None and tenant_id != tenant:
        raise ConsentNotFound(f"tenant {tenant_id!r} not found")
    return tenant


def check_reach(principal: Principal, farmer_id: str, *scopes: str) -> None:
    """A farmer reaches their own consents only; staff need one of ``scopes`` (default ``consent:manage``).
    Refused as not found, so other farmers' consents do not even show that they exist."""
    if self_only(principal):
        allowed = principal.farmer_id == farmer_id
    else:
        allowed = any(principal.can(s) for s in scopes or ("consent:manage",))
    if not allowed:
        raise ConsentNotFound(f"farmer {farmer_id!r} not found")


def confirm_pin(conn: psycopg.Connection, principal: Principal, tenant_id: str, farmer_id: str,
                pin: str | None, why: str) -> None:
    """Check the farmer's PIN, under the same delays and lock as PIN sign-ins; PinRejected (audited) if wrong."""
    account = lockout.farmer_account(farmer_id)
    gate = lockout.check(conn, tenant_id, account, principal.source_ip)
    if not gate.allowed:
        log.record(conn, principal, "consent.pin_refused", "farmer", farmer_id, farmer_id=farmer_id,
                   detail={"for": why, "locked": gate.locked, "retry_after_s": gate.retry_after_s})
        if gate.locked:
            raise PinRejected(f"farmer {farmer_id}'s account is locked after failed PIN entries: a clerk must "
                              "unlock it after checking the farmer's identity")
        raise PinRejected(f"too many wrong PINs for farmer {farmer_id}: try again in {gate.retry_after_s} s",
                          gate.retry_after_s)
    row = conn.execute("SELECT pin_hash FROM ft.users WHERE tenant_id = %s AND farmer_id = %s AND status = 'active'",
                       (tenant_id, farmer_id)).fetchone()
    if pin is not None and passwords.verify(row[0] if row else None, pin):
        lockout.succeeded(conn, tenant_id, account)
        return
    if pin is None:
        reason = "the farmer's PIN is required to confirm this"
    else:
        failure = lockout.failed(conn, tenant_id, account, principal.source_ip)
        reason = "wrong PIN" + (" (the farmer's account is now locked)" if failure.locked_now else "")
    log.record(conn, principal, "consent.pin_refused", "farmer", farmer_id, farmer_id=farmer_id,
               detail={"for": why, "reason": reason})
    raise PinRejected(f"{reason}: not confirmed by farmer {farmer_id}")


def grant(conn: psycopg.Connection, principal: Principal, farmer_id: str, purpose: str, scopes: list[str], *,
          days: int, pin: str | None, text_version: str, language: str, tenant_id: str | None = None) -> Consent:
    """Record the farmer's consent for ``days`` days, confirmed with their PIN."""
    tenant = tenant_of(principal, tenant_id)
    check_reach(principal, farmer_id)
    try:
        ordered = texts.check(purpose, scopes, language)
    except ValueError as exc:
        raise ConsentInvalid(str(exc)) from None
    if not 1 <= days <= MAX_DAYS:
        raise ConsentInvalid(f"days must be 1-{MAX_DAYS}; got {days}")
    if text_version != texts.VERSION:
        raise ConsentInvalid(f"the consent text has changed (version {texts.VERSION}, not {text_version}): "
                             "show the farmer the current text")
    confirm_pin(conn, principal, tenant, farmer_id, pin, "consent.grant")
    assisted_by = None if principal.farmer_id == farmer_id else principal.id
    with conn.cursor(row_factory=class_row(Consent)) as cur:
        consent = cur.execute(
            f"""
            INSERT INTO ft.consents (id, tenant_id, farmer_id, purpose, scopes, expires_at, granted_by, assisted_by,
                                     text_version, language)
            VALUES (%s, %s, %s, %s, %s, now() + %s, %s, %s, %s, %s) RETURNING {CONSENT_COLUMNS}
            """,
            (f"c_{secrets.token_hex(8)}", tenant, farmer_id, purpose, ordered, timedelta(days=days), principal.id,
             assisted_by, text_version, language)).fetchone()
    assert consent is not None
    log.record(conn, principal, "consent.granted", "consent", consent.id, farmer_id=farmer_id, purpose=purpose,
               tenant_id=tenant, detail={"scopes": ordered, "expires_at": consent.expires_at.isoformat(),
                                         "assisted_by": assisted_by, "text_version": text_version,
                                         "language": language})
    return consent


def revoke(conn: psycopg.Connection, principal: Principal, consent_id: str, *, pin: str | None = None,
           tenant_id: str | None = None) -> Consent:
    """Revoke a consent: by the farmer themself, or by staff with the farmer's PIN."""
    tenant = tenant_of(principal, tenant_id)
    current = get(conn, tenant, consent_id)
    check_reach(principal, current.farmer_id)
    if current.revoked_at is not None:
        raise ConsentConflict(f"consent {consent_id} was already revoked at {current.revoked_at.isoformat()}")
    if principal.farmer_id != current.farmer_id:
        confirm_pin(conn, principal, tenant, current.farmer_id, pin, "consent.revoke")
    with conn.cursor(row_factory=class_row(Consent)) as cur:
        consent = cur.execute(f"UPDATE ft.consents SET revoked_at = now(), revoked_by = %s"
                              f" WHERE tenant_id = %s AND id = %s RETURNING {CONSENT_COLUMNS}",
                              (principal.id, tenant, consent_id)).fetchone()
    assert consent is not None
    log.record(conn, principal, "consent.revoked", "consent", consent_id, farmer_id=consent.farmer_id,
               purpose=consent.purpose, tenant_id=tenant, detail={"scopes": consent.scopes})
    return consent


def get(conn: psycopg.Connection, tenant_id: str, consent_id: str) -> Consent:
    with conn.cursor(row_factory=class_row(Consent)) as cur:
        found = cur.execute(f"SELECT {CONSENT_COLUMNS} FROM ft.consents WHERE tenant_id = %s AND id = %s",
                            (tenant_id, consent_id)).fetchone()
    if found is None:
        raise ConsentNotFound(f"consent {consent_id!r} not found")
    return found


#: staff scopes that may list a farmer's consents (a credit officer checks one exists before asking)
LIST_SCOPES = ("consent:manage", "credit:read", "audit:read")


def list_consents(conn: psycopg.Connection, principal: Principal, farmer_id: str, *, purpose: str | None = None,
                  tenant_id: str | None = None) -> list[Consent]:
    """A farmer's consents, newest first (active, expired and revoked: the history is the farmer's to see)."""
    tenant_id = tenant_of(principal, tenant_id)
    check_reach(principal, farmer_id, *LIST_SCOPES)
    with conn.cursor(row_factory=class_row(Consent)) as cur:
        return cur.execute(f"SELECT {CONSENT_COLUMNS} FROM ft.consents WHERE tenant_id = %s AND farmer_id = %s"
                           " AND (%s::text IS NULL OR purpose = %s) ORDER BY granted_at DESC, id",
                           (tenant_id, farmer_id, purpose, purpose)).fetchall()
