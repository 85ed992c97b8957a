"""The durable outbox: every reading the gateway captured, kept on disk until the cloud receipts it.

One SQLite file in WAL mode, one connection owned by a lock, one committed transaction per
capture: a reading counts as *captured* only once its transaction has committed, and the
broker's PUBACK to a node is sent only after that (the intake stores before it returns).

``synchronous=FULL``: in WAL mode ``NORMAL`` already survives a crash of the process, but a power
cut may roll back the last transactions that had reported success.  A gateway on a farm loses
power routinely, and a reading we told a node (or a scheduler) we captured must still be there
afterwards; FULL costs one fsync per capture, which ``bench/outbox_rates.py`` measures.

Items move into a batch when the uplink seals one: the signed frame *contains* the items'
bytes, so the items leave the item table in the same transaction that stores the frame; nothing
is deleted before the cloud's receipt names the batch.  The file is bounded by ``max_bytes`` of
payload with one overflow policy, drop-oldest: the oldest pending item or unreceipted batch goes
first, counted (persisted) and reported in health; the newest is never dropped silently.
"""

from __future__ import annotations

import fcntl
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from edge_agent.logging_setup import LogLimiter

log = logging.getLogger(__name__)

ItemKind = Literal["tel", "node", "conflict"]
_T = TypeVar("_T")
#: the counter name of the gateway's own batch sequence; "#" cannot appear in a device id
BATCH_COUNTER = "#batch"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS item (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('tel', 'node', 'conflict')),
    data BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS batch (
    ep INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    frame BLOB NOT NULL,
    n_items INTEGER NOT NULL,
    oldest_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    last_sent_ms INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (ep, seq)
);
CREATE TABLE IF NOT EXISTS seq_counter (
    dev TEXT NOT NULL,
    ep INTEGER NOT NULL,
    next INTEGER NOT NULL,
    PRIMARY KEY (dev, ep)
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""
_COUNTERS = ("captured", "dropped", "confirmed")
#: attempts at making room when the disk is full; each drops twice the oldest payload the previous did
_FULL_ATTEMPTS = 12


class OutboxError(RuntimeError):
    """The outbox file cannot be opened or is not an outbox."""


class OutboxFull(OutboxError):
    """The disk is full and dropping the oldest data did not make room (nothing left to drop)."""


def _disk_full(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_FULL: the file system is full, the process's file size limit is reached, or max_page_count."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc)


@dataclass(frozen=True, slots=True)
class Item:
    id: int
    kind: ItemKind
    data: bytes
    created_ms: int


@dataclass(frozen=True, slots=True)
class SealedBatch:
    """A signed batch frame waiting for its receipt; the same bytes are re-sent."""

    ep: int
    seq: int
    frame: bytes
    n_items: int
    attempts: int


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int  # items not yet receipted (pending + inside unreceipted batches)
    pending: int  # items not yet in a batch
    batches: int  # unreceipted batches
    bytes: int  # payload bytes held (items + batch frames)
    oldest_ms: int | None
    captured: int
    dropped: int
    confirmed: int


@dataclass(slots=True)
class _BatchInfo:
    n_items: int
    size: int
    oldest_ms: int


#: build(seq, items) -> (frame, n): the signed frame and how many leading items it holds (>= 1)
BatchBuilder = Callable[[int, list[Item]], tuple[bytes, int]]


class Outbox:
    """A bounded, crash-safe store of captured items and sealed batches.  Thread-safe."""

    def __init__(self, path: Path, max_bytes: int, *, time_fn: Callable[[], float] = time.time) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._time = time_fn
        self._lock = threading.Lock()
        self._log_limit = LogLimiter(60.0)
        path.parent.mkdir(parents=True, exist_ok=True)
        # One process per outbox: a second agent on the same file would send every batch twice.
        self._lock_file = open(path.with_name(path.name + ".lock"), "a")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise OutboxError(f"{path}: in use by another process (another agent running?)") from None
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout=5000")
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise OutboxError(f"{path}: cannot switch to WAL mode (got {mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._lock_file.close()
            raise OutboxError(f"{path}: not a usable outbox: {exc}") from None
        self._counters = dict.fromkeys(_COUNTERS, 0)
        for name, value in self._db.execute("SELECT name, value FROM meta"):
            if name in self._counters:
                self._counters[name] = value
        row = self._db.execute("SELECT count(*), coalesce(sum(length(data)), 0) FROM item").fetchone()
        self._pending, self._pending_bytes = int(row[0]), int(row[1])
        self._batches: dict[tuple[int, int], _BatchInfo] = {
            (ep, seq): _BatchInfo(n, size, oldest)
            for ep, seq, n, size, oldest in self._db.execute(
                "SELECT ep, seq, n_items, length(frame), oldest_ms FROM batch"
            )
        }

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._lock_file.close()  # releases the flock

    # -- capture ---------------------------------------------------------------------------

    def capture_attested(self, dev: str, ep: int, make_body: Callable[[int], bytes]) -> int:
        """Store a gateway-attested body under the next sequence number of (dev, ep).

        ``make_body(seq)`` returns the body bytes; the sequence number is persisted in the same
        transaction as the item, so it never repeats, even across a crash.  Returns the seq.
        """
        def capture() -> int:
            with self._transaction():
                seq = self._next_seq(dev, ep)
                self._insert(make_body(seq), "tel")
            return seq

        return self._making_room(capture)

    def capture_frame(self, frame: bytes, kind: ItemKind = "node") -> None:
        """Store a node frame verbatim (``kind='conflict'`` for a frame that contradicts one seen)."""
        def capture() -> None:
            with self._transaction():
                self._insert(frame, kind)

        self._making_room(capture)

    def _making_room(self, capture: Callable[[], _T]) -> _T:
        """Run ``capture`` (one transaction); when the disk is full, apply the overflow policy to the disk too.

        drop-oldest: the oldest data goes (counted as dropped, like an overflow of ``max_bytes``), then the
        capture is tried again, so a full disk costs the oldest readings, never the newest and never a crash.
        Raises :class:`OutboxFull` when nothing is left to drop.
        """
        with self._lock:
            room = 4096
            for _attempt in range(_FULL_ATTEMPTS):
                try:
                    return capture()
                except sqlite3.OperationalError as exc:
                    if not _disk_full(exc):
                        raise
                    if self._log_limit.allow("disk_full") is not None:
                        log.error("outbox %s: the disk is full (%s); dropping the oldest data to make room",
                                  self.path, exc)
                if not self._drop_for_room(room):
                    break
                room *= 2
            raise OutboxFull(f"{self.path}: the disk is full and there is nothing left to drop")

    def _drop_for_room(self, room: int) -> bool:
        """Drop the oldest ``room`` bytes of payload (at least one item or batch); whether anything went."""
        before = self._counters["dropped"]
        held = self._pending_bytes + sum(b.size for b in self._batches.values())
        try:
            with self._transaction():
                self._drop_oldest(keep_id=-1, limit=max(0, held - room))
        except sqlite3.OperationalError as exc:
            if not _disk_full(exc):
                raise
            return False
        return self._counters["dropped"] > before

    # -- batches ---------------------------------------------------------------------------

    def seal_batch(self, ep: int, max_items: int, *, newest_first: bool, build: BatchBuilder) -> SealedBatch | None:
        """Move up to ``max_items`` pending items into a new signed batch, in one transaction.

        The gateway's batch sequence number is allocated and persisted with the batch, so a
        sequence number is never used for two different frames.
        """
        order = "DESC" if newest_first else "ASC"
        with self._lock, self._transaction():
            rows = self._db.execute(
                f"SELECT id, kind, data, created_ms FROM item ORDER BY id {order} LIMIT ?", (max_items,)
            ).fetchall()
            if not rows:
                return None
            items = [Item(*row) for row in rows]
            seq = self._next_seq(BATCH_COUNTER, ep)
            frame, n = build(seq, items)
            if not 1 <= n <= len(items):
                raise ValueError(f"batch builder used {n} of {len(items)} items")
            used = items[:n]
            now = self._now_ms()
            oldest = min(i.created_ms for i in used)
            self._db.execute(
                "INSERT INTO batch (ep, seq, frame, n_items, oldest_ms, created_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (ep, seq, frame, n, oldest, now),
            )
            self._db.executemany("DELETE FROM item WHERE id = ?", [(i.id,) for i in used])
            self._pending -= n
            self._pending_bytes -= sum(len(i.data) for i in used)
            self._batches[(ep, seq)] = _BatchInfo(n, len(frame), oldest)
            # a frame is larger than its items (signature, escaped node frames): re-check the bound
            self._drop_oldest(keep_id=-1, keep_batch=(ep, seq))
        return SealedBatch(ep, seq, frame, n, 0)

    def batch(self, ep: int, seq: int) -> SealedBatch | None:
        """The stored frame of an unreceipted batch, or None if it was receipted or dropped."""
        with self._lock:
            row = self._db.execute(
                "SELECT frame, n_items, attempts FROM batch WHERE ep = ? AND seq = ?", (ep, seq)
            ).fetchone()
        return SealedBatch(ep, seq, row[0], row[1], row[2]) if row else None

    def batch_keys(self) -> list[tuple[int, int]]:
        """(ep, seq) of every unreceipted batch, oldest first."""
        with self._lock:
            return sorted(self._batches)

    def mark_sent(self, ep: int, seq: int) -> None:
        with self._lock, self._transaction():
            self._db.execute(
                "UPDATE batch SET attempts = attempts + 1, last_sent_ms = ? WHERE ep = ? AND seq = ?",
                (self._now_ms(), ep, seq),
            )

    def confirm(self, keys: Iterable[tuple[int, int]]) -> tuple[int, int]:
        """Delete receipted batches.  Returns (batches deleted, items confirmed); unknown keys are skipped."""
        with self._lock, self._transaction():
            batches = items = 0
            for key in keys:
                info = self._batches.pop(key, None)
                if info is None:
                    continue
                self._db.execute("DELETE FROM batch WHERE ep = ? AND seq = ?", key)
                batches += 1
                items += info.n_items
            if items:
                self._bump("confirmed", items)
        return batches, items

    # -- reporting -------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    @property
    def in_flight(self) -> int:
        return len(self._batches)

    def oldest_pending_ms(self) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT created_ms FROM item ORDER BY id LIMIT 1").fetchone()
        return row[0] if row else None

    def stats(self) -> OutboxStats:
        oldest_item = self.oldest_pending_ms()
        with self._lock:
            infos = list(self._batches.values())
            candidates = [b.oldest_ms for b in infos] + ([oldest_item] if oldest_item is not None else [])
            return OutboxStats(
                depth=self._pending + sum(b.n_items for b in infos),
                pending=self._pending,
                batches=len(infos),
                bytes=self._pending_bytes + sum(b.size for b in infos),
                oldest_ms=min(candidates) if candidates else None,
                captured=self._counters["captured"],
                dropped=self._counters["dropped"],
                confirmed=self._counters["confirmed"],
            )

    def integrity_check(self) -> str:
        with self._lock:
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    # -- internals (called with the lock held) ---------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        snapshot = (self._pending, self._pending_bytes, dict(self._batches), dict(self._counters))
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (SQLITE_FULL does): a second ROLLBACK would raise
            # "no transaction is active" and hide the real error, with the counters left wrong
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._pending, self._pending_bytes, self._batches, self._counters = snapshot
            raise

    def _now_ms(self) -> int:
        return int(self._time() * 1000)

    def _next_seq(self, dev: str, ep: int) -> int:
        row = self._db.execute("SELECT next FROM seq_counter WHERE dev = ? AND ep = ?", (dev, ep)).fetchone()
        seq = row[0] if row else 0
        self._db.execute(
            "INSERT INTO seq_counter (dev, ep, next) VALUES (?, ?, ?) "
            "ON CONFLICT (dev, ep) DO UPDATE SET next = excluded.next",
            (dev, ep, seq + 1),
        )
        return seq

    def _bump(self, name: str, by: int = 1) -> None:
        self._counters[name] += by
        self._db.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, self._counters[name]),
        )

    def _insert(self, data: bytes, kind: ItemKind) -> None:
        cur = self._db.execute(
            "INSERT INTO item (kind, data, created_ms) VALUES (?, ?, ?)", (kind, data, self._now_ms())
        )
        self._pending += 1
        self._pending_bytes += len(data)
        self._bump("captured")
        self._drop_oldest(keep_id=int(cur.lastrowid or 0))

    def _drop_oldest(self, keep_id: int, keep_batch: tuple[int, int] | None = None, limit: int | None = None) -> None:
        """Bring the payload under ``limit`` (``max_bytes``) by dropping the oldest data; never ``keep_id``
        nor ``keep_batch`` (the item or batch being stored)."""
        dropped = 0
        bound = self.max_bytes if limit is None else limit
        while self._pending_bytes + sum(b.size for b in self._batches.values()) > bound:
            row = self._db.execute(
                "SELECT id, length(data), created_ms FROM item WHERE id != ? ORDER BY id LIMIT 1", (keep_id,)
            ).fetchone()
            others = ((k, b) for k, b in self._batches.items() if k != keep_batch)
            oldest_batch = min(others, key=lambda kv: kv[1].oldest_ms, default=None)
            if oldest_batch is not None and (row is None or oldest_batch[1].oldest_ms <= row[2]):
                key, info = oldest_batch
                self._db.execute("DELETE FROM batch WHERE ep = ? AND seq = ?", key)
                del self._batches[key]
                dropped += info.n_items
            elif row is not None:
                self._db.execute("DELETE FROM item WHERE id = ?", (row[0],))
                self._pending -= 1
                self._pending_bytes -= row[1]
                dropped += 1
            else:
                break  # only the new item is left: a single item larger than the bound is kept
        if dropped:
            self._bump("dropped", dropped)
            if self._log_limit.allow("dropped") is not None:
                log.warning(
                    "outbox full (%d bytes of payload): dropping the oldest items; %d dropped in all",
                    self.max_bytes,
                    self._counters["dropped"],
                )
