"""The account of a run, counted in the database: what the field produced against what was stored.

"This run" is told apart from earlier runs on the same data by time: a reading's time is when
it was sampled, so this run's readings are the demo tenant's rows at or after the run's start
(re-sent leftovers of an interrupted earlier run carry their own, earlier times and count among
the totals).  Dead letters count from the run's start too; duplicates and conflicts come from the
counters the run's ingest workers save in ``ft.ingest_workers`` when they stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from cloud.ingest.handler import TRUST_GATEWAY, TRUST_NODE


@dataclass(frozen=True)
class Account:
    produced_gateway: int  # readings in the samples the gateway agents captured
    produced_nodes: int  # readings in the messages the nodes sent
    stored_gateway: int  # this run's gateway-attested rows in ft.readings
    stored_nodes: int  # this run's node-signed rows
    rejected: dict[str, int] = field(default_factory=dict)  # this run's dead letters by reason
    duplicates: int = 0
    conflicts: int = 0
    batches: int = 0  # gateway batches committed in this run
    total_readings: int = 0  # the tenant's rows, all runs
    readings_before: int = 0  # the tenant's rows when this run started
    seconds: float = 0.0  # from the first reading to the end of production
    startup_s: float = 0.0  # the whole stack up: database, broker, workers, API, farms
    drained: bool = True  # every batch receipted before the count

    @property
    def produced(self) -> int:
        return self.produced_gateway + self.produced_nodes

    @property
    def stored(self) -> int:
        return self.stored_gateway + self.stored_nodes

    @property
    def ok(self) -> bool:
        """Nothing lost: every reading produced in this run is stored, and nothing conflicted."""
        return self.produced == self.stored and self.conflicts == 0

    @property
    def readings_per_s(self) -> float:
        return self.stored / self.seconds if self.seconds > 0 else 0.0


def tenant_readings(conn: psycopg.Connection, tenant: str) -> int:
    row = conn.execute("SELECT count(*) FROM ft.readings WHERE tenant_id = %s", (tenant,)).fetchone()
    return int(row[0]) if row else 0


def stored_since(conn: psycopg.Connection, tenant: str, since: datetime) -> dict[int, int]:
    """Rows by trust level with a time at or after ``since``."""
    rows = conn.execute("SELECT trust, count(*) FROM ft.readings WHERE tenant_id = %s AND ts >= %s GROUP BY trust",
                        (tenant, since)).fetchall()
    return {int(trust): int(n) for trust, n in rows}


def rejected_since(conn: psycopg.Connection, tenant: str, since: datetime) -> dict[str, int]:
    """Dead letters by reason since ``since``: the tenant's, and those no tenant could be told for."""
    rows = conn.execute(
        "SELECT reason, count(*) FROM ft.dead_letters WHERE received_at >= %s AND (tenant_id = %s OR tenant_id IS NULL)"
        " GROUP BY reason ORDER BY reason", (since, tenant)).fetchall()
    return {reason: int(n) for reason, n in rows}


def worker_totals(conn: psycopg.Connection, worker_ids: list[str], since: datetime) -> dict[str, int]:
    """duplicates, conflicts and batches summed over the counters the run's workers saved."""
    row = conn.execute(
        "SELECT coalesce(sum((counters->>'duplicates')::bigint), 0),"
        " coalesce(sum((counters->>'conflicts')::bigint), 0), coalesce(sum((counters->>'batches')::bigint), 0)"
        " FROM ft.ingest_workers WHERE worker_id = ANY(%s) AND started_at >= %s", (worker_ids, since)).fetchone()
    assert row is not None
    return {"duplicates": int(row[0]), "conflicts": int(row[1]), "batches": int(row[2])}


def count_run(conn: psycopg.Connection, tenant: str, since: datetime, worker_ids: list[str], *,
              produced_gateway: int, produced_nodes: int, readings_before: int, seconds: float, startup_s: float,
              drained: bool) -> Account:
    stored = stored_since(conn, tenant, since)
    totals = worker_totals(conn, worker_ids, since)
    return Account(
        produced_gateway=produced_gateway, produced_nodes=produced_nodes,
        stored_gateway=stored.get(TRUST_GATEWAY, 0), stored_nodes=stored.get(TRUST_NODE, 0),
        rejected=rejected_since(conn, tenant, since), duplicates=totals["duplicates"],
        conflicts=totals["conflicts"], batches=totals["batches"], total_readings=tenant_readings(conn, tenant),
        readings_before=readings_before, seconds=seconds, startup_s=startup_s, drained=drained,
    )
