"""Ingest meters, counted inside the ingest's commit transaction: exact, and cheap enough to leave on.

Per commit (one transaction of :func:`cloud.ingest.commit.commit_units`), the usage of each tenant is
summed in memory — telemetry messages newly stored, bytes of the batches newly stored, readings
stored, the devices heard from — and written by two statements at the end of the same transaction:
one ``INSERT … ON CONFLICT DO NOTHING`` of the month's devices (``ft.usage_devices``, for
active_devices) and one UPSERT adding to the tenant's counters of the month (``ft.usage_monthly``),
in the shard of this database session (its backend pid; migration 049): a meter is the sum of its
shards (cloud.metering.usage).
Being in the readings' own transaction makes the counts exact: a rolled-back batch is not counted, and a
redelivered batch, or a message stored before, is not counted again, because only what this
transaction claimed in the ledger is.

Cost: the sums come from the per-message totals the prepare thread already worked out
(:class:`~cloud.ingest.handler.Prepared`), so the commit thread adds a loop over the batches, not over
readings; and two small statements, sent in the same round trip as the commit's last writes
(cloud.ingest.commit).  The UPSERT locks the counter rows until the commit; with one row per tenant
and meter, that made every commit of a tenant wait for the previous one's COMMIT, and two workers
ingested at the pace of one.  Sharded by session, no two open transactions share a counter row (a
live backend's pid is its own), so they never wait on each other; a shard's row is reused by every
later commit of the same session.  The device rows are shared, but ``ON CONFLICT DO NOTHING`` on a
committed row takes no lock: only the first commits of a month that name the same new device wait.
Measured with ``python -m bench.metering_ab`` (metering on vs off, interleaved, one and two
workers): docs/performance.md, "Metering".

The month is the database's ``now()`` at the transaction's start, in UTC.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg

from cloud.ingest.handler import Prepared, TelemetryItem, VerifiedBatch
from cloud.store.writes import PG_EPOCH_MS

_MONTH_SQL = "date_trunc('month', now() AT TIME ZONE 'UTC')::date"
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
assert _PG_EPOCH.timestamp() * 1000 == PG_EPOCH_MS


@dataclass(slots=True)
class TenantUsage:
    """What one commit stored for one tenant."""

    messages: int = 0  # telemetry messages newly stored (claimed in the ledger by this transaction)
    bytes: int = 0  # MQTT payload bytes of the batches newly stored
    readings: int = 0  # readings stored
    devices: set[str] = field(default_factory=set)


CommitUsage = dict[str, TenantUsage]


def usage_of_commit(fresh: Sequence[tuple[Prepared, VerifiedBatch]], stored: Sequence[TelemetryItem] | None
                    ) -> CommitUsage:
    """Per tenant, what the commit of the ``fresh`` (newly stored) batches stored.

    ``stored`` None: every message of those batches was new (the commit's common case), so each batch's
    own totals hold; otherwise the telemetry items this transaction claimed, one by one.  Readings are
    what was offered to the store; :func:`settle_overlaps` corrects them when some were there already.
    """
    usage: CommitUsage = {}
    for unit, batch in fresh:
        tenant = usage.get(batch.tenant_id)
        if tenant is None:
            tenant = usage[batch.tenant_id] = TenantUsage()
        tenant.bytes += len(unit.payload)
        if stored is None:
            tenant.messages += len(unit.items)
            tenant.readings += unit.readings
            tenant.devices |= unit.devices
    for item in stored or ():
        message = item.message
        tenant = usage.setdefault(message.tenant_id, TenantUsage())
        tenant.messages += 1
        tenant.readings += len(item.rows)
        tenant.devices.add(message.device_id)
    return usage


def settle_overlaps(conn: psycopg.Connection, usage: CommitUsage, offered: int, inserted: int,
                    stored: Iterable[TelemetryItem]) -> None:
    """Correct readings to what was stored when ``inserted < offered`` (a reading of the same device, metric
    and time was stored before by another message).  One tenant: the difference is its own; several (rare):
    one query counts, per tenant, the rows that carry the identity of a message this transaction stored."""
    if inserted == offered:
        return
    tenants = [t for t, u in usage.items() if u.readings]
    if len(tenants) == 1:
        usage[tenants[0]].readings -= offered - inserted
        return
    keys: list[tuple[str, int, int]] = []
    low = high = None
    for item in stored:
        if not item.rows:
            continue
        keys.append(item.key)
        for row in item.rows:
            ts = row[3] if isinstance(row[3], datetime) else _PG_EPOCH + timedelta(microseconds=row[3])
            low = ts if low is None or ts < low else low
            high = ts if high is None or ts > high else high
    counted = dict(conn.execute(
        "SELECT r.tenant_id, count(*) FROM ft.readings r"
        " JOIN unnest(%s::text[], %s::int[], %s::bigint[]) AS k(device_id, epoch, seq) USING (device_id, epoch, seq)"
        " WHERE r.ts BETWEEN %s AND %s GROUP BY r.tenant_id",
        ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], low, high)).fetchall())
    for tenant, tenant_usage in usage.items():
        tenant_usage.readings = int(counted.get(tenant, 0))


def record(conn: psycopg.Connection, usage: CommitUsage) -> None:
    """Add one commit's usage to the month's counters, inside the caller's transaction (its last statements)."""
    tenants = sorted(t for t, u in usage.items() if u.messages or u.bytes or u.readings)
    if not tenants:
        return
    device_rows = sorted((t, d) for t in tenants for d in usage[t].devices)
    if device_rows:
        conn.execute(
            f"INSERT INTO ft.usage_devices (tenant_id, month, device_id) SELECT t, {_MONTH_SQL}, d"
            " FROM unnest(%s::text[], %s::text[]) AS x(t, d) ON CONFLICT DO NOTHING",
            ([t for t, _ in device_rows], [d for _, d in device_rows]))
    rows = [(t, meter, quantity) for t in tenants
            for meter, quantity in (("bytes_ingested", usage[t].bytes), ("messages_ingested", usage[t].messages),
                                    ("readings_stored", usage[t].readings)) if quantity]
    conn.execute(
        "INSERT INTO ft.usage_monthly AS u (tenant_id, month, meter, shard, quantity)"
        f" SELECT t, {_MONTH_SQL}, m, pg_backend_pid(), q"
        " FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS x(t, m, q)"
        " ON CONFLICT (tenant_id, month, meter, key, shard) DO UPDATE SET quantity = u.quantity + EXCLUDED.quantity,"
        " updated_at = now()",
        ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]))
