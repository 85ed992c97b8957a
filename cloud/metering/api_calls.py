"""API meters: calls per caller and data exported, counted in memory and flushed every few seconds.

The middleware (:class:`UsageMiddleware`) sees every request end: a request whose caller was
authenticated as a user or an API key of a tenant (:func:`admit` left the principal in the request's
state) adds one to that tenant's ``api_calls`` under the key ``api_key:<id>`` / ``user:<id>``, and the
bytes of its answer to ``data_exported_bytes`` when the answer is an export — CSV, or any answer of
:data:`EXPORT_MIN_BYTES` or more (series reads, registry dumps).  Platform admins are not metered (no
tenant pays for them); requests refused before a principal was known (401, 429) are not counted.

Counting in the request's own transaction would add a row lock on the tenant's counter to every
request (every request of a tenant would queue on it), so counts go to an in-memory buffer that
:class:`ApiMeter` flushes every :data:`FLUSH_INTERVAL_S` seconds in one transaction, and at shutdown.
The price: a process killed without its shutdown (SIGKILL, power loss) loses at most the last
``FLUSH_INTERVAL_S`` seconds of its counts (a failed flush keeps them for the next one).

Each flush also evaluates the quotas (cloud.metering.quotas): it records soft and hard limits crossed
and learns which tenants are over a hard limit of an API meter; :func:`admit` refuses their calls with
402 from then on.  So a tenant may overshoot a hard limit by what its callers do within one flush
interval, across all API processes.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import psycopg
from fastapi import HTTPException, Request, status
from psycopg_pool import ConnectionPool

from cloud.auth.principal import Principal
from cloud.metering import quotas
from cloud.store.scope import platform_scope

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 5.0
#: an answer this large counts as exported data (CSV answers count whatever their size)
EXPORT_MIN_BYTES = 64 * 1024
#: paths that answer even when the tenant is over a hard limit: it must be able to see why
_EXEMPT_SUFFIXES = ("/usage", "/usage.csv")
_STATE_KEY = "principal"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


class ApiMeter:
    """The buffer, its flushing thread (one owner, :meth:`stop` to end it) and the tenants refused."""

    def __init__(self, pool: ConnectionPool, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self._pool = pool
        self._interval = flush_interval_s
        self._lock = threading.Lock()
        self._pending: Counter[tuple[str, str, str]] = Counter()  # (tenant, meter, key) -> quantity
        self._blocked: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.flushes = self.failures = 0

    def start(self) -> ApiMeter:
        self._thread = threading.Thread(target=self._loop, name="api-meter", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """End the loop and flush what is left (nothing to flush: no wait for a database that may be down)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.pending():
            self.flush()

    def count(self, tenant: str, key: str, exported_bytes: int = 0) -> None:
        with self._lock:
            self._pending[(tenant, "api_calls", key)] += 1
            if exported_bytes:
                self._pending[(tenant, "data_exported_bytes", key)] += exported_bytes

    def pending(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return dict(self._pending)

    def refusal(self, tenant: str) -> str | None:
        return self._blocked.get(tenant)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def flush(self) -> bool:
        """Write the buffered counts and evaluate the quotas in one transaction; on failure keep the counts."""
        with self._lock:
            taken, self._pending = self._pending, Counter()
        rows = sorted((t, m, k, q) for (t, m, k), q in taken.items())  # key order: no lock cycles between processes
        try:
            with self._pool.connection(timeout=5.0) as conn:
                platform_scope(conn)  # a platform service writing every tenant's counters
                if rows:
                    conn.execute(
                        "INSERT INTO ft.usage_monthly AS u (tenant_id, month, meter, key, quantity)"
                        " SELECT t, date_trunc('month', now() AT TIME ZONE 'UTC')::date, m, k, q"
                        " FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[]) AS x(t, m, k, q)"
                        " ON CONFLICT (tenant_id, month, meter, key, shard) DO UPDATE"  # shard 0 (migration 049)
                        " SET quantity = u.quantity + EXCLUDED.quantity, updated_at = now()",
                        [list(column) for column in zip(*rows, strict=True)])
                evaluation = quotas.evaluate(conn)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            with self._lock:
                self._pending.update(taken)
            self.failures += 1
            log.warning("cannot flush API usage (%d counters kept for the next attempt): %s", len(rows), exc)
            return False
        self._blocked = evaluation.blocked
        self.flushes += 1
        for crossing in evaluation.found:
            log.warning("tenant %s reached its %s limit of %s: %s", crossing.tenant_id, crossing.level,
                        crossing.meter, crossing.limit)
        return True


def caller_key(principal: Principal) -> str:
    return f"{principal.kind}:{principal.id}"


def admit(request: Request, principal: Principal) -> None:
    """Called once the caller is known (cloud.api.deps): remember it for the middleware's count, and refuse with
    402 a tenant over a hard limit of an API meter (except on the usage routes)."""
    meter: ApiMeter | None = getattr(request.app.state, "meter", None)
    if meter is not None and principal.tenant_id is not None and not request.url.path.endswith(_EXEMPT_SUFFIXES):
        why = meter.refusal(principal.tenant_id)
        if why is not None:  # refused: not counted either
            raise HTTPException(status.HTTP_402_PAYMENT_REQUIRED, why)
    request.state.principal = principal


class UsageMiddleware:
    """Pure ASGI (no buffering of bodies): counts each answered request of a tenant's caller into the app's
    :class:`ApiMeter` (``app.state.meter``)."""

    def __init__(self, app: Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                                     Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        size = 0
        is_csv = False

        async def counting_send(message: Message) -> None:
            nonlocal size, is_csv
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-type" and value.lower().startswith(b"text/csv"):
                        is_csv = True
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            principal = state.get(_STATE_KEY)
            meter = getattr(scope["app"].state, "meter", None) if "app" in scope else None
            if isinstance(principal, Principal) and principal.tenant_id is not None and meter is not None:
                exported = size if is_csv or size >= EXPORT_MIN_BYTES else 0
                meter.count(principal.tenant_id, caller_key(principal), exported)
