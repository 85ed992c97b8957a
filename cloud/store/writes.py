"""The ingest's SQL: readings through a COPY, the duplicate ledger, batches, dead letters, lookups, counters.

The services log in as ``ft_app``, under row-level security, and PostgreSQL refuses ``COPY FROM``
into a table with row-level security.  So readings are COPYed (binary) into a temporary staging
table of the session, which has none, and moved by one ``INSERT … SELECT``, where every row
passes the tenant policy's check (the ingest runs in platform scope: cloud.store.scope); ledger
rows and batches go in by one ``INSERT … SELECT FROM unnest(…)`` of column arrays.

Exactly-once storage rests on two keys.  ``ft.messages`` (device, key epoch, sequence) is claimed
by one plain insert when every message is new, else with ``INSERT … ON CONFLICT DO NOTHING
RETURNING``: only the transaction that claims a message writes its readings, and a second worker
holding the same message waits on the first one's claim and then finds it taken.
``ft.readings``' primary key (device, metric, time) guards the rows themselves:
:func:`write_readings` moves the staged rows by a plain ``INSERT … SELECT`` inside a savepoint
and, only when another message already stored a reading with the same key (a unique violation),
repeats it from the same staged rows with ``ON CONFLICT DO NOTHING``.  The common case thus costs
one COPY and one insert; the guarantee is the second path's.  Rows may come already encoded for
COPY (:func:`encode_readings`, done by another thread than the writer).

Every function takes a connection and leaves the transaction to its caller.  Key order is sorted
wherever rows are locked, so two workers never wait on each other in a cycle.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple

import psycopg
from psycopg import errors, pq
from psycopg.copy import FileWriter
from psycopg.types.json import Jsonb

#: the columns of ft.readings, in the order rows are given to :func:`write_readings`
READING_COLUMNS = ("tenant_id", "device_id", "metric_id", "ts", "value", "value_text", "quality", "trust", "epoch",
                   "seq")
#: COPY types of those columns.  The ingest gives ``ts`` as an int sent as int8: PostgreSQL's binary
#: timestamptz *is* a 64-bit count of microseconds since 2000-01-01 UTC, so its readings need no datetime
#: object each on their way to the table.  Rows with an aware datetime there are sent as timestamptz.
_READING_TYPES = ["text", "text", "int4", "int8", "float8", "text", "int4", "int2", "int4", "int8"]
_READING_TYPES_DATETIME = [*_READING_TYPES[:3], "timestamptz", *_READING_TYPES[4:]]
_COLUMNS = ", ".join(READING_COLUMNS)
_STAGE = "ingest_stage"
#: 2000-01-01T00:00:00Z in Unix milliseconds: the origin of PostgreSQL's timestamps
PG_EPOCH_MS = 946_684_800_000
#: what begins and ends a binary COPY stream (signature, flags, header extension length; field count -1)
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER = b"\xff\xff"

#: (tenant, device, metric id, time: µs since 2000-01-01 UTC (:func:`pg_time`) or an aware datetime, value,
#: text value, quality, trust, key epoch, sequence)
ReadingRow = tuple[str, str, int, int | datetime, float | None, str | None, int, int, int, int]
MessageKey = tuple[str, int, int]
WriteScheme = Literal["direct", "merge"]


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    id: str
    tenant_id: str
    gateway_id: str | None
    kind: str
    spec_key: str | None


class MessageRow(NamedTuple):
    """One ledger row: a telemetry message's identity, digest and where it came from (in column order)."""

    device_id: str
    epoch: int
    seq: int
    tenant_id: str
    gateway_id: str
    digest: bytes
    trust: int
    batch_id: str
    frame: bytes | None  # node-signed: the node's frame, so its signature can be checked again later

    @property
    def key(self) -> MessageKey:
        return self.device_id, self.epoch, self.seq


