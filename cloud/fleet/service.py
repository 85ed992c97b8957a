"""The fleet service (``fieldtrust cloud fleet``): presence from the broker, and the loop that acts on it.

Three threads, one job each:

* paho's network thread receives gateways' heartbeats, births and wills (a plain subscription to
  :data:`contract.topics.GATEWAY_FLEET_FILTERS`: every fleet process sees every message, and storing
  one twice is harmless) and puts them in a queue;
* the *consumer* thread verifies and stores them (:class:`cloud.fleet.consumer.FleetConsumer`);
* the *loop* thread, every ``interval_s``, if this process holds the fleet lock (a session advisory
  lock: one owner among any number of fleet processes; another takes over when the owner's
  connection goes): declares silent gateways and devices offline, evaluates the alert rules, advances
  running OTA campaigns, publishes gateway updates, and POSTs due webhook deliveries.

A failing cycle is logged and counted and the next one runs; a lost database connection is reopened
with back-off.  :meth:`FleetService.stop` (SIGTERM/SIGINT under :meth:`run`) ends both threads within
one wait.  :attr:`FleetService.status` is the loop's health: saved to ``ft.fleet_services`` after every
cycle, owner or standby (cloud.fleet.status, read by ``GET /api/v1/fleet/status``), and served as Prometheus
metrics with ``--metrics-port`` (cloud.fleet.metrics).  Both connections log in as ``ft_app`` in platform
scope for their session: the fleet service is a trusted platform service, like the ingest.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from cloud.config import CloudSettings
from cloud.fleet import campaigns, presence
from cloud.fleet import status as loop_status
from cloud.fleet.consumer import FleetConsumer
from cloud.fleet.evaluate import evaluate_rules
from cloud.fleet.status import Status
from cloud.fleet.webhooks import RetryPolicy, deliver_due
from cloud.ingest.session import BrokerUrl
from cloud.store import db, scope
from contract import topics

log = logging.getLogger(__name__)

#: pg_try_advisory_lock key held by the working fleet loop ("FT" "flt" in ASCII)
LOCK_KEY = 0x4654_666C74
MAX_BACKOFF_S = 60.0


@dataclass(frozen=True)
class FleetOptions:
    """Knobs of the fleet service (deployment settings are in :class:`CloudSettings`)."""

    client_id: str = field(default_factory=lambda: f"fleet-{socket.gethostname()}")
    interval_s: float = 10.0
    #: a gateway silent this long is offline (three heartbeats at the agent's default 60 s, and some)
    gateway_timeout_s: float = 200.0
    #: a device whose last good frame is this old is offline
    device_timeout_s: float = 2 * 3600.0
    retry: RetryPolicy = RetryPolicy()


__all__ = ["FleetOptions", "FleetService", "Status"]


class FleetService:
    def __init__(self, settings: CloudSettings, options: FleetOptions | None = None) -> None:
        self.settings = settings
        self.options = options or FleetOptions()
        self.broker = BrokerUrl.parse(settings.mqtt_url)
        self._kek = settings.kek_bytes()
        self.status = Status()
        self.started_at = datetime.now(UTC)
        self._stop = threading.Event()
        #: (topic, payload, monotonic time received); None stops the consumer
        self._inbox: queue.Queue[tuple[str, bytes, float] | None] = queue.Queue(maxsize=10_000)
        self._threads: list[threading.Thread] = []
        self._subscribed = threading.Event()
        self.consumer: FleetConsumer | None = None
        self._http = httpx.Client(follow_redirects=False)
        v5 = self.broker.protocol == "5"
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.options.client_id,
                                   protocol=paho.MQTTv5 if v5 else paho.MQTTv311)
        if self.broker.username is not None:
            self._client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            self._client.tls_set()
        self._client.reconnect_delay_set(min_delay=0.2, max_delay=10)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, wait_subscribed_s: float = 10.0) -> FleetService:
        self.consumer = FleetConsumer(self._connect(), self._kek)
        for name, target in (("consumer", self._consume), ("loop", self._loop)):
            thread = threading.Thread(target=target, name=f"fleet-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._client.connect_async(self.broker.host, self.broker.port, 30)
        self._client.loop_start()
        if wait_subscribed_s and not self._subscribed.wait(wait_subscribed_s):
            log.warning("fleet: not subscribed after %.0f s; retrying in the background", wait_subscribed_s)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._inbox.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._client.disconnect()
        self._client.loop_stop()
        if self.consumer is not None:
            self.consumer.conn.close()
        self._http.close()

    def run(self) -> int:
        """Run until SIGTERM or SIGINT (the CLI's entry)."""
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        self.start(wait_subscribed_s=0)
        log.info("fleet: watching %s on %s:%d, a cycle every %g s", ", ".join(topics.GATEWAY_FLEET_FILTERS),
                 self.broker.host, self.broker.port, self.options.interval_s)
        stop.wait()
        self.stop()
        return 0

    def _connect(self) -> psycopg.Connection:
        conn = db.connect(self.settings.app_database_url, autocommit=True, application="fieldtrust-fleet")
        scope.platform_session(conn)
        return conn

    # -- MQTT (paho's thread) -------------------------------------------------------------------------

    def _on_connect(self, client: paho.Client, _u: object, _flags: object, reason: ReasonCode, _p: object) -> None:
        if reason.is_failure:
            log.warning("fleet: the broker refused the connection: %s", reason)
            return
        client.subscribe([(f, 1) for f in topics.GATEWAY_FLEET_FILTERS])

    def _on_subscribe(self, _c: paho.Client, _u: object, _mid: int, reasons: list[ReasonCode], _p: object) -> None:
        if any(r.is_failure for r in reasons):
            log.error("fleet: the broker refused the subscription: %s", reasons)
            return
        self.status.subscribed = True
        self._subscribed.set()

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        try:
            self._inbox.put_nowait((msg.topic, bytes(msg.payload), time.monotonic()))
        except queue.Full:  # heartbeats are replaced by the next ones; never block paho's thread
            log.warning("fleet: inbox full, a message on %s dropped", msg.topic)

    # -- the consumer thread --------------------------------------------------------------------------

    def _consume(self) -> None:
        assert self.consumer is not None
        backoff = 0.5
        while True:
            item = self._inbox.get()
            if item is None:
                return
            topic, payload, received = item
            while not self._stop.is_set():
                try:
                    self.consumer.handle(topic, payload)
                    self.status.messages += 1
                    self.status.message_lag_s = round(time.monotonic() - received, 3)
                    backoff = 0.5
                    break
                except psycopg.OperationalError as exc:
                    log.warning("fleet: database unavailable (%s); retrying in %.1f s", exc, backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    try:
                        self.consumer.conn.close()
                        self.consumer.conn = self._connect()
                    except psycopg.OperationalError:
                        pass
                except Exception:  # a bug or input not foreseen: the loop outlives it
                    log.exception("fleet: cannot handle a message on %s", topic)
                    break

    # -- the loop thread ------------------------------------------------------------------------------

    def _loop(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    owner = False
                    backoff = 1.0
                    while not self._stop.is_set():
                        if not owner:
                            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
                            owner = bool(row and row[0])
                        self.status.role = "owner" if owner else "standby"
                        if owner:
                            self._guarded_cycle(conn)
                        self._save_status(conn)
                        self._stop.wait(self.options.interval_s)
            except psycopg.OperationalError as exc:
                self.status.role = "disconnected"
                self._failed(f"database unavailable: {exc}")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _guarded_cycle(self, conn: psycopg.Connection) -> None:
        try:
            self.cycle(conn)
        except psycopg.OperationalError:
            raise
        except Exception as exc:  # one bad cycle must not end the loop
            log.exception("fleet cycle failed")
            self._failed(f"{type(exc).__name__}: {exc}")

    def _save_status(self, conn: psycopg.Connection) -> None:
        """This process's status row (a failure is logged: it must not stop the loop's work)."""
        self.status.inbox_depth = self._inbox.qsize()
        try:
            loop_status.save(conn, self.options.client_id, socket.gethostname(), os.getpid(), self.started_at,
                             self.status)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            log.warning("fleet: cannot save the status: %s", exc)

    def _failed(self, message: str) -> None:
        self.status.errors += 1
        self.status.last_error = message

    def cycle(self, conn: psycopg.Connection, now: datetime | None = None) -> None:
        """One round of the loop's work on ``conn`` (autocommit, platform scope for its session)."""
        now = now or datetime.now(UTC)
        with conn.transaction():
            gone = presence.mark_timeouts(conn, gateway_timeout_s=self.options.gateway_timeout_s,
                                          device_timeout_s=self.options.device_timeout_s, now=now)
        self.status.went_offline += len(gone)
        self.status.alert_events += len(evaluate_rules(conn, now))
        self.status.last_evaluation_at = datetime.now(UTC)
        with conn.transaction():
            running = campaigns.list_campaigns(conn, None, state="running")
        for campaign in running:
            with conn.transaction():
                campaigns.advance(conn, campaign, self._kek, now)
            self.status.campaigns_advanced += 1
        self._publish_updates(conn)
        self.status.webhook_attempts += deliver_due(conn, self._http, self.options.retry,
                                                    dev_mode=self.settings.dev_mode)
        with conn.transaction():
            (self.status.alerts_open, self.status.alerts_acknowledged,
             self.status.campaigns_active) = loop_status.alert_and_campaign_counts(conn)
        self.status.cycles += 1
        self.status.last_cycle_at = datetime.now(UTC)

    def _publish_updates(self, conn: psycopg.Connection) -> None:
        with conn.transaction():
            pending = campaigns.unpublished_updates(conn)
        for campaign_id, tenant, gw, frame in pending:
            info = self._client.publish(topics.gateway(tenant, gw, "update"), frame, qos=1, retain=True)
            try:
                info.wait_for_publish(5)
            except (RuntimeError, ValueError) as exc:  # not connected: the next cycle tries again
                log.info("fleet: update for gateway %s not published yet: %s", gw, exc)
                continue
            if info.is_published():
                with conn.transaction():
                    campaigns.mark_published(conn, campaign_id, gw)
                self.status.updates_published += 1
