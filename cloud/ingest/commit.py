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
receipts and acknowledges the messages.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import psycopg

from cloud.ingest.handler import TRUST_NODE, Prepared, TelemetryItem, VerifiedBatch
from cloud.store import writes
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


def commit_units(conn: psycopg.Connection, units: list[Prepared], scheme: writes.WriteScheme = "direct") -> Outcome:
    """Write ``units`` inside the caller's transaction and say what was done."""
    out = Outcome()
    letters: list[DeadLetter] = []
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
        claimed = set(first)
    else:
        # Some were stored already: before, or by a transaction that held the same batch at the same time
        # (another commit thread or worker), which the COPY waited for, so that its batch is visible now.
        late = writes.committed_batches(conn, [b.batch_id for _, b in fresh])
        for unit, batch in fresh:
            if batch.batch_id in late:
                _repeated_batch(out, unit, batch, late[batch.batch_id], letters)
        fresh = [(u, b) for u, b in fresh if b.batch_id not in late]
        items = [item for unit, _ in fresh for item in unit.items]
        first = dict(zip(reversed([i.key for i in items]), reversed(items), strict=True))
        claimed = writes.claim_messages(conn, [i.message for i in first.values()])
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
    inserted = writes.write_readings(conn, to_write, scheme)
    total = to_write.count if isinstance(to_write, writes.EncodedReadings) else len(to_write)
    out.counts["readings"] += inserted
    out.counts["readings_overlapping"] += total - inserted  # same device, metric and time from another message
    writes.insert_dead_letters(conn, letters)
    for letter in letters:
        out.rejected[letter.reason] += 1
    writes.insert_batches(conn, [writes.BatchRow(b.batch_id, b.tenant_id, b.gateway_id, b.frame, *per_batch[b.batch_id])
                                 for _, b in fresh])
    for _unit, batch in fresh:
        out.receipt(batch)
        out.counts["batches"] += 1
        out.gateways.add(batch.gateway_id)
        if out.oldest_sent_ms is None or batch.sent_ms < out.oldest_sent_ms:
            out.oldest_sent_ms = batch.sent_ms
    return out


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
