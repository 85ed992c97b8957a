"""The gate every use of a farmer's data by staff or partners passes: a valid consent, or a refusal on record.

:func:`require_consent` answers with the consent that allows the use (active: not revoked, not expired, for
this purpose, covering this data scope), or records ``data_use_refused`` and raises
:class:`~cloud.consent.errors.ConsentRequired` (the API answers 403) with a message that says what is
missing: no consent at all, none for this purpose, this data not covered, expired, or revoked.
:func:`use_data` is the gate and the audit entry of the read in one call, which is what a route serving a
farmer's data to staff or partners should call.

A farmer reading their own data does not pass here (it is theirs); everyone else does, platform admins too.
"""

from __future__ import annotations

import psycopg
from psycopg.rows import class_row

from cloud.audit import log
from cloud.auth.principal import Principal
from cloud.consent.errors import ConsentRequired
from cloud.consent.store import CONSENT_COLUMNS, Consent, tenant_of

__all__ = ["ConsentRequired", "require_consent", "use_data"]


def require_consent(conn: psycopg.Connection, principal: Principal, farmer_id: str, purpose: str, scope: str, *,
                    tenant_id: str | None = None) -> Consent:
    """The consent allowing ``principal`` to use ``farmer_id``'s ``scope`` data for ``purpose``; else the refusal
    is recorded (in the caller's transaction) and ConsentRequired raised."""
    tenant = tenant_of(principal, tenant_id or _scoped_tenant(conn))
    with conn.cursor(row_factory=class_row(Consent)) as cur:
        consents = cur.execute(f"SELECT {CONSENT_COLUMNS} FROM ft.consents WHERE tenant_id = %s AND farmer_id = %s"
                               " ORDER BY granted_at DESC, id", (tenant, farmer_id)).fetchall()
    for consent in consents:
        if consent.purpose == purpose and scope in consent.scopes and consent.status == "active":
            return consent
    reason, why = _refusal(consents, purpose, scope)
    entry = log.record(conn, principal, log.DATA_USE_REFUSED, "farmer", farmer_id, farmer_id=farmer_id,
                       purpose=purpose, tenant_id=tenant, detail={"scope": scope, "reason": reason})
    raise ConsentRequired(f"farmer {farmer_id} has not consented to the use of their {scope} data for {purpose}: "
                          f"{why}; the farmer can grant consent in the app or at a service point",
                          principal=principal, tenant_id=tenant, farmer_id=farmer_id, purpose=purpose, scope=scope,
                          reason=reason, entry_id=entry.id)


def use_data(conn: psycopg.Connection, principal: Principal, farmer_id: str, purpose: str, scope: str,
             target_type: str, target_id: str, *, tenant_id: str | None = None) -> Consent:
    """:func:`require_consent`, then the audit entry of the read (naming the consent it relied on)."""
    consent = require_consent(conn, principal, farmer_id, purpose, scope, tenant_id=tenant_id)
    log.record(conn, principal, log.DATA_READ, target_type, target_id, farmer_id=farmer_id, purpose=purpose,
               tenant_id=consent.tenant_id, detail={"scope": scope, "consent": consent.id})
    return consent


def record_refusal(conn: psycopg.Connection, refusal: ConsentRequired) -> int:
    """Write ``refusal``'s audit entry again (its first was rolled back with the caller's transaction)."""
    return log.record(conn, refusal.principal, log.DATA_USE_REFUSED, "farmer", refusal.farmer_id,
                      farmer_id=refusal.farmer_id, purpose=refusal.purpose, tenant_id=refusal.tenant_id,
                      detail={"scope": refusal.scope, "reason": refusal.reason}).id


def _refusal(consents: list[Consent], purpose: str, scope: str) -> tuple[str, str]:
    if not consents:
        return "no_consent", "there is no consent"
    for_purpose = [c for c in consents if c.purpose == purpose]
    if not for_purpose:
        given = ", ".join(sorted({c.purpose for c in consents}))
        return "other_purpose", f"the farmer's consents are for {given} only"
    covering = [c for c in for_purpose if scope in c.scopes]
    if not covering:
        return "scope_not_granted", f"the consent for {purpose} does not cover {scope} data"
    latest = covering[0]
    if latest.status == "revoked":
        assert latest.revoked_at is not None
        return "revoked", f"the farmer revoked the consent on {latest.revoked_at.date().isoformat()}"
    return "expired", f"the consent expired on {latest.expires_at.date().isoformat()}"


def _scoped_tenant(conn: psycopg.Connection) -> str | None:
    row = conn.execute("SELECT ft.current_tenant()").fetchone()
    return row[0] if row else None