@dataclass(frozen=True, slots=True)
class BatchRow:
    batch_id: str
    tenant_id: str
    gateway_id: str
    frame: bytes
    readings: int
    duplicates: int
    rejected: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    reason: str
    detail: str
    payload: bytes
    tenant_id: str | None = None
    gateway_id: str | None = None
    device_id: str | None = None


@dataclass(frozen=True, slots=True)
class EncodedReadings:
    """Readings already in binary COPY form, tuples only (:func:`encode_readings`).

    The ingest encodes a message's rows in the thread that parses it, so the thread that holds the
    transaction open only hands bytes to PostgreSQL.
    """

    data: bytes
    count: int

    @classmethod
    def join(cls, parts: Iterable[EncodedReadings]) -> EncodedReadings:
        parts = list(parts)
        return cls(b"".join(p.data for p in parts), sum(p.count for p in parts))


def pg_time(unix_ms: int) -> int:
    """A reading time for :data:`ReadingRow`: Unix milliseconds as microseconds since 2000-01-01 UTC."""
    return (unix_ms - PG_EPOCH_MS) * 1000


def prefer_lz4(conn: psycopg.Connection) -> bool:
    """Have this (autocommit) session compress large values with lz4 rather than PostgreSQL's default pglz.

    Each batch's frame is kept verbatim in ``ft.batches`` (tens of KB for a full batch), and
    compressing it took about 8 % of the ingest's database time with pglz, a third of that with
    lz4 (bench/ingest.py).  Values stay readable whatever the session's choice, each records its
    own method.  False when the server was built without lz4: pglz stays.
    """
    try:
        conn.execute("SET default_toast_compression = lz4")
    except errors.InvalidParameterValue:
        return False
    return True


# -- lookups (registry rows the ingest needs per message) ----------------------------------------


def gateway_tenants(conn: psycopg.Connection, gateway_ids: Iterable[str]) -> dict[str, str]:
    """Tenant of each registered gateway among ``gateway_ids``."""
    rows = conn.execute("SELECT id, tenant_id FROM ft.gateways WHERE id = ANY(%s)", (list(gateway_ids),))
    return dict(rows.fetchall())


def devices(conn: psycopg.Connection, device_ids: Iterable[str]) -> dict[str, DeviceInfo]:
    rows = conn.execute(
        "SELECT id, tenant_id, gateway_id, kind, spec_key FROM ft.devices WHERE id = ANY(%s)", (list(device_ids),)
    ).fetchall()
    return {r[0]: DeviceInfo(*r) for r in rows}


def key_state(conn: psycopg.Connection, owner_kind: str, owner_id: str, epoch: int) -> Literal["revoked", "unknown"]:
    """Why no usable key was found for (owner, epoch): it was revoked, or never registered."""
    row = conn.execute(
        "SELECT revoked_at IS NOT NULL FROM ft.keys WHERE owner_kind = %s AND owner_id = %s AND epoch = %s",
        (owner_kind, owner_id, epoch),
    ).fetchone()
    return "revoked" if row is not None and row[0] else "unknown"


