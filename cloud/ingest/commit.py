"""Several prepared messages, one transaction: the duplicate rule applied, rows and dead letters written.

Per batch: a batch id already in ``ft.batches`` (or earlier in this transaction, or committed
meanwhile by a transaction that held it too) with the same frame is a redelivery — receipted
again, nothing re-written; with a different frame it is a conflict — dead-lettered and alarmed,
not receipted (the first stored version stays).  Per telemetry message (device, key epoch,
sequence): the ledger claim decides; a message already stored with the same digest is a
duplicate (counted, its rows not written again), with another digest a conflict (dead-lettered
with both digests, alarmed).  Arrival order never matters: the ledger is keyed by identity, not
by position.

The caller commits (``with conn.transaction(): commit_units(...)``) and only then publishes the
receipts and acknowledges the messages.  The transaction runs in platform scope (cloud.store.scope):
the ingest is a trusted platform service that writes every tenant's rows, each row still checked by
the tables' row-level security policies.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field

import psycopg
from psycopg import errors

from cloud.ingest.handler import TRUST_NODE, Prepared, TelemetryItem, VerifiedBatch
from cloud.metering import ingest as metering
from cloud.store import scope, writes
from cloud.store.writes import DeadLetter, MessageKey
from contract.telemetry import CONFLICT, DUPLICATE, classify

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What one transaction did: for receipts, counters and last-seen times."""

    receipts: dict[tuple[str, str], tuple[bytes, list[str]]] = field(default_factory=dict)  # (tenant, gw) -> key, ids
    counts: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)  # dead letters by reason
    newest_ms: int | None = None  # newest reading time written
    oldest_sent_ms: int | None = None  # earliest 'sent' of the batches committed
    gateways: set[str] = field(default_factory=set)
    devices: set[str] = field(default_factory=set)

    def receipt(self, batch: VerifiedBatch) -> None:
        key, ids = self.receipts.setdefault((batch.tenant_id, batch.gateway_id), (batch.key, []))
        if batch.batch_id not in ids:
            ids.append(batch.batch_id)


def _conflict_letter(topic: str, item: TelemetryItem, stored: bytes, why: str) -> DeadLetter:
    m = item.message
    detail = (f"{m.device_id}:{m.epoch}:{m.seq} {why}: stored digest {stored.hex()}, this one {m.digest.hex()}"
              f" (batch {m.batch_id})")
    return DeadLetter(topic, "conflict", detail, m.frame or item.body, m.tenant_id, m.gateway_id, m.device_id)


#: savepoints of the common path, by name in SQL so that a pipeline carries them without a round trip each
_LEDGER = "ft_commit_ledger"
_READINGS = "ft_commit_readings"


