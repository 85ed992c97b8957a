"""Ingest status: committed batches and their readings, dead letters by reason, each worker's counters."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from cloud.api.deps import AdminDep, ConnDep
from cloud.api.models import DeadLetterTotals, IngestStatus
from cloud.store import ingest_status, writes

router = APIRouter(prefix="/ingest", tags=["ingest"], dependencies=[AdminDep])


@router.get("/status", response_model=IngestStatus, summary="What the ingest stored, duplicated and rejected")
def status(conn: ConnDep, tenant: Annotated[str | None, Query(description="one tenant only")] = None,
           since: Annotated[datetime | None, Query(description="count from this time (ISO 8601)")] = None,
           ) -> IngestStatus:
    reasons = ingest_status.dead_letters_by_reason(conn, tenant, since)
    return IngestStatus(
        since=since,
        batches=ingest_status.batch_totals(conn, tenant, since),
        dead_letters=DeadLetterTotals(total=sum(reasons.values()), by_reason=reasons),
        workers=writes.worker_counters(conn),
    )