def metric_ids(conn: psycopg.Connection, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Ids of (metric name, unit) pairs, registering the new ones."""
    wanted = sorted(set(pairs))
    if not wanted:
        return {}
    names, units = [p[0] for p in wanted], [p[1] for p in wanted]
    conn.execute(
        "INSERT INTO ft.metrics (name, unit) SELECT * FROM unnest(%s::text[], %s::text[]) ON CONFLICT DO NOTHING",
        (names, units),
    )
    rows = conn.execute(
        "SELECT m.name, m.unit, m.id FROM ft.metrics m JOIN unnest(%s::text[], %s::text[]) AS w(name, unit)"
        " USING (name, unit)",
        (names, units),
    ).fetchall()
    return {(name, unit): mid for name, unit, mid in rows}


# -- the ledgers --------------------------------------------------------------------------------


#: the query of :func:`committed_batches` (parameter: a list of batch ids), for a caller that pipelines it
COMMITTED_BATCHES = "SELECT batch_id, sha256(frame) FROM ft.batches WHERE batch_id = ANY(%s)"


def committed_batches(conn: psycopg.Connection, batch_ids: Iterable[str]) -> dict[str, bytes]:
    """SHA-256 of the stored frame of each already committed batch among ``batch_ids``."""
    rows = conn.execute(COMMITTED_BATCHES, (list(batch_ids),))
    return {bid: bytes(h) for bid, h in rows.fetchall()}


_MESSAGE_COLUMNS = "device_id, epoch, seq, tenant_id, gateway_id, digest, trust, batch_id, frame"
_INSERT_MESSAGES = (
    f"INSERT INTO ft.messages ({_MESSAGE_COLUMNS})"
    " SELECT * FROM unnest(%s::text[], %s::int[], %s::bigint[], %s::text[], %s::text[], %b::bytea[],"
    " %s::smallint[], %s::text[], %b::bytea[])"
)


def copy_messages(conn: psycopg.Connection, messages: Sequence[MessageRow]) -> bool:
    """Insert every ledger row by one plain insert (under a savepoint), or none: False when one was there already.

    The common case (every message new) at the cost of one statement; when it fails, a transaction
    that held one of the keys has finished (the insert waited for it), so what it stored is visible
    now.  Rows go in key order, so that two transactions never wait on each other in a cycle.
    """
    if not messages:
        return True
    try:
        with conn.transaction():
            conn.execute(_INSERT_MESSAGES, _message_columns(messages))
        return True
    except errors.UniqueViolation:
        return False


def insert_messages(conn: psycopg.Connection, messages: Sequence[MessageRow]) -> None:
    """:func:`copy_messages`' plain insert without its savepoint, for a caller that holds one of its own (the
    ingest's commit sends it in a pipeline with a named savepoint): a unique violation aborts the transaction
    back to that savepoint."""
    if messages:
        conn.execute(_INSERT_MESSAGES, _message_columns(messages))


def _message_columns(messages: Sequence[MessageRow]) -> list[list[Any]]:
    """The rows in key order (the first three columns; no two rows share a key), as one array per column."""
    return [list(c) for c in zip(*sorted(messages), strict=True)]


def claim_messages(conn: psycopg.Connection, messages: Sequence[MessageRow]) -> set[MessageKey]:
    """Insert the ledger rows not there yet (``INSERT … ON CONFLICT DO NOTHING RETURNING``, in key order);
    return the keys this transaction claimed."""
    if not messages:
        return set()
    rows = conn.execute(_INSERT_MESSAGES + " ON CONFLICT DO NOTHING RETURNING device_id, epoch, seq",
                        _message_columns(messages)).fetchall()
    return {(d, e, s) for d, e, s in rows}


def stored_digests(conn: psycopg.Connection, keys: Iterable[MessageKey]) -> dict[MessageKey, bytes]:
    """The digest stored in the ledger for each of ``keys`` that is there."""
    keys = list(keys)
    if not keys:
        return {}
    rows = conn.execute(
        "SELECT m.device_id, m.epoch, m.seq, m.digest FROM ft.messages m"
        " JOIN unnest(%s::text[], %s::int[], %s::bigint[]) AS k(device_id, epoch, seq) USING (device_id, epoch, seq)",
        ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
    ).fetchall()
    return {(d, e, s): bytes(h) for d, e, s, h in rows}


def insert_batches(conn: psycopg.Connection, batches: Sequence[BatchRow]) -> None:
    """Record committed batches in one ``INSERT … ON CONFLICT DO NOTHING`` (in key order): when a concurrent
    worker recorded one of them first, its record stays."""
    if not batches:
        return
    values = sorted((b.batch_id, b.tenant_id, b.gateway_id, b.frame, b.readings, b.duplicates, b.rejected)
                    for b in batches)
    conn.execute(
        "INSERT INTO ft.batches (batch_id, tenant_id, gateway_id, frame, readings, duplicates, rejected)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %b::bytea[], %s::int[], %s::int[], %s::int[])"
        " ON CONFLICT DO NOTHING",
        [list(column) for column in zip(*values, strict=True)],
    )


def insert_dead_letters(conn: psycopg.Connection, letters: Sequence[DeadLetter]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO ft.dead_letters (tenant_id, gateway_id, device_id, topic, reason, detail, payload)"
            " VALUES (%s, %s, %s, %s, %s, %s, %b)",
            [(d.tenant_id, d.gateway_id, d.device_id, d.topic, d.reason, d.detail, d.payload) for d in letters],
        )


# -- readings -----------------------------------------------------------------------------------


def _reading_types(rows: Sequence[ReadingRow]) -> list[str]:
    return _READING_TYPES_DATETIME if isinstance(rows[0][3], datetime) else _READING_TYPES


def encode_readings(conn: psycopg.Connection, rows: Sequence[ReadingRow]) -> EncodedReadings:
    """``rows`` as :func:`copy_readings` would send them, with psycopg's own dumpers; no round trip.

    ``conn`` only lends its adapters (any connection of the same database will do), so a thread
    other than the writer's can do this work.
    """
    if not rows:
        return EncodedReadings(b"", 0)
    out = io.BytesIO()
    with conn.cursor() as cur, psycopg.Copy(cur, binary=True, writer=FileWriter(out)) as copy:
        copy.set_types(_reading_types(rows))
        for row in rows:
            copy.write_row(row)
    data = out.getvalue()
    if not (data.startswith(_COPY_HEADER) and data.endswith(_COPY_TRAILER)):
        raise RuntimeError("psycopg wrote a binary COPY stream this module does not know how to split")
    return EncodedReadings(data[len(_COPY_HEADER) : -len(_COPY_TRAILER)], len(rows))


def copy_readings(conn: psycopg.Connection, rows: Sequence[ReadingRow] | EncodedReadings,
                  table: str = "ft.readings") -> None:
    """Binary COPY of ``rows`` (tuples, or already encoded) into ``table`` (ft.readings, or the staging table)."""
    if not (rows.count if isinstance(rows, EncodedReadings) else rows):
        return
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
        if isinstance(rows, EncodedReadings):
            copy.write(_COPY_HEADER)
            copy.write(rows.data)
            copy.write(_COPY_TRAILER)
            return
        copy.set_types(_reading_types(rows))
        for row in rows:
            copy.write_row(row)


#: whether this session's staging table exists (one row, one boolean), for a caller that pipelines it.  Asked
#: first because ``CREATE TEMP TABLE IF NOT EXISTS … (LIKE ft.readings …)`` works out the whole definition
#: before it finds the table there: 0.6 ms per transaction, as much as the rest of a one-message commit's
#: statements together (measured as ft_app, synchronous_commit off, an otherwise idle server).
STAGE_EXISTS = f"SELECT to_regclass('pg_temp.{_STAGE}') IS NOT NULL"


def create_stage(conn: psycopg.Connection) -> None:
    """Create this session's staging table for :func:`stage_readings` (see :data:`STAGE_EXISTS`)."""
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (LIKE ft.readings INCLUDING DEFAULTS)"
                 " ON COMMIT DELETE ROWS")


