"""The officers' queue: applications with their current assessment, filtered and sorted.

Filters: status, grade, trust band, village (a branch serves villages; the farm's village stands for the
branch until branches are modelled), farmer, farm.  Trust bands: ``none`` (no farm data), ``low``
(below 0.6, the demo policy's data gate), ``medium`` (0.6 to 0.8), ``high`` (0.8 and above).  Sorting
only by the whitelisted :data:`SORTS`; every sort ends with the id, so pages are stable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import psycopg
from psycopg.rows import class_row

from cloud.store.db import ROW_SCHEMA

SORTS = {"created_at": "a.created_at", "updated_at": "a.updated_at", "amount": "a.amount", "score": "s.score",
         "trust": "s.trust", "grade": "s.grade", "status": "a.status", "village": "f.village"}
TRUST_BANDS = {"none": "s.trust IS NULL", "low": "s.trust < 0.6", "medium": "s.trust >= 0.6 AND s.trust < 0.8",
               "high": "s.trust >= 0.8"}
TrustBand = Literal["none", "low", "medium", "high"]
Sort = Literal["created_at", "updated_at", "amount", "score", "trust", "grade", "status", "village"]
MAX_LIMIT = 500


@dataclass(frozen=True)
class QueueRow:
    """One application in the queue, with its current assessment."""

    __pydantic_config__ = ROW_SCHEMA
    id: str
    farmer_id: str
    farm_id: str
    village: str | None
    season: str
    amount: float
    term_months: int
    purpose: str
    status: str
    outcome: str | None
    score: int | None
    grade: str | None
    trust: float | None
    coverage: float | None
    recommendation: str | None
    pending_override: bool
    """an override waits for a second officer"""
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Filters:
    status: Sequence[str] | None = None
    grade: Sequence[str] | None = None
    trust: TrustBand | None = None
    village: str | None = None
    farmer_id: str | None = None
    farm_id: str | None = None


_QUERY = """
SELECT a.id, a.farmer_id, a.farm_id, f.village, a.season, a.amount, a.term_months, a.purpose, a.status, a.outcome,
       s.score, s.grade, s.trust, s.coverage, s.recommendation,
       EXISTS (SELECT 1 FROM ft.credit_decisions d WHERE d.tenant_id = a.tenant_id AND d.application_id = a.id
               AND d.status = 'pending') AS pending_override,
       a.created_at, a.updated_at
FROM ft.loan_applications a
JOIN ft.farms f ON f.tenant_id = a.tenant_id AND f.id = a.farm_id
LEFT JOIN LATERAL (SELECT score, grade, trust, coverage, recommendation FROM ft.credit_assessments x
                   WHERE x.tenant_id = a.tenant_id AND x.application_id = a.id
                   ORDER BY x.created_at DESC LIMIT 1) s ON true
WHERE a.tenant_id = %s
"""


def queue(conn: psycopg.Connection, tenant: str, filters: Filters = Filters(), sort: Sort = "created_at",
          descending: bool = True, limit: int = 100, offset: int = 0) -> list[QueueRow]:
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}; got {sort!r}")
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise ValueError(f"limit must be 1-{MAX_LIMIT} and offset at least 0")
    where: list[str] = []
    params: list[object] = [tenant]
    for column, values in (("a.status", filters.status), ("s.grade", filters.grade)):
        if values:
            where.append(f"{column} = ANY(%s)")
            params.append(list(values))
    for column, value in (("f.village", filters.village), ("a.farmer_id", filters.farmer_id),
                          ("a.farm_id", filters.farm_id)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if filters.trust is not None:
        where.append(TRUST_BANDS[filters.trust])
    direction = "DESC NULLS LAST" if descending else "ASC NULLS LAST"
    query = (_QUERY + "".join(f" AND {w}" for w in where)
             + f" ORDER BY {SORTS[sort]} {direction}, a.id {'DESC' if descending else 'ASC'} LIMIT %s OFFSET %s")
    with conn.cursor(row_factory=class_row(QueueRow)) as cur:
        return cur.execute(query, (*params, limit, offset)).fetchall()  # type: ignore[arg-type]
