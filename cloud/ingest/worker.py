"""The ingest worker: gateways' uplinks from the broker into PostgreSQL, acknowledged only once committed.

Threads, each with one job, handing work on through queues:

* paho's network thread receives messages (manual acknowledgement: nothing is acknowledged on
  receipt) and puts them in the inbox;
* the *prepare* thread parses and verifies each message as it arrives (:class:`Handler`) and
  groups them until ``ingest_batch_rows`` readings or ``ingest_batch_wait_s`` seconds;
* a *commit* thread writes a group in one transaction (:func:`commit_units`), then publishes
  the receipts, then acknowledges the group's messages — so a worker that dies at any point
  leaves its unacknowledged messages with the broker, which delivers them again (to it on
  restart, its session being persistent, or wherever the broker sends them), and the ledger
  turns the repeat into counted duplicates.  Preparing the next group while one is committed
  keeps the CPU busy while PostgreSQL works; two commit threads (``WorkerOptions.committers``),
  each on its own connection, keep PostgreSQL busy while one of them is between statements or
  between transactions (bench/ingest.py).  Their transactions are as independent as two
  workers' are: the ledger makes the outcome the same in any order.

Never dies on bad input: a message that makes the handler fail is dead-lettered
(``internal_error``); a group the database refuses is split until the message at fault is found
and dead-lettered (``store_error``).  A database that is down is waited for (with back-off),
holding the messages unacknowledged.  :meth:`Worker.stop` (SIGTERM/SIGINT under :meth:`run`)
commits what was prepared, then leaves.

The worker logs in as ``ft_app`` (``app_database_url``), under row-level security, in platform
scope: it reads every tenant's registry rows and writes every tenant's readings (cloud.store.scope).
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.reasoncodes import ReasonCode

from cloud.config import CloudSettings
from cloud.fleet.metrics import observe_commit
from cloud.ingest.commit import Outcome, commit_units
from cloud.ingest.counters import Counters
from cloud.ingest.directory import Directory
from cloud.ingest.handler import Handler, Prepared
from cloud.ingest.session import BrokerUrl, connect_async, make_client
from cloud.store import db, partitions, scope, writes
from contract import models, topics
from contract.telemetry import sign

log = logging.getLogger(__name__)

_STOP = object()


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int  # which connection delivered it: only that connection may acknowledge it


Group = list[tuple[Incoming, Prepared]]


@dataclass(frozen=True)
class WorkerOptions:
    """Knobs that are not deployment settings (those live in :class:`CloudSettings`)."""

    worker_id: str
    scheme: writes.WriteScheme = "direct"
    #: unacknowledged messages the broker may send us (MQTT 5): with the largest message size, the memory bound
    receive_maximum: int = 1000
    session_expiry_s: int = 3600
    counters_interval_s: float = 5.0
    log_interval_s: float = 60.0
    last_seen_interval_s: float = 5.0
    cache_ttl_s: float = 30.0
    retry_max_s: float = 10.0
    #: commit threads, each with its own connection: while one waits for PostgreSQL to finish a transaction
    #: (or publishes its receipts), the next group is already being written
    committers: int = 2


def default_worker_id(settings: CloudSettings) -> str:
    """The MQTT client id doubles as worker id: stable across restarts, so a restarted worker gets its session back."""
    return settings.ingest_client_id or f"ingest-{socket.gethostname()}"


class Worker:
    def __init__(self, settings: CloudSettings, options: WorkerOptions | None = None) -> None:
        self.settings = settings
        self.options = options or WorkerOptions(default_worker_id(settings))
        self.broker = BrokerUrl.parse(settings.mqtt_url)
        self.counters = Counters()
        self._kek = settings.kek_bytes()
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._ready: queue.Queue[Any] = queue.Queue(maxsize=1)  # (sequence number, group) for the committers
        self._groups = 0  # groups handed over so far (the prepare thread's count)
        self._ack_lock = threading.Lock()
        self._next_ack = 0  # the group whose acknowledgements go next
        self._acks_waiting: dict[int, Group] = {}  # later groups' messages, committed, waiting for their turn
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._generation = 0
        self._connected = False
        self._threads: list[threading.Thread] = []
        self._seen_lock = threading.Lock()
        self._seen_gateways: dict[str, datetime] = {}
        self._seen_devices: dict[str, datetime] = {}
        self._started_at = datetime.now(UTC)
        self._client = make_client(self.broker, self.options.worker_id)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._read_conn: psycopg.Connection | None = None
        self._write_conns: list[psycopg.Connection | None] = [None] * max(1, self.options.committers)
        self._handler: Handler | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, wait_subscribed_s: float = 10.0) -> Worker:
        """Connect to the database and the broker and start the threads; waits for the subscription."""
        self._read_conn = self._connect_db()
        self._write_conns = [self._connect_db(writer=True) for _ in self._write_conns]
        directory = Directory(self._read_conn, self._kek, ttl_s=self.options.cache_ttl_s)
        self._handler = Handler(directory, max_past_days=self.settings.ingest_max_past_days,
                                max_future_s=self.settings.ingest_max_future_s)
        loops = [("prepare", self._prepare_loop, ())]
        loops += [(f"commit-{n}", self._commit_loop, (n,)) for n in range(len(self._write_conns))]
        for name, target, args in loops:
            thread = threading.Thread(target=target, args=args, name=f"ingest-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        connect_async(self._client, self.broker, session_expiry_s=self.options.session_expiry_s,
                      receive_maximum=self.options.receive_maximum)
        self._client.loop_start()
        if wait_subscribed_s and not self._subscribed.wait(wait_subscribed_s):
            log.warning("%s: not subscribed after %.0f s (broker %s:%d); retrying in the background",
                        self.options.worker_id, wait_subscribed_s, self.broker.host, self.broker.port)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Commit and acknowledge what was prepared, then disconnect; unprepared messages stay with the broker."""
        self._stopping.set()
        self._inbox.put(_STOP)
        for thread in self._threads:
            thread.join(timeout)
        if any(thread.is_alive() for thread in self._threads):
            log.warning("%s: still committing after %.0f s; final counters not saved", self.options.worker_id, timeout)
        else:
            try:
                self._save_last_seen()
                self._save_counters()
            except psycopg.Error as exc:
                log.warning("%s: cannot save final counters: %s", self.options.worker_id, exc)
        self._client.disconnect()
        self._client.loop_stop()
        for conn in (self._read_conn, *self._write_conns):
            if conn is not None:
                conn.close()
        log.info("%s: stopped; %s", self.options.worker_id, self.counters.log_line())

    def run(self) -> int:
        """Run until SIGTERM or SIGINT (the CLI's entry: the worker owns its process)."""
        # Every message makes thousands of short-lived tuples; the default gen-0 threshold (700) would run the
        # collector every few hundred readings, about 40 % of the parsing time (bench/ingest.py).
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        # The commit thread mostly waits on PostgreSQL; when an answer arrives it should get the GIL back from
        # the parsing thread within a millisecond, not the default 5 ms (about 15 % more readings/s, same bench).
        sys.setswitchinterval(0.001)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        self.start(wait_subscribed_s=0)
        log.info("%s: ingesting %s from %s:%d (MQTT %s) into %s", self.options.worker_id,
                 self.broker.uplink_filter(self.settings.ingest_group), self.broker.host, self.broker.port,
                 self.broker.protocol, self._read_conn.info.dbname if self._read_conn else "?")
        stop.wait()
        self.stop()
        return 0

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def _connect_db(self, *, writer: bool = False) -> psycopg.Connection:
        # as ft_app, under row-level security; a connection of the ingest's own, never lent to a tenant's work:
        # platform scope for the session (lookups are single autocommit statements; commits set it again)
        conn = db.connect(self.settings.app_database_url, autocommit=True,
                          application=f"fieldtrust-{self.options.worker_id}")
        scope.platform_session(conn)
        if writer:
            writes.prefer_lz4(conn)
        return conn

    # -- MQTT (paho's thread) ---------------------------------------------------------------------

    def _on_connect(self, client: paho.Client, _userdata: object, flags: paho.ConnectFlags, reason: ReasonCode,
                    _props: object) -> None:
        if reason.is_failure:
            log.warning("%s: broker refused the connection: %s", self.options.worker_id, reason)
            return
        self._generation += 1
        self._connected = True
        # Subscribe on every connect: a broker that lost its state (kill -9) no longer has our subscription.
        client.subscribe(self.broker.uplink_filter(self.settings.ingest_group), qos=1)
        log.info("%s: connected (session present: %s)", self.options.worker_id, flags.session_present)

    def _on_subscribe(self, _client: paho.Client, _userdata: object, _mid: int, reasons: list[ReasonCode],
                      _props: object) -> None:
        if any(r.is_failure for r in reasons):
            log.error("%s: the broker refused the subscription %s: %s", self.options.worker_id,
                      self.broker.uplink_filter(self.settings.ingest_group), reasons)
            return
        log.info("%s: subscribed to %s", self.options.worker_id, self.broker.uplink_filter(self.settings.ingest_group))
        self._subscribed.set()

    def _on_disconnect(self, _client: paho.Client, _userdata: object, _flags: object, reason: ReasonCode,
                       _props: object) -> None:
        self._connected = False
        if not self._stopping.is_set():
            log.warning("%s: disconnected from the broker (%s); reconnecting", self.options.worker_id, reason)

    def _on_message(self, _client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        self.counters.bump("messages_received")
        self._inbox.put(Incoming(msg.topic, msg.payload, msg.mid, msg.qos, self._generation))

    # -- the prepare thread -----------------------------------------------------------------------

    def _prepare_loop(self) -> None:
        # A group closes at ingest_batch_rows readings, after ingest_batch_wait_s, or at half the Receive
        # Maximum in messages: the broker sends no more until we acknowledge, so a group as large as the
        # Receive Maximum would leave nothing to prepare while it is committed.
        max_messages = max(1, self.options.receive_maximum // 2)
        group: Group = []
        rows = 0
        deadline = 0.0
        while True:
            timeout = max(0.0, deadline - time.monotonic()) if group else None
            try:
                incoming = self._inbox.get(timeout=timeout)
            except queue.Empty:
                incoming = None
            if incoming is _STOP:
                if group:
                    self._hand_over(group)
                for _ in self._write_conns:
                    self._ready.put(_STOP)
                return
            if incoming is not None:
                prepared = self._prepare(incoming)
                if prepared is None:  # stopping while the database is down: leave it to the broker
                    continue
                if not group:
                    deadline = time.monotonic() + self.settings.ingest_batch_wait_s
                group.append((incoming, prepared))
                rows += prepared.readings
            full = rows >= self.settings.ingest_batch_rows or len(group) >= max_messages
            if group and (full or time.monotonic() >= deadline):
                self._hand_over(group)
                group, rows = [], 0

    def _hand_over(self, group: Group) -> None:
        self._ready.put((self._groups, group))
        self._groups += 1

    def _prepare(self, incoming: Incoming) -> Prepared | None:
        assert self._handler is not None
        delay = 0.2
        while True:
            try:
                return self._handler.prepare(incoming.topic, incoming.payload)
            except psycopg.OperationalError as exc:  # the registry is unreachable: wait, never dead-letter for it
                if self._stopping.is_set():
                    return None
                log.warning("%s: database unavailable while verifying a message (%s); retrying in %.1f s",
                            self.options.worker_id, exc, delay)
                self.counters.bump("db_retries")
                time.sleep(delay)
                delay = min(delay * 2, self.options.retry_max_s)
                self._handler.directory.conn = self._reconnect(self._handler.directory.conn)
            except Exception as exc:  # a bug or an input we did not foresee: keep the bytes, carry on
                log.exception("%s: cannot handle a message on %s", self.options.worker_id, incoming.topic)
                self.counters.bump("internal_errors")
                letter = writes.DeadLetter(incoming.topic, "internal_error", f"{type(exc).__name__}: {exc}",
                                           incoming.payload)
                return Prepared(incoming.topic, incoming.payload, None, dead_letters=[letter])

    def _reconnect(self, conn: psycopg.Connection, *, writer: bool = False) -> psycopg.Connection:
        if not conn.closed and not conn.broken:
            return conn
        conn.close()
        try:
            return self._connect_db(writer=writer)
        except psycopg.OperationalError:
            return conn  # still down; the next attempt tries again

    # -- the commit threads -----------------------------------------------------------------------

    def _commit_loop(self, n: int) -> None:
        """Commit thread ``n`` (on connection ``n``); the first one also keeps the books (counters, last seen)."""
        next_counters = next_log = next_seen = time.monotonic() if n == 0 else float("inf")
        while True:
            now = time.monotonic()
            wait = max(0.0, min(next_counters, next_log, next_seen) - now) if n == 0 else None
            try:
                handed = self._ready.get(timeout=wait)
            except queue.Empty:
                handed = None
            if handed is _STOP:
                break
            if handed is not None:
                seq, group = handed
                acknowledge: Group = []
                try:
                    acknowledge = self._store(group, n)
                except Exception:  # a bug: the loop outlives it; unacknowledged, the broker delivers them again
                    log.exception("%s: error storing %d messages", self.options.worker_id, len(group))
                    self.counters.bump("internal_errors")
                finally:
                    self._acknowledge(seq, acknowledge)
            now = time.monotonic()
            try:
                if now >= next_seen:
                    next_seen = now + self.options.last_seen_interval_s
                    self._save_last_seen()
                if now >= next_counters:
                    next_counters = now + self.options.counters_interval_s
                    self._save_counters()
            except psycopg.Error as exc:  # bookkeeping only: try again at the next interval
                log.warning("%s: cannot save counters or last-seen times: %s", self.options.worker_id, exc)
                self._reconnect_writer(0)
            if now >= next_log:
                next_log = now + self.options.log_interval_s
                log.info("%s: %s", self.options.worker_id, self.counters.log_line())

    def _reconnect_writer(self, n: int) -> psycopg.Connection | None:
        conn = self._write_conns[n]
        if conn is not None:
            conn = self._write_conns[n] = self._reconnect(conn, writer=True)
        return conn

    def _store(self, group: Group, n: int) -> Group:
        """Commit ``group`` on connection ``n``; on a data error split it to isolate the message at fault.

        Returns the messages to acknowledge, in their order: those committed or dead-lettered.
        """
        conn = self._write_conns[n]
        assert conn is not None
        delay = 0.2
        partitions_refreshed = False
        while True:
            try:
                self._ensure_partitions(group, conn)
                with conn.transaction():
                    outcome = commit_units(conn, [p for _, p in group], self.options.scheme,
                                           metering_on=self.settings.metering)
                break
            except psycopg.OperationalError as exc:  # connection lost, deadlock, server shutting down
                if self._stopping.is_set() and conn.broken:
                    log.warning("%s: stopping with %d messages uncommitted (the broker keeps them): %s",
                                self.options.worker_id, len(group), exc)
                    return []
                log.warning("%s: commit failed (%s); retrying in %.1f s", self.options.worker_id, exc, delay)
                self.counters.bump("db_retries")
                time.sleep(delay)
                delay = min(delay * 2, self.options.retry_max_s)
                conn = self._reconnect_writer(n) or conn
            except Exception as exc:  # the data (or a bug): never stall on it
                if isinstance(exc, psycopg.errors.CheckViolation) and not partitions_refreshed:
                    partitions.forget(conn)  # a day's partition may have been dropped meanwhile
                    partitions_refreshed = True
                    continue
                if not isinstance(exc, psycopg.Error):
                    log.exception("%s: cannot commit %d messages", self.options.worker_id, len(group))
                if len(group) > 1:
                    half = len(group) // 2
                    return self._store(group[:half], n) + self._store(group[half:], n)
                return self._refuse(group[0], exc, conn)
        self.counters.committed(outcome)
        observe_commit(len(group), outcome.counts["readings"])  # Prometheus: batch sizes (cloud.fleet.metrics)
        seen = datetime.now(UTC)
        with self._seen_lock:
            self._seen_gateways.update(dict.fromkeys(outcome.gateways, seen))
            self._seen_devices.update(dict.fromkeys(outcome.devices, seen))
        try:
            self._publish_receipts(outcome)
        except Exception:  # left unacknowledged, the broker delivers them again: counted duplicates, receipted then
            log.exception("%s: cannot publish the receipts of %d committed messages", self.options.worker_id,
                          len(group))
            self.counters.bump("internal_errors")
            return []
        return group

    def _refuse(self, pair: tuple[Incoming, Prepared], exc: Exception, conn: psycopg.Connection) -> Group:
        """Dead-letter the one message the database (or a bug) will not take, and move on."""
        incoming, prepared = pair
        log.error("%s: the database refuses a message on %s: %s", self.options.worker_id, incoming.topic, exc)
        batch = prepared.batch
        letter = writes.DeadLetter(incoming.topic, "store_error", f"{type(exc).__name__}: {exc}", incoming.payload,
                                   batch.tenant_id if batch else None, batch.gateway_id if batch else None)
        try:
            with conn.transaction():
                writes.insert_dead_letters(conn, [letter])
            self.counters.refused("store_error")
        except psycopg.Error as again:
            log.error("%s: cannot dead-letter it either (%s); dropping it from the broker, the gateway re-sends "
                      "what is not receipted", self.options.worker_id, again)
        return [pair]

    @staticmethod
    def _ensure_partitions(group: Group, conn: psycopg.Connection) -> None:
        days = set().union(*(p.days for _, p in group))
        for day in sorted(days):
            when = date(1970, 1, 1) + timedelta(days=day)
            partitions.ensure_partitions(conn, when, when)

    def _publish_receipts(self, outcome: Outcome) -> None:
        now_ms = int(time.time() * 1000)
        for (tenant, gw), (key, bids) in outcome.receipts.items():
            topic = topics.gateway(tenant, gw, "receipt")
            for start in range(0, len(bids), models.MAX_BATCH_ITEMS):
                chunk = bids[start : start + models.MAX_BATCH_ITEMS]
                receipt = models.Receipt(k="receipt", gw=gw, at=now_ms, bids=chunk)
                self._client.publish(topic, sign(key, receipt.model_dump_json().encode()), qos=1)
                self.counters.bump("receipts_published")

    def _acknowledge(self, seq: int, pairs: Group) -> None:
        """Acknowledge in the order the messages came, whichever committer finishes first: MQTT wants PUBACKs in
        the order of the PUBLISHes, so a group's wait for those of every group handed over before it."""
        with self._ack_lock:
            self._acks_waiting[seq] = pairs
            while self._next_ack in self._acks_waiting:
                self._ack(self._acks_waiting.pop(self._next_ack))
                self._next_ack += 1

    def _ack(self, group: Group) -> None:
        acked = 0
        for incoming, _ in group:
            # A message from an earlier connection is redelivered on this one: the ledger makes it a duplicate.
            if incoming.qos and incoming.generation == self._generation and self._connected:
                self._client.ack(incoming.mid, incoming.qos)
                acked += 1
        self.counters.bump("messages_acked", acked)

    def _save_last_seen(self) -> None:
        conn = self._write_conns[0]
        with self._seen_lock:
            gateways, devices = self._seen_gateways, self._seen_devices
            self._seen_gateways, self._seen_devices = {}, {}
        if not (gateways or devices) or conn is None:
            return
        try:
            with conn.transaction():
                writes.touch_last_seen(conn, "gateways", gateways)
                writes.touch_last_seen(conn, "devices", devices)
        except psycopg.Error:
            with self._seen_lock:  # keep them for the next attempt (newer times win)
                self._seen_gateways = gateways | self._seen_gateways
                self._seen_devices = devices | self._seen_devices
            raise

    def _save_counters(self) -> None:
        conn = self._write_conns[0]
        if conn is None:
            return
        writes.save_worker_counters(conn, self.options.worker_id, socket.gethostname(), os.getpid(),
                                    self._started_at, self.counters.snapshot(reset_window=True))
