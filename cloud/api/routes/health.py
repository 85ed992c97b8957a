"""Liveness (the process answers) and readiness (it can reach a migrated database)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from psycopg import Error as DatabaseError
from psycopg_pool import PoolTimeout

from cloud.api.deps import PoolDep
from cloud.store import db

router = APIRouter(prefix="/health", tags=["health"])

#: readiness answers within about this long even when the database does not
READY_WAIT_S = 2.0


@router.get("/live", summary="The process is up")
def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="The database is reachable and migrated",
            responses={503: {"description": "not ready; the message says why"}})
def ready(pool: PoolDep) -> JSONResponse:
    try:
        with pool.connection(timeout=READY_WAIT_S) as conn:
            row = conn.execute("SELECT to_regclass('ft.schema_migrations') IS NOT NULL").fetchone()
            if not (row and row[0]):
                return _not_ready("the database has no FieldTrust schema yet (run `fieldtrust cloud migrate`)")
            version = conn.execute("SELECT max(version) FROM ft.schema_migrations").fetchone()
            backend = db.backend(conn)
    except PoolTimeout:
        return _not_ready(f"database unreachable (no connection within {READY_WAIT_S:g} s)")
    except DatabaseError as exc:
        return _not_ready(f"database error: {exc}")
    return JSONResponse({"status": "ready", "database": "ok", "backend": backend,
                         "schema_version": version[0] if version else None})


def _not_ready(message: str) -> JSONResponse:
    return JSONResponse({"error": "not_ready", "message": message}, status_code=503)
