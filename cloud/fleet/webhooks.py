"""Alert notifications by webhook: registered URLs, a signed POST per event, retries, and a delivery log.

Every event becomes one ``ft.webhook_deliveries`` row per enabled webhook of the tenant, in the same
transaction that opened or resolved the alert, so a notification is never lost between the two.
:func:`deliver_due` then POSTs each due delivery: the body is canonical JSON (sorted keys, no spaces),
signed ``X-FieldTrust-Signature: sha256=<hex HMAC-SHA256 of the body under the webhook's secret>``;
the body carries its own ``sent_at`` and ``delivery`` id, so a receiver can refuse replays.  A 2xx
answer delivers it; anything else (an error status, a refused connection, a timeout) is retried
after ``base_backoff_s * 2**(attempts-1)`` seconds (capped at ``max_backoff_s``) until
``max_attempts``, after which the delivery is ``failed`` (kept, with its last status and error).

URLs must be http(s) with a host.  Outside development mode a host that is, or resolves to, a
loopback, link-local, private or unspecified address is refused, at registration and again before
each POST (the name may have been re-pointed since): a tenant must not make the cloud call into its
own network.  Secrets are kept in the database (under row-level security, like the tenant's data)
because every POST needs them; a new one is generated unless given, and shown once.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from cloud.fleet.alerts import Event
from cloud.store.db import ROW_SCHEMA
from cloud.store.registry import Invalid, NotFound

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-FieldTrust-Signature"
EVENT_HEADER = "X-FieldTrust-Event"
DELIVERY_HEADER = "X-FieldTrust-Delivery"


@dataclass(frozen=True)
class Webhook:
    """A registered webhook (its secret is never shown again after creation)."""

    __pydantic_config__ = ROW_SCHEMA
    id: int
    tenant_id: str
    url: str
    enabled: bool
    created_at: datetime
    created_by: str


@dataclass(frozen=True)
class Delivery:
    """One event sent (or being sent) to one webhook."""

    __pydantic_config__ = ROW_SCHEMA
    id: int
    webhook_id: int
    alert_id: int | None
    event: str
    status: str
    """pending, delivered or failed"""
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    """the HTTP status of the last attempt (null: no answer)"""
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_backoff_s: float = 5.0
    max_backoff_s: float = 3600.0
    timeout_s: float = 10.0

    def backoff(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.max_backoff_s, self.base_backoff_s * 2 ** max(0, attempts - 1)))


def check_url(url: str, *, dev_mode: bool) -> str:
    """``url`` if a webhook may call it; Invalid naming what is wrong otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise Invalid(f"webhook url must be http:// or https://; got {url!r}")
    if not parts.hostname:
        raise Invalid(f"webhook url has no host: {url!r}")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise Invalid(f"webhook url has a bad port: {url!r}") from None
    if not dev_mode:
        _check_public(parts.hostname)
    return url


def _check_public(host: str) -> None:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise Invalid(f"webhook host {host!r} does not resolve: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if (address.is_loopback or address.is_link_local or address.is_private or address.is_unspecified
                or address.is_multicast or address.is_reserved):
            raise Invalid(f"webhook host {host!r} is a local or private address ({address}): refused outside "
                          "development mode")


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


# -- registration -------------------------------------------------------------------------------------

_WEBHOOK = "SELECT id, tenant_id, url, enabled, created_at, created_by FROM ft.webhooks"


def create_webhook(conn: psycopg.Connection, tenant: str, url: str, created_by: str, *, dev_mode: bool,
                   secret: str | None = None) -> tuple[Webhook, str]:
    """Register ``url``; returns the webhook and its secret (generated unless given; at least 16 characters)."""
    check_url(url, dev_mode=dev_mode)
    secret = secret or secrets.token_urlsafe(32)
    if len(secret) < 16:
        raise Invalid("webhook secret must be at least 16 characters")
    row = conn.execute("INSERT INTO ft.webhooks (tenant_id, url, secret, created_by) VALUES (%s, %s, %s, %s)"
                       " RETURNING id", (tenant, url, secret, created_by)).fetchone()
    assert row is not None
    return get_webhook(conn, tenant, row[0]), secret


def get_webhook(conn: psycopg.Connection, tenant: str, webhook_id: int) -> Webhook:
    rows = _all(conn, Webhook, _WEBHOOK + " WHERE tenant_id = %s AND id = %s", (tenant, webhook_id))
    if not rows:
        raise NotFound(f"webhook {webhook_id} not found in tenant {tenant!r}")
    return rows[0]


def list_webhooks(conn: psycopg.Connection, tenant: str) -> list[Webhook]:
    return _all(conn, Webhook, _WEBHOOK + " WHERE tenant_id = %s ORDER BY id", (tenant,))


