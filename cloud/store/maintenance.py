"""The store's upkeep loop: partitions ahead, rollups current, retention applied.

One :class:`Maintenance` owns one thread and one connection.  Among processes, one owner too:
a cycle runs only while its connection holds a session advisory lock, so any number of
processes (API, ingest workers, ``fieldtrust cloud maintain``) may start the loop and exactly
one does the work; if that one dies, its lock goes with its connection and another takes over
on its next cycle.  A failing cycle is logged and counted, a lost connection is reopened with
back-off, and :meth:`Maintenance.stop` ends the loop within one wait.

Plain PostgreSQL, every ``interval_s``: create partitions up to ``partitions_ahead_days`` ahead,
recompute the rollups of the hours writers marked (:func:`cloud.store.rollups.refresh_dirty`);
every ``retention_interval_s``: drop partitions and rollup rows past retention.
TimescaleDB: the extension's background jobs do all that; the loop sets their policies from the
configuration once per connection.

The loop connects as the owner (``database_url``: creating and dropping partitions is DDL) and
works in platform scope: every tenant's rollups and marks are its business (cloud.store.scope).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from cloud.config import CloudSettings
from cloud.store import db, partitions, retention, rollups, scope

log = logging.getLogger(__name__)

#: pg_try_advisory_lock key held by the working maintenance loop ("FT" "mnt" in ASCII).
LOCK_KEY = 0x4654_6D6E74
MAX_BACKOFF_S = 60.0


@dataclass
class Status:
    """What the loop has done, for health reports."""

    role: str = "starting"  # "owner", "standby" (another process holds the lock), "disconnected"
    backend: str | None = None
    cycles: int = 0
    errors: int = 0
    last_cycle_at: datetime | None = None
    last_error: str | None = None
    partitions_created: int = 0
    partitions_dropped: int = 0
    rollup_hours_refreshed: int = 0
    rollup_marks_pending: int = 0


class Maintenance:
    """Keeps the store in shape in a background thread; :meth:`start`, then :meth:`stop`."""

    def __init__(
        self,
        conninfo: str,
        *,
        partitions_ahead_days: int,
        policy: retention.RetentionPolicy,
        max_past_days: int,
        interval_s: float = 60.0,
        retention_interval_s: float = 3600.0,
    ) -> None:
        if interval_s <= 0 or retention_interval_s <= 0:
            raise ValueError("interval_s and retention_interval_s must be positive")
        self.conninfo = conninfo
        self.partitions_ahead_days = partitions_ahead_days
        self.policy = policy
        self.max_past_days = max_past_days
        self.interval_s = interval_s
        self.retention_interval_s = retention_interval_s
        self.status = Status()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retention_due = 0.0
        # per connection: whether it holds the owner lock, and has set TimescaleDB's policies
        self._owner = False
        self._configured = False

    @classmethod
    def from_settings(cls, settings: CloudSettings, **kwargs: float) -> Maintenance:
        return cls(
            settings.database_url,
            partitions_ahead_days=settings.partitions_ahead_days,
            policy=retention.RetentionPolicy.from_settings(settings),
            max_past_days=settings.ingest_max_past_days,
            **kwargs,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("maintenance loop already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="store-maintenance", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the loop to end and wait for it (a cycle in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("store maintenance did not stop within %.0f s", timeout)
            self._thread = None

    def run(self) -> None:
        """The loop itself (in :meth:`start`'s thread, or in the caller's for a foreground service)."""
        backoff = 1.0
        while not self._stop.is_set():
            try:
                with db.connect(self.conninfo, autocommit=True, application="fieldtrust-maintenance") as conn:
                    self._owner = self._configured = False
                    backoff = 1.0
                    while not self._stop.is_set():
                        self._guarded_cycle(conn)
                        self._stop.wait(self.interval_s)
            except psycopg.OperationalError as exc:
                self.status.role = "disconnected"
                self._failed(f"database unavailable: {exc}")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _guarded_cycle(self, conn: psycopg.Connection) -> None:
        try:
            self.cycle(conn)
        except psycopg.OperationalError:
            raise  # the connection is gone: reconnect in run()
        except Exception as exc:  # one bad cycle must not end the loop: counted, logged, retried next cycle
            log.exception("store maintenance cycle failed")
            self._failed(f"{type(exc).__name__}: {exc}")

    def _failed(self, message: str) -> None:
        self.status.errors += 1
        self.status.last_error = message

    # -- one cycle -----------------------------------------------------------------------------

    def cycle(self, conn: psycopg.Connection) -> None:
        """One round of upkeep on ``conn`` (autocommit, the owner's), if this process holds the owner lock."""
        scope.platform_session(conn)  # an owner subject to FORCEd row-level security sees every tenant's rows
        if not self._owner:  # a session lock: held until this connection closes
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
            self._owner = bool(row and row[0])
        if not self._owner:
            self.status.role = "standby"
            return
        self.status.role = "owner"
        kind = db.backend(conn)
        self.status.backend = kind
        now = time.monotonic()
        if kind == "timescale":
            if not self._configured:
                retention.configure_timescale(conn, self.policy, self.max_past_days)
                self._configured = True
        else:
            self.status.partitions_created += len(partitions.ensure_ahead(conn, self.partitions_ahead_days))
            wall = datetime.now(UTC)
            refreshed = rollups.refresh_dirty(conn, horizon=self.policy.raw_horizon(wall))
            self.status.rollup_hours_refreshed += refreshed.hours_marked
            if now >= self._retention_due:
                dropped = retention.apply_retention(conn, self.policy, wall)
                self.status.partitions_dropped += len(dropped.partitions)
                if dropped.partitions:
                    log.info("retention dropped %s", ", ".join(dropped.partitions))
                self._retention_due = now + self.retention_interval_s
            self.status.rollup_marks_pending = rollups.pending(conn)
        self.status.cycles += 1
        self.status.last_cycle_at = datetime.now(UTC)
