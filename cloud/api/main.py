"""The API application: ``create_app(settings)`` wires routes, the connection pool and error handling.

Every error leaves as JSON ``{"error": <code>, "message": <sentence>}`` (plus ``fields`` for an
invalid request): registry errors map to 404/409/422, a value the database cannot store (a NUL
character) to 422, a database that cannot be reached to 503,
anything unexpected to 500 with the details in the log, not in the answer.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus

import psycopg
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloud.api.models import ErrorBody
from cloud.api.routes import (
    alerts,
    audit,
    auth,
    campaigns,
    claims,
    consent,
    credit,
    downlink,
    farmers,
    fields,
    fleet,
    health,
    ingest,
    keys,
    maintenance,
    registry,
    series,
    usage,
    users,
)
from cloud.config import CloudSettings
from cloud.consent.errors import ConsentRequired
from cloud.fleet import metrics
from cloud.keys import KeyCryptoError
from cloud.metering.api_calls import ApiMeter, UsageMiddleware
from cloud.store import db
from cloud.store import registry as store_registry
from cloud.store import series as store_series
from cloud.web.app import mount as mount_pages

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
#: the ``error`` field by status: fixed here, not taken from the Python version's HTTP phrases
_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          409: "conflict", 422: "invalid", 423: "locked", 429: "rate_limited", 500: "internal", 503: "unavailable"}
#: every router the API serves (the OpenAPI test checks each route is documented)
ROUTE_MODULES = (health, auth, users, registry, farmers, fields, claims, keys, series, ingest, maintenance,
                 downlink, audit, consent, usage, fleet, alerts, campaigns, credit)
_ERRORS = {400: ErrorBody, 401: ErrorBody, 402: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody,
           422: ErrorBody, 429: ErrorBody, 503: ErrorBody}


def create_app(settings: CloudSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # open without waiting: the API starts (and says it is not ready) while the database is down
        # as ft_app, under row-level security: every request's transaction sets its scope (cloud.api.deps)
        pool = db.pool(settings.app_database_url, min_size=1, max_size=8, application="fieldtrust-api", open=False)
        pool.open(wait=False)
        app.state.pool = pool
        # API calls and exports per caller, flushed every few seconds; quotas refused from there (cloud.metering)
        meter = app.state.meter = ApiMeter(pool).start()
        try:
            yield
        finally:
            meter.stop()
            pool.close()

    app = FastAPI(title="FieldTrust", version="0.1.0", lifespan=lifespan,
                  description="Registry, time series and ingest status of the FieldTrust cloud.",
                  responses={code: {"model": model} for code, model in _ERRORS.items()})
    app.state.settings = settings
    app.add_middleware(UsageMiddleware)
    metrics.instrument(app)  # request latency by route template and status; GET /metrics (cloud.fleet.metrics)
    api = APIRouter(prefix=API_PREFIX)
    for module in ROUTE_MODULES:
        api.include_router(module.router)
    app.include_router(api)
    mount_pages(app)  # the terminal, ops and officer pages (cloud/web)
    _add_error_handlers(app)
    return app


def _error(status: int, message: str, fields: list[dict[str, object]] | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    code = _CODES.get(status) or HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    body = ErrorBody(error=code, message=message, fields=fields).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers)


def _field_errors(exc: RequestValidationError) -> tuple[str, list[dict[str, object]]]:
    fields = [{"location": ".".join(str(part) for part in e["loc"]), "message": e["msg"]} for e in exc.errors()]
    message = "; ".join(f"{f['location']}: {f['message']}" for f in fields)
    return f"invalid request: {message}", fields


def _add_error_handlers(app: FastAPI) -> None:
    status_of = {store_registry.NotFound: 404, store_series.NotFound: 404, store_registry.Conflict: 409,
                 store_registry.Invalid: 422, store_series.SeriesError: 422, KeyCryptoError: 422}

    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        status = next(status_of[cls] for cls in type(exc).__mro__ if cls in status_of)
        return _error(status, str(exc))

    for error_type in status_of:
        app.add_exception_handler(error_type, domain_error)
    # a data use without consent: 403, its audit entry kept although the route's transaction rolled back
    app.add_exception_handler(ConsentRequired, consent.consent_required)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404 and message == HTTPStatus.NOT_FOUND.phrase:
            message = f"no such path: {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return _error(exc.status_code, message, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, fields = _field_errors(exc)
        return _error(422, message, fields)

    @app.exception_handler(PoolTimeout)
    async def no_connection(request: Request, exc: PoolTimeout) -> JSONResponse:
        return _error(503, "database unavailable: no connection could be had in time")

    @app.exception_handler(psycopg.DataError)
    async def unstorable_value(request: Request, exc: psycopg.DataError) -> JSONResponse:
        # a value no column can hold (a NUL character in text or JSON, a number out of range): the request's
        # fault, found by the database rather than by the request's model (tests/test_api_fuzz.py)
        log.info("value refused by the database on %s: %s", request.url.path, exc)
        reason = exc.diag.message_primary or str(exc).split("\n", 1)[0]
        return _error(422, f"invalid request: a value cannot be stored ({reason})")

    @app.exception_handler(psycopg.OperationalError)
    async def database_down(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        log.warning("database error on %s: %s", request.url.path, exc)
        return _error(503, "database unavailable; try again shortly")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal error; the server log has the details")
