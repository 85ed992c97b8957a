"""The audit log's hash chains, recomputed in Python: canonical bytes of an entry and the chain walk.

The database computes each entry's hash when it is inserted (``ft_audit.chain_entry`` in migration
042); this module recomputes every hash from the stored columns, independently, so an entry edited,
removed or moved after it was written is found by code that does not trust the database's own
functions.  The canonical bytes (version ``ft-audit-v1``) are the concatenation of these fields, each
a 4-byte big-endian length followed by its bytes, or ``ff ff ff ff`` for NULL:

``'ft-audit-v1'``, id (decimal), tenant_id, at (UTC, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``), actor_kind,
actor_id, actor_roles (a 4-byte count, then each role as a field), action, target_type, target_id,
farmer_id, purpose, source_ip (PostgreSQL's binary form of inet: family 2 or 3, mask bits, 0, address
length, address bytes), detail (jsonb's canonical text, ``detail::text``: keys ordered by length then
bytes, ``", "`` and ``": "`` separators, numbers as written).

``hash = sha256(prev_hash || canonical)``; the first entry of a chain has 32 zero bytes as prev_hash
(or, after archival, the hash of the last archived entry: the chain head's ``base_hash``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

VERSION = "ft-audit-v1"
GENESIS = bytes(32)
_NULL = b"\xff\xff\xff\xff"
_PG_AF_INET, _PG_AF_INET6 = 2, 3  # PostgreSQL's own family codes in inet's binary form


@dataclass(frozen=True)
class ChainRow:
    """The stored columns of one entry, as the chain hashes them."""

    id: int
    tenant_id: str | None
    at: datetime
    actor_kind: str
    actor_id: str
    actor_roles: list[str]
    action: str
    target_type: str
    target_id: str
    farmer_id: str | None
    purpose: str | None
    source_ip: str | None  # inet as text: "10.0.0.1", "10.0.0.1/24", "2001:db8::1"
    detail_text: str  # detail::text
    prev_hash: bytes
    hash: bytes


#: the SELECT list that loads a ChainRow (in its field order) from ft.audit_log
COLUMNS = ("id, tenant_id, at, actor_kind, actor_id, actor_roles, action, target_type, target_id, farmer_id,"
           " purpose, source_ip::text AS source_ip, detail::text AS detail_text, prev_hash, hash")


def _field(value: bytes | str | None) -> bytes:
    if value is None:
        return _NULL
    data = value.encode() if isinstance(value, str) else value
    return struct.pack(">I", len(data)) + data


def _inet(value: str | None) -> bytes | None:
    if value is None:
        return None
    interface = ipaddress.ip_interface(value)
    packed = interface.ip.packed
    family = _PG_AF_INET if interface.version == 4 else _PG_AF_INET6
    return bytes((family, interface.network.prefixlen, 0, len(packed))) + packed


def _timestamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(row: ChainRow) -> bytes:
    """The bytes the entry's hash covers (see the module docstring)."""
    roles = _NULL if row.actor_roles is None else (
        struct.pack(">I", len(row.actor_roles)) + b"".join(_field(r) for r in row.actor_roles))
    return b"".join((
        _field(VERSION), _field(str(row.id)), _field(row.tenant_id), _field(_timestamp(row.at)),
        _field(row.actor_kind), _field(row.actor_id), roles, _field(row.action), _field(row.target_type),
        _field(row.target_id), _field(row.farmer_id), _field(row.purpose), _field(_inet(row.source_ip)),
        _field(row.detail_text),
    ))


def entry_hash(prev_hash: bytes, row: ChainRow) -> bytes:
    return hashlib.sha256(prev_hash + canonical(row)).digest()


@dataclass(frozen=True)
class Head:
    """What ``ft_audit.chain_heads`` records of a chain."""

    chain: str  # "" for the platform chain, else the tenant id
    last_id: int | None
    last_hash: bytes
    entries: int  # appended since the chain began
    base_id: int | None
    base_hash: bytes
    archived: int


@dataclass(frozen=True)
class Break:
    """The first broken link of a chain."""

    entry_id: int | None  # the entry at which the chain breaks (None: the chain's end)
    kind: str  # "edited", "link" (removed or reordered), "tail" (removed from the end), "head" (no head)
    message: str


@dataclass
class ChainReport:
    chain: str
    entries: int = 0  # entries checked (up to the break)
    last_id: int | None = None
    last_hash: bytes | None = None
    broken: Break | None = None

    @property
    def tenant_id(self) -> str | None:
        return self.chain or None

    @property
    def ok(self) -> bool:
        return self.broken is None

    def describe(self) -> str:
        name = f"tenant {self.chain}" if self.chain else "platform"
        if self.broken is None:
            tail = f", head {self.last_hash.hex()[:16]}… at entry {self.last_id}" if self.last_hash else ""
            return f"{name}: {self.entries} entries, chain intact{tail}"
        return f"{name}: BROKEN after {self.entries} good entries: {self.broken.message}"


@dataclass
class VerifyReport:
    chains: list[ChainReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.chains)

    @property
    def first_break(self) -> tuple[str, Break] | None:
        return next(((c.chain, c.broken) for c in self.chains if c.broken is not None), None)


def walk(chain: str, head: Head | None, rows: Iterable[ChainRow]) -> ChainReport:
    """Check one chain's entries (in id order) against each other and against its head."""
    report = ChainReport(chain)
    if head is None:
        report.broken = Break(None, "head", "the chain has entries but no head in ft_audit.chain_heads")
        return report
    expected_prev, previous_id = head.base_hash, head.base_id
    for row in rows:
        if row.prev_hash != expected_prev:
            after = f"entry {previous_id}" if previous_id is not None else "the start of the chain"
            report.broken = Break(row.id, "link", f"entry {row.id} does not follow {after} (its prev_hash "
                                  f"{row.prev_hash.hex()[:16]}… is not {expected_prev.hex()[:16]}…): entries "
                                  "between them were removed, or entries were reordered")
            return report
        if entry_hash(row.prev_hash, row) != row.hash:
            report.broken = Break(row.id, "edited", f"entry {row.id} was changed after it was written "
                                  "(its contents do not match its hash)")
            return report
        report.entries += 1
        report.last_id, report.last_hash = row.id, row.hash
        expected_prev, previous_id = row.hash, row.id
    if expected_prev != head.last_hash:  # the hash covers the id: equal hashes mean the same last entry
        where = f"entry {report.last_id}" if report.last_id is not None else "the start of the chain"
        report.broken = Break(None, "tail", f"the chain ends at {where} but its head is entry {head.last_id} "
                              f"({head.last_hash.hex()[:16]}…): entries at the end were removed")
        return report
    kept = head.entries - head.archived
    if report.entries != kept:
        report.broken = Break(None, "tail", f"{report.entries} entries found where the head counts {kept}")
    return report