def commit_units(conn: psycopg.Connection, units: list[Prepared], scheme: writes.WriteScheme = "direct", *,
                 metering_on: bool = True) -> Outcome:
    """Write ``units`` inside the caller's transaction (in platform scope) and say what was done.

    ``metering_on``: add the tenants' usage to their monthly counters, last, in the same transaction
    (cloud.metering.ingest); off only to measure what it costs (bench/metering_ab.py).

    Round trips, in the common case (every batch and message new, no reading stored before): one
    pipeline of the scope, the staging table, the batches lookup and the ledger insert; the readings'
    COPY into the staging table; one pipeline of every other write (readings moved, dead letters,
    batches, usage).  Each insert that may meet a row stored before runs under a savepoint sent in
    the same pipeline; only when it does (a redelivery, a repeated message, an overlapping reading)
    is the savepoint rolled back to and the careful path taken.  (Before, the same commit took about
    fifteen round trips; one-message transactions commit 10-20 % faster this way: docs/performance.md.)
    """
    out = Outcome()
    letters: list[DeadLetter] = []
    candidates = [(u, u.batch) for u in units if u.batch is not None]
    items = [item for unit, _ in candidates for item in unit.items]
    first = dict(zip(reversed([i.key for i in items]), reversed(items), strict=True))  # the earliest one stays
    batch_ids = {b.batch_id for _, b in candidates}
    common = len(batch_ids) == len(candidates)  # a batch twice in the group: the careful path sorts it out
    with conn.pipeline() as pipeline:
        scope.platform_scope(conn)
        staged = conn.execute(writes.STAGE_EXISTS)
        if common:
            known = conn.execute(writes.COMMITTED_BATCHES, (list(batch_ids),))
            conn.execute(f"SAVEPOINT {_LEDGER}")
            writes.insert_messages(conn, [i.message for i in first.values()])
            try:
                pipeline.sync()
                common = not known.fetchall()  # no batch stored before
            except errors.UniqueViolation:  # a message stored before: the careful path, from the savepoint
                common = False
            if not common:
                conn.execute(f"ROLLBACK TO SAVEPOINT {_LEDGER}")
                conn.execute(f"RELEASE SAVEPOINT {_LEDGER}")
        row = staged.fetchone()  # (in the careful case, this syncs)
        if not (row and row[0]):  # the session's first commit, or the one after a rollback that took it away
            writes.create_stage(conn)
    if common:
        fresh, claimed = candidates, set(first)
        for unit in units:
            if unit.batch is None:
                letters += unit.dead_letters
                out.counts["messages_refused"] += 1
    else:
        fresh, items, first, claimed = _claim_carefully(conn, out, units, letters)
    per_batch: dict[str, tuple[int, int, int]] = {}
    to_write: writes.EncodedReadings | list[writes.ReadingRow]
    if len(claimed) == len(items):  # the common case: every message new, so each unit's own sums hold
        parts = [u.encoded for u, _ in fresh if u.encoded is not None]
        small = [row for u, _ in fresh if u.encoded is None for item in u.items for row in item.rows]
        to_write = writes.EncodedReadings.join([*parts, writes.encode_readings(conn, small)])
        node_rows = 0
        for unit, batch in fresh:
            letters += unit.dead_letters
            letters += unit.row_letters
            per_batch[batch.batch_id] = (unit.readings, 0, len(unit.dead_letters) + len(unit.row_letters))
            node_rows += unit.node_readings
            out.devices |= unit.devices
            if unit.newest_ms is not None and (out.newest_ms is None or unit.newest_ms > out.newest_ms):
                out.newest_ms = unit.newest_ms
        out.counts.update(messages_new=len(items), node_signed=node_rows, gateway_attested=to_write.count - node_rows)
    else:
        to_write = _sort_out(conn, out, fresh, first, claimed, letters, per_batch)
    total = to_write.count if isinstance(to_write, writes.EncodedReadings) else len(to_write)
    stored = None if len(claimed) == len(items) else [first[key] for key in claimed]  # None: every message new
    writes.stage_readings(conn, to_write, created=True)
    batch_rows = [writes.BatchRow(b.batch_id, b.tenant_id, b.gateway_id, b.frame, *per_batch[b.batch_id])
                  for _, b in fresh]
    usage = metering.usage_of_commit(fresh, stored) if metering_on else None

    def the_rest(inserted: int) -> None:
        """Everything after the readings, in the order that keeps the counter rows' locks shortest."""
        writes.insert_dead_letters(conn, letters)
        writes.insert_batches(conn, batch_rows)
        if usage is not None:  # last: its counter rows stay locked until the commit
            metering.settle_overlaps(conn, usage, total, inserted, stored if stored is not None else first.values())
            metering.record(conn, usage)

    with conn.pipeline() as pipeline:
        if common:
            conn.execute(f"RELEASE SAVEPOINT {_LEDGER}")
        inserted = -1
        if scheme == "direct":
            conn.execute(f"SAVEPOINT {_READINGS}")
            try:
                # the violation may surface at any statement of the pipeline, not only at the sync
                writes.move_staged(conn, skip_existing=False)
                the_rest(total)  # a plain insert stores every row or fails
                pipeline.sync()
            except errors.UniqueViolation:  # a reading stored before by another message: skip those
                with contextlib.suppress(psycopg.errors.PipelineAborted, errors.UniqueViolation):
                    pipeline.sync()
                conn.execute(f"ROLLBACK TO SAVEPOINT {_READINGS}")
                conn.execute(f"RELEASE SAVEPOINT {_READINGS}")
            else:
                inserted = total
                conn.execute(f"RELEASE SAVEPOINT {_READINGS}")
        if inserted < 0:
            moved = writes.move_staged(conn, skip_existing=True)
            pipeline.sync()
            inserted = moved.rowcount
            the_rest(inserted)
    out.counts["readings"] += inserted
    out.counts["readings_overlapping"] += total - inserted  # same device, metric and time from another message
    for letter in letters:
        out.rejected[letter.reason] += 1
    for _unit, batch in fresh:
        out.receipt(batch)
        out.counts["batches"] += 1
        out.gateways.add(batch.gateway_id)
        if out.oldest_sent_ms is None or batch.sent_ms < out.oldest_sent_ms:
            out.oldest_sent_ms = batch.sent_ms
    return out


