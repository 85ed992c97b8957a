"""The downlink publisher: stored config frames, OTA files and manifests, retained on each node's gateway topics.

One thread owns the loop.  It wakes on PostgreSQL ``NOTIFY ft_downlink`` (sent when the API stores
a config or an OTA job), on (re)connecting to the broker, and every ``poll_s`` in any case, and
then publishes everything pending (:func:`cloud.store.downlink.pending_configs` / ``pending_ota``),
retained at QoS 1:

* a config at ``topics.gateway_node(tenant, gw, node, "config")`` — only a node's newest version;
* an OTA job's files at ``topics.gateway_file(tenant, gw, sha256)`` first, and once the broker has
  acknowledged every one of them, its manifest at ``gateway_node(..., "ota")``, so a gateway never
  sees a manifest whose files it cannot get.

A row is marked published only after its PUBACK (with a success reason code: Mosquitto answers an
MQTT 5 publish its ACL denies with "not authorized"); anything else stays pending and is sent
again next cycle, so a restart republishes whatever was pending.  Republishing is harmless: the
messages are retained and the node refuses a version it already has.  Each cycle runs under a
transaction-level advisory lock, so a second publisher (another host) waits as a standby instead
of racing the first into publishing an older retained version after a newer one.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from dataclasses import dataclass, field

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.reasoncodes import ReasonCode

from cloud.config import CloudSettings
from cloud.ingest.session import BrokerUrl, connect_async, make_client
from cloud.store import db, scope
from cloud.store import downlink as store
from contract import topics

log = logging.getLogger(__name__)

#: pg_try_advisory_xact_lock key of the publisher ("FT" "dnlk" in ASCII)
LOCK_KEY = 0x4654_646E_6C6B


@dataclass
class PublisherCounters:
    cycles: int = 0
    configs: int = 0
    ota_jobs: int = 0
    files: int = 0
    failures: int = 0  # messages not acknowledged in time or refused by the broker
    standby: int = 0  # cycles skipped because another publisher held the lock
    last_error: str = ""
    wakes: dict[str, int] = field(default_factory=lambda: {"notify": 0, "connect": 0, "poll": 0})


class DownlinkPublisher:
    """:meth:`start` it (or :meth:`run` it as a process); :meth:`stop` ends the loop and the MQTT session."""

    def __init__(self, settings: CloudSettings, *, client_id: str | None = None, poll_s: float = 30.0,
                 ack_timeout_s: float = 10.0) -> None:
        if poll_s <= 0 or ack_timeout_s <= 0:
            raise ValueError(f"poll_s and ack_timeout_s must be > 0; got {poll_s}, {ack_timeout_s}")
        self.settings = settings
        self.poll_s = poll_s
        self.ack_timeout_s = ack_timeout_s
        self.client_id = client_id or f"downlink-{socket.gethostname()}"
        self.broker = BrokerUrl.parse(settings.mqtt_url)
        self.counters = PublisherCounters()
        self._client = make_client(self.broker, self.client_id)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._acks: dict[int, ReasonCode | None] = {}
        self._acks_lock = threading.Lock()
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self, wait_connected_s: float = 10.0) -> DownlinkPublisher:
        connect_async(self._client, self.broker, session_expiry_s=0, receive_maximum=100)
        self._client.loop_start()
        if wait_connected_s and not self._connected.wait(wait_connected_s):
            log.warning("%s: not connected to %s:%d after %.0f s; retrying in the background", self.client_id,
                        self.broker.host, self.broker.port, wait_connected_s)
        self._thread = threading.Thread(target=self._loop, name="downlink-publisher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._client.disconnect()
        self._client.loop_stop()
        log.info("%s: stopped; %s", self.client_id, self.counters)

    def run(self) -> int:
        """Until SIGTERM or SIGINT (the CLI's entry: the publisher owns its process)."""
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        self.start(wait_connected_s=0)
        log.info("%s: publishing node downlinks to %s:%d (MQTT %s)", self.client_id, self.broker.host,
                 self.broker.port, self.broker.protocol)
        stop.wait()
        self.stop()
        return 0

    def wake(self) -> None:
        """Run a cycle now (as a NOTIFY would)."""
        self._wake.set()

    # -- MQTT callbacks (paho's thread) ----------------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, reason: ReasonCode,
                    properties: object) -> None:
        if reason.is_failure:
            self.counters.last_error = f"broker refused the connection: {reason}"
            log.error("%s: %s", self.client_id, self.counters.last_error)
            return
        self._connected.set()
        self.counters.wakes["connect"] += 1
        self.wake()

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: object, reason: ReasonCode,
                       properties: object) -> None:
        self._connected.clear()

    def _on_publish(self, client: paho.Client, userdata: object, mid: int, reason: ReasonCode,
                    properties: object) -> None:
        with self._acks_lock:
            self._acks[mid] = reason

    # -- the loop --------------------------------------------------------------------------------------

    def _loop(self) -> None:
        listen: psycopg.Connection | None = None
        work: psycopg.Connection | None = None
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                if listen is None or listen.closed:
                    listen = db.connect(self.settings.app_database_url, autocommit=True,
                                        application="fieldtrust-downlink-listen")
                    listen.execute(f"LISTEN {store.NOTIFY_CHANNEL}")
                if work is None or work.closed:
                    work = db.connect(self.settings.app_database_url, application="fieldtrust-downlink")
                    scope.platform_session(work)  # as ft_app; it publishes every tenant's configs
                self._wake.clear()
                if self._connected.is_set():
                    self.cycle(work)
                self._wait(listen)
                backoff = 0.5
            except psycopg.OperationalError as exc:
                self.counters.last_error = f"database: {exc}"
                log.warning("%s: database unavailable (%s); retrying in %.1f s", self.client_id, exc, backoff)
                for conn in (listen, work):
                    if conn is not None:
                        conn.close()
                listen = work = None
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception as exc:  # the loop never dies: the cycle's transaction rolled back, rows stay pending
                self.counters.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("%s: publishing cycle failed; retrying in %.1f s", self.client_id, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)
        for conn in (listen, work):
            if conn is not None:
                conn.close()

    def _wait(self, listen: psycopg.Connection) -> None:
        """Until a NOTIFY, a wake (connect, stop) or ``poll_s``; looks at the wake flag every second."""
        remaining = self.poll_s
        while remaining > 0 and not self._wake.is_set() and not self._stopping.is_set():
            step = min(remaining, 1.0)
            if any(True for _ in listen.notifies(timeout=step, stop_after=1)):
                self.counters.wakes["notify"] += 1
                for _ in listen.notifies(timeout=0):  # several commits, one cycle
                    pass
                return
            remaining -= step
        if remaining <= 0:
            self.counters.wakes["poll"] += 1

    def cycle(self, conn: psycopg.Connection) -> bool:
        """Publish everything pending, in one transaction under the publisher lock; True when nothing is left."""
        self.counters.cycles += 1
        with self._acks_lock:
            self._acks.clear()  # late acknowledgements of messages given up on last cycle
        with conn.transaction():
            locked = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (LOCK_KEY,)).fetchone()
            if not locked or not locked[0]:
                self.counters.standby += 1
                return False
            done = self._publish_configs(conn, store.pending_configs(conn))
            done = self._publish_ota(conn, store.pending_ota(conn)) and done
        return done

    def _publish_configs(self, conn: psycopg.Connection, pending: list[store.PendingConfig]) -> bool:
        sent = [(c, self._publish(topics.gateway_node(c.tenant_id, c.gateway_id, c.device_id, "config"), c.frame))
                for c in pending]
        done = True
        for config, info in sent:
            if self._acknowledged(info, f"config {config.device_id} v{config.version}"):
                store.mark_config_published(conn, config.device_id, config.version)
                self.counters.configs += 1
            else:
                done = False
        return done

    def _publish_ota(self, conn: psycopg.Connection, pending: list[store.PendingOta]) -> bool:
        done = True
        files_sent: dict[tuple[str, str, str], bool] = {}  # (tenant, gateway, sha256) -> acknowledged, this cycle
        for job in pending:
            todo = [sha for sha in job.files if (job.tenant_id, job.gateway_id, sha) not in files_sent]
            infos = [(sha, self._publish(topics.gateway_file(job.tenant_id, job.gateway_id, sha),
                                         store.file_content(conn, sha))) for sha in todo]
            for sha, info in infos:
                ok = self._acknowledged(info, f"file {sha[:12]}… for {job.gateway_id}")
                files_sent[(job.tenant_id, job.gateway_id, sha)] = ok
                self.counters.files += ok
            if not all(files_sent[(job.tenant_id, job.gateway_id, sha)] for sha in job.files):
                done = False  # never a manifest before all its files
                continue
            info = self._publish(topics.gateway_node(job.tenant_id, job.gateway_id, job.device_id, "ota"), job.frame)
            if self._acknowledged(info, f"OTA manifest {job.device_id} build {job.version}"):
                store.mark_ota_published(conn, job.id)
                self.counters.ota_jobs += 1
            else:
                done = False
        return done

    def _publish(self, topic: str, payload: bytes) -> paho.MQTTMessageInfo:
        return self._client.publish(topic, payload, qos=1, retain=True)

    def _acknowledged(self, info: paho.MQTTMessageInfo, what: str) -> bool:
        """Whether the broker acknowledged the message with success (waits up to ``ack_timeout_s``)."""
        try:
            info.wait_for_publish(self.ack_timeout_s)
        except (RuntimeError, ValueError) as exc:
            return self._failed(what, str(exc))
        if not info.is_published():
            return self._failed(what, f"no PUBACK within {self.ack_timeout_s:g} s")
        with self._acks_lock:
            reason = self._acks.pop(info.mid, None)
        if reason is not None and reason.is_failure:
            return self._failed(what, f"the broker refused it: {reason}")
        return True

    def _failed(self, what: str, why: str) -> bool:
        self.counters.failures += 1
        self.counters.last_error = f"{what}: {why}"
        log.warning("%s: %s not published (%s); retrying next cycle", self.client_id, what, why)
        return False


def start_downlink(settings: CloudSettings, *, client_id: str | None = None, poll_s: float = 30.0) -> DownlinkPublisher:
    """A started publisher (for the demo stack); ``.stop()`` ends it."""
    return DownlinkPublisher(settings, client_id=client_id, poll_s=poll_s).start()
