"""The few reads of readings the pages need beyond the store's query layer (cloud/store/series.py).

:func:`flagged_buckets` counts, per bucket, readings that carry a value and a quality flag (stale, out
of range, clock not synced, calibration missing: contract.telemetry ``Q_*``), so a chart can mark
them; the rollups keep no quality, so this reads raw rows (a farm's few devices over two weeks).
:func:`last_messages` lists a device's last stored messages from the duplicate ledger ``ft.messages``.
Both run under row-level security like every read of the pages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from cloud.store.rollups import ORIGIN


def flagged_buckets(conn: psycopg.Connection, device_ids: Sequence[str], metric: str, start: datetime,
                    end: datetime, step: timedelta) -> dict[datetime, int]:
    """bucket start -> readings with a value and a non-zero quality, for ``device_ids``' ``metric``."""
    if not device_ids:
        return {}
    rows = conn.execute(
        "SELECT date_bin(make_interval(secs => %s), r.ts, %s), count(*) FROM ft.readings r"
        " JOIN ft.metrics m ON m.id = r.metric_id"
        " WHERE r.device_id = ANY(%s) AND m.name = %s AND r.ts >= %s AND r.ts < %s AND r.quality <> 0"
        " AND r.value IS NOT NULL GROUP BY 1",
        (step.total_seconds(), ORIGIN, list(device_ids), metric, start, end)).fetchall()
    return {bucket: int(n) for bucket, n in rows}


@dataclass(frozen=True)
class Message:
    received_at: datetime
    epoch: int
    seq: int
    trust: int
    """1 node-signed, 2 gateway-attested"""
    gateway_id: str | None


def last_messages(conn: psycopg.Connection, device_id: str, limit: int = 10) -> list[Message]:
    """The device's last ``limit`` stored messages, newest first."""
    rows = conn.execute(
        "SELECT received_at, epoch, seq, trust, gateway_id FROM ft.messages WHERE device_id = %s"
        " ORDER BY epoch DESC, seq DESC LIMIT %s",  # the primary key's order: the newest by the device's count
        (device_id, limit)).fetchall()
    return [Message(*row) for row in rows]