def _claim_carefully(conn: psycopg.Connection, out: Outcome, units: list[Prepared], letters: list[DeadLetter]
                     ) -> tuple[list[tuple[Prepared, VerifiedBatch]], list[TelemetryItem],
                                dict[MessageKey, TelemetryItem], set[MessageKey]]:
    """Batches stored before set aside, then the ledger claims of the rest, statement by statement: the
    new batches, their telemetry items, the first item of each identity and the identities claimed here."""
    stored_batches = writes.committed_batches(conn, {u.batch.batch_id for u in units if u.batch is not None})
    fresh: list[tuple[Prepared, VerifiedBatch]] = []
    for unit in units:
        batch = unit.batch
        if batch is None:
            letters += unit.dead_letters
            out.counts["messages_refused"] += 1
            continue
        known = stored_batches.get(batch.batch_id)
        if known is None:
            stored_batches[batch.batch_id] = batch.frame_digest
            fresh.append((unit, batch))
        else:
            _repeated_batch(out, unit, batch, known, letters)
    # Telemetry messages of new batches: the first of each identity claims it in the ledger.
    items = [item for unit, _ in fresh for item in unit.items]
    first = dict(zip(reversed([i.key for i in items]), reversed(items), strict=True))  # the earliest one stays
    if writes.copy_messages(conn, [i.message for i in first.values()]):
        return fresh, items, first, set(first)
    # Some were stored already: before, or by a transaction that held the same batch at the same time
    # (another commit thread or worker), which the insert waited for, so that its batch is visible now.
    late = writes.committed_batches(conn, [b.batch_id for _, b in fresh])
    for unit, batch in fresh:
        if batch.batch_id in late:
            _repeated_batch(out, unit, batch, late[batch.batch_id], letters)
    fresh = [(u, b) for u, b in fresh if b.batch_id not in late]
    items = [item for unit, _ in fresh for item in unit.items]
    first = dict(zip(reversed([i.key for i in items]), reversed(items), strict=True))
    return fresh, items, first, writes.claim_messages(conn, [i.message for i in first.values()])


def _sort_out(conn: psycopg.Connection, out: Outcome, fresh: list[tuple[Prepared, VerifiedBatch]],
              first: dict[MessageKey, TelemetryItem], claimed: set[MessageKey], letters: list[DeadLetter],
              per_batch: dict[str, tuple[int, int, int]]) -> list[writes.ReadingRow]:
    """Message by message, when some were stored before or came twice: the rows of those claimed here."""
    earlier = writes.stored_digests(conn, [k for k in first if k not in claimed])
    rows: list[writes.ReadingRow] = []
    new = node_rows = 0
    for unit, batch in fresh:
        readings = duplicates = 0
        rejected = len(unit.dead_letters)
        letters += unit.dead_letters
        for item in unit.items:
            key = item.key
            if key in claimed and first[key] is item:
                rows += item.rows
                readings += len(item.rows)
                letters += item.rejects
                rejected += len(item.rejects)
                if item.message.trust == TRUST_NODE:
                    node_rows += len(item.rows)
                new += 1
                out.devices.add(item.message.device_id)
                if item.newest_ms is not None and (out.newest_ms is None or item.newest_ms > out.newest_ms):
                    out.newest_ms = item.newest_ms
                continue
            # Claimed here: a repeat within this transaction; else compare with what an earlier one stored.
            stored = first[key].message.digest if key in claimed else earlier[key]
            verdict = classify(stored, item.message.digest)
            if verdict == DUPLICATE:
                duplicates += 1
                continue
            assert verdict == CONFLICT
            out.counts["conflicts"] += 1
            rejected += 1
            log.error("CONFLICT: %s:%s:%s from gateway %s arrived with different bytes (stored digest %s, this one %s)",
                      *key, batch.gateway_id, stored.hex(), item.message.digest.hex())
            letters.append(_conflict_letter(unit.topic, item, stored, "same identity, different bytes"))
        per_batch[batch.batch_id] = (readings, duplicates, rejected)
        out.counts["duplicates"] += duplicates
    out.counts.update(messages_new=new, node_signed=node_rows, gateway_attested=len(rows) - node_rows)
    return rows


def _repeated_batch(out: Outcome, unit: Prepared, batch: VerifiedBatch, stored: bytes,
                    letters: list[DeadLetter]) -> None:
    """A batch id already stored: a redelivery (the same frame) or a conflict (other bytes)."""
    if stored == batch.frame_digest:  # a duplicate at the batch level: nothing inside is looked at again
        out.counts["batches_redelivered"] += 1
        out.counts["duplicates"] += 1
        out.receipt(batch)
        return
    out.counts["conflicts"] += 1
    log.error("CONFLICT: batch %s arrived again with different bytes (stored frame sha256 %s, this one %s)",
              batch.batch_id, stored.hex(), batch.frame_digest.hex())
    letters.append(DeadLetter(unit.topic, "conflict", f"batch {batch.batch_id}: stored frame sha256 "
                              f"{stored.hex()}, this one {batch.frame_digest.hex()}", unit.payload,
                              batch.tenant_id, batch.gateway_id))