def delete_webhook(conn: psycopg.Connection, tenant: str, webhook_id: int) -> None:
    get_webhook(conn, tenant, webhook_id)
    conn.execute("DELETE FROM ft.webhooks WHERE tenant_id = %s AND id = %s", (tenant, webhook_id))


_DELIVERY = ("SELECT id, webhook_id, alert_id, event, status, attempts, next_attempt_at, last_status, last_error,"
             " created_at, delivered_at FROM ft.webhook_deliveries")


def list_deliveries(conn: psycopg.Connection, tenant: str, webhook_id: int | None = None,
                    limit: int = 100) -> list[Delivery]:
    return _all(conn, Delivery, _DELIVERY + " WHERE tenant_id = %s AND (%s::bigint IS NULL OR webhook_id = %s)"
                " ORDER BY id DESC LIMIT %s", (tenant, webhook_id, webhook_id, limit))


# -- sending -------------------------------------------------------------------------------------------


def enqueue(conn: psycopg.Connection, events: Sequence[Event]) -> int:
    """A pending delivery per event and enabled webhook of the event's tenant; how many."""
    count = 0
    for event in events:
        alert = event.alert
        body = {"event": event.name, "tenant": alert.tenant_id,
                "alert": {"id": alert.id, "rule_id": alert.rule_id, "rule": alert.rule_name,
                          "subject_kind": alert.subject_kind, "subject_id": alert.subject_id, "state": alert.state,
                          "severity": alert.severity, "message": alert.message, "value": alert.value,
                          "opened_at": alert.opened_at.isoformat(),
                          "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None}}
        rows = conn.execute(
            "INSERT INTO ft.webhook_deliveries (tenant_id, webhook_id, alert_id, event, body)"
            " SELECT tenant_id, id, %s, %s, %s FROM ft.webhooks WHERE tenant_id = %s AND enabled RETURNING id",
            (alert.id, event.name, Jsonb(body), alert.tenant_id)).fetchall()
        count += len(rows)
    return count


def deliver_due(conn: psycopg.Connection, client: httpx.Client, policy: RetryPolicy, *, dev_mode: bool,
                now: datetime | None = None, limit: int = 100) -> int:
    """POST every delivery due by ``now``; each attempt is recorded in its own transaction.  Returns attempts made.

    ``conn`` is a connection of the fleet loop (platform scope, autocommit); only one loop sends at a time.
    """
    now = now or datetime.now(UTC)
    with conn.transaction():
        due = conn.execute(
            "SELECT d.id, d.event, d.body, d.attempts, w.url, w.secret FROM ft.webhook_deliveries d"
            " JOIN ft.webhooks w ON w.id = d.webhook_id WHERE d.status = 'pending' AND d.next_attempt_at <= %s"
            " ORDER BY d.next_attempt_at, d.id LIMIT %s", (now, limit)).fetchall()
    for delivery_id, event, body, attempts, url, secret in due:
        payload = canonical(body | {"delivery": delivery_id, "sent_at": datetime.now(UTC).isoformat()})
        status, error = _post(client, url, payload, secret, event, delivery_id, policy, dev_mode=dev_mode)
        attempts += 1
        with conn.transaction():
            if status is not None and 200 <= status < 300:
                conn.execute("UPDATE ft.webhook_deliveries SET status = 'delivered', attempts = %s, last_status = %s,"
                             " last_error = NULL, delivered_at = now() WHERE id = %s", (attempts, status, delivery_id))
            else:
                final = attempts >= policy.max_attempts
                conn.execute(
                    "UPDATE ft.webhook_deliveries SET status = %s, attempts = %s, last_status = %s, last_error = %s,"
                    " next_attempt_at = %s WHERE id = %s",
                    ("failed" if final else "pending", attempts, status, error,
                     datetime.now(UTC) + policy.backoff(attempts), delivery_id))
                log.log(logging.WARNING if final else logging.INFO, "webhook delivery %d to %s: attempt %d %s (%s)",
                        delivery_id, url, attempts, "failed for good" if final else "failed, will retry",
                        error or status)
    return len(due)


def _post(client: httpx.Client, url: str, payload: bytes, secret: str, event: str, delivery_id: int,
          policy: RetryPolicy, *, dev_mode: bool) -> tuple[int | None, str | None]:
    try:
        check_url(url, dev_mode=dev_mode)
    except Invalid as exc:
        return None, str(exc)
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, payload), EVENT_HEADER: event,
               DELIVERY_HEADER: str(delivery_id), "User-Agent": "FieldTrust-Webhooks/1"}
    try:
        response = client.post(url, content=payload, headers=headers, timeout=policy.timeout_s)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code}: {response.text[:200]}"


def _all(conn: psycopg.Connection, row_type: type[Any], query: str, params: Sequence[object]) -> list[Any]:
    with conn.cursor(row_factory=class_row(row_type)) as cur:
        return cur.execute(query, params).fetchall()  # type: ignore[arg-type]
