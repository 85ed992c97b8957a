"""A worker's counters: what it took in, stored, dropped as duplicate, refused by reason, and how late.

Exposed three ways, none of which needs a port per worker: :meth:`Counters.snapshot` (a dict,
for tests and the process itself), a periodic log line, and the row the worker upserts into
``ft.ingest_workers`` every few seconds (:func:`cloud.store.writes.save_worker_counters`), which the
API reads.

Counter names:

``messages_received`` MQTT messages taken in; ``messages_acked`` acknowledged after their commit;
``messages_refused`` whole messages dead-lettered (bad signature, unknown gateway…);
``batches`` new batches committed; ``batches_redelivered`` batches already committed, receipted
again; ``messages_new`` telemetry messages stored; ``duplicates`` deliveries of something
already stored with the same bytes (a whole batch, counted once, or a telemetry message in a new
batch); ``conflicts`` same identity, different bytes (alarmed); ``readings`` rows inserted;
``readings_overlapping`` rows skipped because another message already stored the same device,
metric and time; ``node_signed`` / ``gateway_attested`` rows by trust; ``rejected`` dead letters
by reason; ``transactions``, ``receipts_published``, ``db_retries``, ``internal_errors``;
``lag_sample_s`` now minus the newest reading time at the last commit, ``lag_sent_s`` now minus
the earliest batch ``sent`` time at the last commit, ``lag_sent_max_s`` its maximum since the
previous publication.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from cloud.ingest.commit import Outcome

#: every counter, present (at 0) in a snapshot from the start
NAMES = ("messages_received", "messages_acked", "messages_refused", "batches", "batches_redelivered", "messages_new",
         "duplicates", "conflicts", "readings", "readings_overlapping", "node_signed", "gateway_attested",
         "transactions", "receipts_published", "db_retries", "internal_errors")
_SHOWN = ("messages_received", "readings", "duplicates", "conflicts", "messages_refused", "batches_redelivered")


class Counters:
    """Thread-safe: the MQTT thread counts arrivals, the commit thread everything else."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self._lag_sample_s: float | None = None
        self._lag_sent_s: float | None = None
        self._lag_sent_max_s: float | None = None
        self.started_at = clock()

    def bump(self, name: str, by: int = 1) -> None:
        with self._lock:
            self._counts[name] += by

    def refused(self, reason: str) -> None:
        """One dead letter written outside a regular commit."""
        with self._lock:
            self._rejected[reason] += 1

    def committed(self, outcome: Outcome) -> None:
        """Add what one transaction did, and the lag it was committed with."""
        now_ms = self._clock() * 1000
        with self._lock:
            self._counts.update(outcome.counts)
            self._rejected.update(outcome.rejected)
            self._counts["transactions"] += 1
            if outcome.newest_ms is not None:
                self._lag_sample_s = round((now_ms - outcome.newest_ms) / 1000, 3)
            if outcome.oldest_sent_ms is not None:
                lag = round((now_ms - outcome.oldest_sent_ms) / 1000, 3)
                self._lag_sent_s = lag
                self._lag_sent_max_s = lag if self._lag_sent_max_s is None else max(self._lag_sent_max_s, lag)

    def get(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def rejected(self, reason: str | None = None) -> int:
        """Dead letters with ``reason`` (all of them without)."""
        with self._lock:
            return self._rejected[reason] if reason is not None else sum(self._rejected.values())

    def snapshot(self, *, reset_window: bool = False) -> dict[str, Any]:
        """Every counter, the dead letters by reason, and the lags; ``reset_window`` restarts ``lag_sent_max_s``."""
        with self._lock:
            out: dict[str, Any] = dict.fromkeys(NAMES, 0) | dict(self._counts)
            out["rejected"] = dict(self._rejected)
            out["rejected_total"] = sum(self._rejected.values())
            out["lag_sample_s"] = self._lag_sample_s
            out["lag_sent_s"] = self._lag_sent_s
            out["lag_sent_max_s"] = self._lag_sent_max_s
            out["uptime_s"] = round(self._clock() - self.started_at, 1)
            if reset_window:
                self._lag_sent_max_s = None
        return out

    def log_line(self) -> str:
        snap = self.snapshot()
        parts = [f"{name}={snap.get(name, 0)}" for name in _SHOWN]
        parts.append(f"rejected={snap['rejected_total']}")
        if snap["rejected"]:
            parts.append("(" + ", ".join(f"{r}={n}" for r, n in sorted(snap["rejected"].items())) + ")")
        parts.append(f"lag_sent_s={snap['lag_sent_s']}")
        return " ".join(parts)