def stage_exists(conn: psycopg.Connection) -> bool:
    row = conn.execute(STAGE_EXISTS).fetchone()
    return bool(row and row[0])


def stage_readings(conn: psycopg.Connection, rows: Sequence[ReadingRow] | EncodedReadings, *,
                   created: bool = False) -> None:
    """COPY ``rows`` into this session's (empty) staging table for :func:`write_readings`.

    The temporary table is created on first use in a session (and again after a rolled-back
    transaction took it away).  Its rows go at commit (ON COMMIT DELETE ROWS: the file is truncated
    in place, no catalog change) and are deleted after each use, for a second use in the same
    transaction.  (A TRUNCATE per use gave the table a new file and catalog row every time: with
    many small transactions, as single-node messages make, that was the dearest part of a write.)
    ``created``: the caller made sure of the table earlier in this transaction (the ingest's commit asks
    in its first round trip).
    """
    if not created and not stage_exists(conn):
        create_stage(conn)
    copy_readings(conn, rows, _STAGE)


def move_staged(conn: psycopg.Connection, *, skip_existing: bool) -> psycopg.Cursor[Any]:
    """Move the staged rows into ft.readings (a unique violation is raised unless ``skip_existing``), then
    empty the staging table.  The insert's cursor: its ``rowcount`` (the rows inserted) is known once the
    statement ran — at once, or in a pipeline after its sync."""
    cur = conn.execute(f"INSERT INTO ft.readings ({_COLUMNS}) SELECT {_COLUMNS} FROM {_STAGE}"
                       + (" ON CONFLICT DO NOTHING" if skip_existing else ""))
    conn.execute(f"DELETE FROM {_STAGE}")
    return cur


