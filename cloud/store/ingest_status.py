"""What the ingest has done, read back for monitoring: committed batches and dead letters by reason.

The workers' own live counters are in ``ft.ingest_workers`` (see :func:`cloud.store.writes.worker_counters`);
these totals come from the rows themselves, so they hold across worker restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import class_row

from cloud.store.db import ROW_SCHEMA


@dataclass(frozen=True)
class BatchTotals:
    """Committed batches and what their readings came to."""

    __pydantic_config__ = ROW_SCHEMA
    batches: int
    readings: int
    duplicates: int
    rejected: int
    last_received_at: datetime | None


def batch_totals(conn: psycopg.Connection, tenant: str | None = None, since: datetime | None = None) -> BatchTotals:
    with conn.cursor(row_factory=class_row(BatchTotals)) as cur:
        row = cur.execute(
            "SELECT count(*) AS batches, coalesce(sum(readings), 0) AS readings,"
            " coalesce(sum(duplicates), 0) AS duplicates, coalesce(sum(rejected), 0) AS rejected,"
            " max(received_at) AS last_received_at FROM ft.batches"
            " WHERE (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)"
            " AND (%(since)s::timestamptz IS NULL OR received_at >= %(since)s)",
            {"tenant": tenant, "since": since},
        ).fetchone()
    assert row is not None  # an aggregate without GROUP BY always returns one row
    return row


def dead_letters_by_reason(
    conn: psycopg.Connection, tenant: str | None = None, since: datetime | None = None
) -> dict[str, int]:
    rows = conn.execute(
        "SELECT reason, count(*) FROM ft.dead_letters"
        " WHERE (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)"
        " AND (%(since)s::timestamptz IS NULL OR received_at >= %(since)s)"
        " GROUP BY reason ORDER BY reason",
        {"tenant": tenant, "since": since},
    ).fetchall()
    return {reason: int(n) for reason, n in rows}
