"""Request rate limits per API key and per user, counted in PostgreSQL so every API process shares them.

One row per bucket (``key:<id>``, ``user:<id>``) in ``ft.rate_limits``: a fixed window that starts at
the first request after the previous window ended, and a count.  Each request is one UPSERT that
starts a new window or adds one to the count, atomically (the row lock serialises concurrent requests
of one bucket across processes), so N API workers together allow exactly the limit, not N times it.
Over the limit the API answers 429 with ``Retry-After``: the seconds until the window ends.

Windows anchored at a bucket's first request (not at wall-clock minutes) keep one row per bucket and
no burst of twice the limit across a minute boundary at the start.  Rows of buckets idle for a day
are removed by :func:`purge` (the store's upkeep may call it; a stale row is harmless meanwhile).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

import psycopg

#: a signed-in user's limit (API keys carry their own, chosen when the key is created)
USER_RATE_LIMIT, USER_RATE_WINDOW_S = 1200, 60


@dataclass(frozen=True)
class Decision:
    allowed: bool
    count: int  # requests in the current window, this one included
    retry_after_s: int  # 0 when allowed


def hit(conn: psycopg.Connection, bucket: str, limit: int, window_s: int) -> Decision:
    """Count one request of ``bucket``; allowed while the window holds at most ``limit`` requests."""
    row = conn.execute(
        """
        INSERT INTO ft.rate_limits AS r (bucket, window_start, count) VALUES (%(bucket)s, now(), 1)
        ON CONFLICT (bucket) DO UPDATE SET
            window_start = CASE WHEN r.window_start + %(window)s <= now() THEN now() ELSE r.window_start END,
            count = CASE WHEN r.window_start + %(window)s <= now() THEN 1 ELSE r.count + 1 END
        RETURNING count, extract(epoch FROM window_start + %(window)s - now())
        """,
        {"bucket": bucket, "window": timedelta(seconds=window_s)}).fetchone()
    assert row is not None
    count, remaining_s = int(row[0]), float(row[1])
    if count <= limit:
        return Decision(True, count, 0)
    return Decision(False, count, max(1, math.ceil(remaining_s)))


def purge(conn: psycopg.Connection, idle_s: int = 86_400) -> int:
    """Remove buckets whose window ended more than ``idle_s`` seconds ago; the number removed."""
    return conn.execute("DELETE FROM ft.rate_limits WHERE window_start < now() - make_interval(secs => %s)",
                        (idle_s,)).rowcount
