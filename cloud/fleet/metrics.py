"""Prometheus metrics of the API and the ingest workers (``prometheus-client``), served at ``/metrics``.

API: ``fieldtrust_api_request_duration_seconds`` (histogram) by method, route *template*
(``/api/v1/tenants/{tenant}/alerts``, never the concrete path, so tenants and ids do not multiply the
series) and status; requests that match no route count under ``unmatched``.

Ingest: the worker's own counters (cloud.ingest.counters) are read at scrape time by
:class:`IngestCollector`, so counting costs the hot path nothing: messages, readings, duplicates,
conflicts, dead letters by reason, and two lags (``fieldtrust_ingest_lag_sent_seconds``: commit time
minus the ``sent`` time of the oldest batch of the last commit, i.e. how far behind the gateways the
store is; ``fieldtrust_ingest_lag_sample_seconds``: minus the newest reading time).  Batch sizes (messages
and readings per commit) are histograms observed once per commit.  A worker serves them on its own
port (``fieldtrust cloud ingest --metrics-port``).

Fleet: a fleet process's :class:`cloud.fleet.status.Status`, read at scrape time by :class:`FleetCollector`
and served on its own port (``fieldtrust cloud fleet --metrics-port``): cycles, errors, messages and what the
loop did (counters), the role (1 for owner), seconds since the last evaluation, alerts open and acknowledged,
campaigns running, inbox depth and message lag (gauges).

Several uvicorn workers: each process keeps its own numbers, and a scrape reaches one of them.  Set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory for all of them (before they start, wiped at each
deployment): the API's ``/metrics`` then merges every process's files (prometheus-client's multiprocess
mode; docs/deployment.md, "Fleet operations").
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from cloud.fleet.service import FleetService
    from cloud.ingest.counters import Counters

API_LATENCY = Histogram("fieldtrust_api_request_duration_seconds", "API request latency by route template",
                        ("method", "route", "status"),
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
COMMIT_MESSAGES = Histogram("fieldtrust_ingest_commit_messages", "MQTT messages per ingest commit",
                            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
COMMIT_READINGS = Histogram("fieldtrust_ingest_commit_readings", "readings inserted per ingest commit",
                            buckets=(0, 10, 100, 1000, 5000, 10_000, 20_000, 50_000, 100_000))
METRICS_PATH = "/metrics"


# -- the API -------------------------------------------------------------------------------------------


def instrument(app: FastAPI) -> None:
    """Time every request of ``app`` by route template and status, and serve ``/metrics``."""

    @app.middleware("http")
    async def _timed(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            if template != METRICS_PATH:
                API_LATENCY.labels(request.method, template, str(status)).observe(time.perf_counter() - started)

    @app.get(METRICS_PATH, include_in_schema=False)
    def _metrics() -> Response:
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)


def exposition() -> bytes:
    """The text exposition of this process, or of every process in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


# -- the ingest ----------------------------------------------------------------------------------------

_TOTALS = ("messages_received", "messages_acked", "messages_refused", "batches", "batches_redelivered",
           "messages_new", "duplicates", "conflicts", "readings", "readings_overlapping", "transactions",
           "receipts_published", "db_retries", "internal_errors")


def observe_commit(messages: int, readings: int) -> None:
    """One ingest commit's size (called by the worker after each commit)."""
    COMMIT_MESSAGES.observe(messages)
    COMMIT_READINGS.observe(readings)


class IngestCollector(Collector):
    """A worker's counters as Prometheus metrics, read when scraped."""

    def __init__(self, counters: Counters, worker_id: str) -> None:
        self.counters = counters
        self.worker_id = worker_id

    def collect(self) -> Iterator[Metric]:
        snap = self.counters.snapshot()
        for name in _TOTALS:
            family = CounterMetricFamily(f"fieldtrust_ingest_{name}", f"ingest counter {name}", labels=["worker"])
            family.add_metric([self.worker_id], float(snap.get(name, 0)))
            yield family
        rejects = CounterMetricFamily("fieldtrust_ingest_rejected", "dead letters by reason",
                                      labels=["worker", "reason"])
        for reason, count in sorted(snap["rejected"].items()):
            rejects.add_metric([self.worker_id, reason], float(count))
        yield rejects
        for name in ("lag_sent_s", "lag_sample_s"):
            gauge = GaugeMetricFamily(f"fieldtrust_ingest_{name.removesuffix('_s')}_seconds",
                                      f"ingest {name} at the last commit", labels=["worker"])
            if snap[name] is not None:
                gauge.add_metric([self.worker_id], float(snap[name]))
            yield gauge


class IngestMetrics:
    """A worker's metrics in the process's registry, served on ``port`` until :meth:`close`."""

    def __init__(self, counters: Counters, worker_id: str, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104
        self.collector = IngestCollector(counters, worker_id)
        REGISTRY.register(self.collector)
        self.server, self._thread = start_http_server(port, host)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        REGISTRY.unregister(self.collector)


# -- the fleet service ---------------------------------------------------------------------------------

_FLEET_TOTALS = ("cycles", "errors", "messages", "went_offline", "alert_events", "campaigns_advanced",
                 "updates_published", "webhook_attempts")
_FLEET_GAUGES = ("alerts_open", "alerts_acknowledged", "campaigns_active", "inbox_depth")


class FleetCollector(Collector):
    """A fleet process's Status as Prometheus metrics, read when scraped."""

    def __init__(self, service: FleetService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        status, sid = self.service.status, self.service.options.client_id
        for name in _FLEET_TOTALS:
            family = CounterMetricFamily(f"fieldtrust_fleet_{name}", f"fleet loop counter {name}", labels=["service"])
            family.add_metric([sid], float(getattr(status, name)))
            yield family
        for name in _FLEET_GAUGES:
            gauge = GaugeMetricFamily(f"fieldtrust_fleet_{name}", f"fleet {name} at the last cycle", labels=["service"])
            gauge.add_metric([sid], float(getattr(status, name)))
            yield gauge
        owner = GaugeMetricFamily("fieldtrust_fleet_owner", "1 when this process holds the fleet lock and does the "
                                  "loop's work", labels=["service"])
        owner.add_metric([sid], 1.0 if status.role == "owner" else 0.0)
        yield owner
        since = GaugeMetricFamily("fieldtrust_fleet_evaluation_age_seconds", "seconds since this process last "
                                  "evaluated the alert rules", labels=["service"])
        if status.last_evaluation_at is not None:
            since.add_metric([sid], max(0.0, (datetime.now(UTC) - status.last_evaluation_at).total_seconds()))
        yield since
        lag = GaugeMetricFamily("fieldtrust_fleet_message_lag_seconds", "seconds from the broker's delivery of the "
                                "last stored heartbeat, birth or will to its being stored", labels=["service"])
        if status.message_lag_s is not None:
            lag.add_metric([sid], float(status.message_lag_s))
        yield lag


class FleetMetrics:
    """A fleet process's metrics in the process's registry, served on ``port`` until :meth:`close`."""

    def __init__(self, service: FleetService, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104
        self.collector = FleetCollector(service)
        REGISTRY.register(self.collector)
        self.server, self._thread = start_http_server(port, host)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        REGISTRY.unregister(self.collector)
