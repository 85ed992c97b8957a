"""Security events (sign-ins, lockouts, unlocks, API keys, rate limits): the one place they are recorded.

Every module of cloud/auth reports through :func:`security_event`, which appends the event to the tenant's
audit log (:func:`cloud.audit.log.record`, in the caller's transaction: a caller that answers with an error
commits first) and logs one line to ``fieldtrust.security`` for operators watching the service's log.  The
transaction must be in the event's tenant scope (row-level security on the audit log), or in platform scope
for an event without a tenant.

Actions: ``signin.ok``, ``signin.failed``, ``signin.throttled``, ``signin.refused_locked``, ``signin.locked``,
``signout``, ``account.unlocked``, ``user.invited``, ``user.activated``, ``user.disabled``,
``user.roles_changed``, ``api_key.created``, ``api_key.revoked``, ``api_key.refused`` (an expired, revoked
or wrong key that names an existing key), ``rate.limited``.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from cloud.audit.log import record
from cloud.auth.principal import Principal

log = logging.getLogger("fieldtrust.security")


def security_event(conn: psycopg.Connection, principal: Principal | None, action: str, target_type: str,
                   target_id: str, *, tenant_id: str | None = None, source_ip: str | None = None,
                   detail: dict[str, Any] | None = None) -> None:
    """Record one security event.  ``principal`` is None when nobody is signed in (a failed sign-in);
    ``tenant_id`` and ``source_ip`` default to the principal's."""
    record(conn, principal, action, target_type, target_id, tenant_id=tenant_id, source_ip=source_ip, detail=detail)
    actor = f"{principal.kind}:{principal.id}" if principal else "nobody"
    log.info("%s %s:%s in %s by %s from %s", action, target_type, target_id,
             tenant_id or (principal.tenant_id if principal else None), actor,
             source_ip or (principal.source_ip if principal else None))
