"""Retention of the audit log: the owner's procedure that archives a chain's oldest entries and removes them.

The log is append-only in the database (migration 042); this is the one sanctioned way to shorten it.  Run as
the owner, in one transaction: each chain is verified first (pruning must never hide tampering), its entries
up to the cut are written to an archive file (JSON lines: every column plus the hashes, so the archived
segment can be checked on its own), then removed with ``ft.audit_maintenance = 'on'``, and the chain's head
records the last archived entry as the new base (``base_id``, ``base_hash``), so the chain still verifies
from its first kept entry.  The cut is the last entry written before ``before``: a prefix of the chain.

Keep the archive files: they are the record of what was removed, and their last hash is the new base.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

import psycopg
from psycopg.rows import class_row

from cloud.audit import chain, log
from cloud.store import scope


class PruneRefused(Exception):
    """A chain does not verify: nothing was pruned."""


@dataclass(frozen=True)
class Pruned:
    chain: str
    entries: int
    base_id: int | None


def prune(conn: psycopg.Connection, before: datetime, archive: Path, *, tenant: str | None = None) -> list[Pruned]:
    """Archive to ``archive`` (a new file) and remove every chain's entries written before ``before``."""
    report = log.verify(conn, tenant)
    if not report.ok:
        raise PruneRefused("; ".join(c.describe() for c in report.chains if not c.ok))
    done: list[Pruned] = []
    out = archive.open("x", encoding="utf-8")  # never overwrites an earlier archive
    try:
        with out:
            _prune(conn, before, out, report, done)
    except BaseException:
        archive.unlink(missing_ok=True)  # nothing was removed: an archive file would say otherwise
        raise
    return done


def _prune(conn: psycopg.Connection, before: datetime, out: TextIO, report: chain.VerifyReport,
           done: list[Pruned]) -> None:
    with conn.transaction():
        scope.platform_scope(conn)
        conn.execute("SELECT set_config('ft.audit_maintenance', 'on', true)")
        for report_chain in report.chains:
            key = report_chain.chain
            conn.execute("SELECT pg_advisory_xact_lock(x'46544155'::int, hashtext(%s))", (key,))
            conn.execute("SELECT 1 FROM ft_audit.chain_heads WHERE chain = %s FOR UPDATE", (key,))
            cut = conn.execute(
                "SELECT max(id) FROM ft.audit_log WHERE coalesce(tenant_id, '') = %s AND at < %s", (key, before)
            ).fetchone()
            if cut is None or cut[0] is None:
                continue
            with conn.cursor(row_factory=class_row(chain.ChainRow)) as cur:
                rows = cur.execute(f"SELECT {chain.COLUMNS} FROM ft.audit_log WHERE coalesce(tenant_id, '') = %s"
                                   " AND id <= %s ORDER BY id", (key, cut[0])).fetchall()
            for row in rows:
                out.write(json.dumps(_archived(row), ensure_ascii=False) + "\n")
            last = rows[-1]
            conn.execute("DELETE FROM ft.audit_log WHERE coalesce(tenant_id, '') = %s AND id <= %s", (key, last.id))
            conn.execute("UPDATE ft_audit.chain_heads SET base_id = %s, base_hash = %s, archived = archived + %s"
                         " WHERE chain = %s", (last.id, last.hash, len(rows), key))
            done.append(Pruned(key, len(rows), last.id))
        out.flush()
        os.fsync(out.fileno())


def _archived(row: chain.ChainRow) -> dict[str, object]:
    return {"id": row.id, "tenant_id": row.tenant_id, "at": row.at.isoformat(), "actor_kind": row.actor_kind,
            "actor_id": row.actor_id, "actor_roles": row.actor_roles, "action": row.action,
            "target_type": row.target_type, "target_id": row.target_id, "farmer_id": row.farmer_id,
            "purpose": row.purpose, "source_ip": row.source_ip, "detail": row.detail_text,
            "prev_hash": row.prev_hash.hex(), "hash": row.hash.hex()}