def _insert_staged(conn: psycopg.Connection, *, skip_existing: bool) -> int:
    return move_staged(conn, skip_existing=skip_existing).rowcount


def write_readings(conn: psycopg.Connection, rows: Sequence[ReadingRow] | EncodedReadings,
                   scheme: WriteScheme = "direct") -> int:
    """Store ``rows`` inside the caller's transaction, skipping keys already stored; returns the rows inserted.

    Both schemes COPY into the staging table.  ``direct`` then moves the rows by a plain insert under a
    savepoint and, on a unique violation, again with ``ON CONFLICT DO NOTHING``; ``merge`` always
    skips existing keys.
    """
    count = rows.count if isinstance(rows, EncodedReadings) else len(rows)
    if not count:
        return 0
    if conn.autocommit and conn.info.transaction_status == pq.TransactionStatus.IDLE:
        raise RuntimeError("write_readings runs inside a transaction (the staged rows go at its commit)")
    stage_readings(conn, rows)
    if scheme == "direct":
        try:
            with conn.transaction():
                return _insert_staged(conn, skip_existing=False)
        except errors.UniqueViolation:
            pass  # the savepoint took the insert (and the DELETE) back: the staged rows are still there
    return _insert_staged(conn, skip_existing=True)


# -- after the commit ---------------------------------------------------------------------------


def touch_last_seen(conn: psycopg.Connection, table: Literal["gateways", "devices"],
                    seen: dict[str, datetime]) -> None:
    """Move ``last_seen_at`` forward (never back) for the given ids."""
    if not seen:
        return
    ids = sorted(seen)
    conn.execute(
        f"UPDATE ft.{table} t SET last_seen_at = v.seen FROM unnest(%s::text[], %s::timestamptz[]) AS v(id, seen)"
        " WHERE t.id = v.id AND (t.last_seen_at IS NULL OR t.last_seen_at < v.seen)",
        (ids, [seen[i] for i in ids]),
    )


def save_worker_counters(conn: psycopg.Connection, worker_id: str, host: str, pid: int, started_at: datetime,
                         counters: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO ft.ingest_workers (worker_id, host, pid, started_at, updated_at, counters)"
        " VALUES (%s, %s, %s, %s, now(), %s)"
        " ON CONFLICT (worker_id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid,"
        " started_at = EXCLUDED.started_at, updated_at = now(), counters = EXCLUDED.counters",
        (worker_id, host, pid, started_at, Jsonb(counters)),
    )


def worker_counters(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every worker's last published counters, newest first, with the seconds since it published."""
    rows = conn.execute(
        "SELECT worker_id, host, pid, started_at, updated_at, extract(epoch FROM now() - updated_at)::float8,"
        " counters FROM ft.ingest_workers ORDER BY updated_at DESC"
    ).fetchall()
    keys = ("worker_id", "host", "pid", "started_at", "updated_at", "age_s", "counters")
    return [dict(zip(keys, r, strict=True)) for r in rows]
