"""One MQTT connection and the one thread that drives it, shared by the intake and the uplink.

paho-mqtt does the protocol; this module adds what a gateway on a flaky rural link needs and
paho's own ``loop_start`` does not: reconnect with exponential back-off *and jitter* (so a
village of gateways does not reconnect in lock-step after a broker restart), a persistent
session (``clean_start=False`` and a session expiry, so subscriptions and queued QoS 1 messages
survive reconnects and agent restarts), TLS and credentials from the configuration, and a loop
that never dies on an exception.

MQTT 5 is the protocol; MQTT 3.1.1 (``BrokerConfig.protocol``) serves brokers that speak nothing
newer, such as the pure-Python amqtt the demo falls back on.  What differs between the two is
kept in :class:`Mqtt5Session` and :class:`Mqtt311Session`.

Every callback (messages, connect, the owner's periodic ``on_tick``) runs on the link's thread,
so the owner's state needs no lock against its own callbacks.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config import BrokerConfig
from edge_agent.logging_setup import LogLimiter

log = logging.getLogger(__name__)

#: give up on a connection attempt that has not received a CONNACK after this long
CONNACK_TIMEOUT_S = 10.0
#: MQTT v5 reason code 0x04: "disconnect with will message" (a clean stop still announces it)
DISCONNECT_WITH_WILL = 4

MessageHandler = Callable[[str, bytes], None]


def backoff_delay(attempt: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential back-off with "equal jitter": half the step is fixed, half random."""
    step = min(max_s, min_s * 2 ** min(attempt, 30))
    return step / 2 + rng.uniform(0, step / 2)


class Mqtt5Session:
    """MQTT 5: ``clean_start=False`` with a session expiry; a clean stop asks the broker for the will."""

    paho_protocol = paho.MQTTv5
    clean_session: bool | None = None  # paho refuses the 3.1.1 flag on an MQTT 5 client

    def connect(self, client: paho.Client, broker: BrokerConfig, session_expiry_s: int) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry_s
        # clean_start=False on every connect, the first included: the session (subscriptions and
        # QoS 1 messages queued for us, such as receipts sent while the agent restarted) is kept.
        client.connect(broker.host, broker.port, broker.keepalive_s, clean_start=False, properties=props)

    def goodbye(self, client: paho.Client, will: tuple[str, bytes] | None) -> None:
        reason = ReasonCode(PacketTypes.DISCONNECT, identifier=DISCONNECT_WITH_WILL if will else 0)
        client.disconnect(reasoncode=reason)


class Mqtt311Session:
    """MQTT 3.1.1: ``clean_session=False`` (the broker decides how long it keeps the session); no
    properties, so no Maximum Packet Size from the CONNACK and no reason codes.  A clean
    DISCONNECT discards the will, so a clean stop publishes the will's message itself."""

    paho_protocol = paho.MQTTv311
    clean_session: bool | None = False

    def connect(self, client: paho.Client, broker: BrokerConfig, session_expiry_s: int) -> None:
        client.connect(broker.host, broker.port, broker.keepalive_s)

    def goodbye(self, client: paho.Client, will: tuple[str, bytes] | None) -> None:
        if will is not None:
            client.publish(will[0], will[1], qos=1, retain=True)
        client.disconnect()


SESSIONS: dict[str, Mqtt5Session | Mqtt311Session] = {"5": Mqtt5Session(), "3.1.1": Mqtt311Session()}


def make_client(broker: BrokerConfig, client_id: str) -> paho.Client:
    """A paho client for the broker's MQTT version with its credentials and TLS settings applied."""
    session = SESSIONS[broker.protocol]
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=session.paho_protocol,
                         clean_session=session.clean_session)
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls is not None:
        tls = broker.tls
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
        )
        client.tls_insecure_set(tls.insecure_skip_verify)
    return client


class MqttLink:
    """Keeps one session with one broker alive until :meth:`stop`.

    ``subscriptions`` are (filter, qos) pairs renewed on every connect; ``on_connected`` runs
    after each successful CONNACK (birth messages belong there); ``will`` is called before each
    connection attempt and returns the (topic, payload) of a retained QoS 1 last will.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        client_id: str,
        *,
        on_message: MessageHandler,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_connected: Callable[[], None] | None = None,
        on_tick: Callable[[], None] | None = None,
        will: Callable[[], tuple[str, bytes]] | None = None,
        tick_s: float = 1.0,
        session_expiry_s: int = 86_400,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        max_inflight: int = 20,
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self._on_message = on_message
        self._subscriptions = list(subscriptions)
        self._on_connected = on_connected
        self._on_tick = on_tick
        self._will = will
        self._tick_s = tick_s
        self._session_expiry_s = session_expiry_s
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = max(reconnect_min_s, reconnect_max_s)
        self._rng = random.Random()
        self._log_limit = LogLimiter(300.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected = False
        #: the broker's Maximum Packet Size from its CONNACK (MQTT v5), None when it sets none
        self.max_packet_size: int | None = None
        self._refused = False
        self._fault = False
        self.counters = {"connects": 0, "connect_failures": 0, "disconnects": 0, "callback_errors": 0}
        self._session = SESSIONS[broker.protocol]
        self._last_will: tuple[str, bytes] | None = None
        self._client = make_client(broker, client_id)
        self._client.max_inflight_messages_set(max_inflight)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message

    @property
    def connected(self) -> bool:
        return self._connected

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.client_id}: already started")
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.client_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, then say goodbye; with a will set, the broker publishes it (offline)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._connected:
            try:
                self._session.goodbye(self._client, self._last_will)
            except (OSError, ValueError) as exc:
                log.debug("%s: disconnect failed: %s", self.client_id, exc)
        self._connected = False

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> paho.MQTTMessageInfo | None:
        """Publish now if connected (thread-safe); None when offline, so the caller keeps the data."""
        if not self._connected:
            return None
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        return info if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS else None

    # -- the link's thread -----------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        started = 0.0
        socket_open = False
        while not self._stop.is_set():
            if not socket_open:
                try:
                    self._connect()
                except Exception as exc:  # the network loop must never die: OSError, ssl, DNS...
                    self._connect_failed(attempt, exc)
                    self._stop.wait(backoff_delay(attempt, self._reconnect_min_s, self._reconnect_max_s, self._rng))
                    attempt += 1
                    continue
                socket_open, started = True, time.monotonic()
            try:
                rc = self._client.loop(timeout=self._tick_s)
            except Exception as exc:  # an exception escaping a callback (logged there) or paho itself
                if not self._fault and self._log_limit.allow(("loop", type(exc).__name__)) is not None:
                    log.exception("%s: network loop error: %s", self.client_id, exc)
                rc = MQTTErrorCode.MQTT_ERR_UNKNOWN
            waited_too_long = not self._connected and time.monotonic() - started > CONNACK_TIMEOUT_S
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._refused or self._fault or waited_too_long:
                if self._connected:
                    self.counters["disconnects"] += 1
                    log.warning("%s: connection to %s lost (%s)", self.client_id, self._where(), rc)
                elif rc == MQTTErrorCode.MQTT_ERR_SUCCESS or waited_too_long:
                    self._connect_failed(attempt, RuntimeError("no CONNACK" if waited_too_long else "refused"))
                socket_open = self._connected = self._refused = self._fault = False
                self._stop.wait(backoff_delay(attempt, self._reconnect_min_s, self._reconnect_max_s, self._rng))
                attempt += 1
                continue
            if self._connected:
                attempt = 0
                if self._on_tick is not None:
                    self._guarded(self._on_tick)

    def _connect(self) -> None:
        if self._will is not None:
            self._last_will = self._will()
            self._client.will_set(*self._last_will, qos=1, retain=True)
        self._session.connect(self._client, self.broker, self._session_expiry_s)

    def _connect_failed(self, attempt: int, exc: BaseException) -> None:
        self.counters["connect_failures"] += 1
        level = logging.WARNING if attempt == 0 else logging.DEBUG
        log.log(level, "%s: cannot connect to %s: %s (retrying with back-off)", self.client_id, self._where(), exc)

    def _where(self) -> str:
        return f"{self.broker.host}:{self.broker.port}"

    def _guarded(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:
            self.counters["callback_errors"] += 1
            if self._log_limit.allow(type(exc).__name__) is not None:
                log.exception("%s: error in a periodic task: %s", self.client_id, exc)

    # -- paho callbacks (on the link's thread) ---------------------------------------------

    def _handle_connect(self, client: paho.Client, _userdata: object, flags: paho.ConnectFlags,
                        reason: ReasonCode, props: Properties | None) -> None:
        if reason.is_failure:
            self._refused = True
            self._connect_failed(0, RuntimeError(f"broker refused: {reason}"))
            return
        self.max_packet_size = getattr(props, "MaximumPacketSize", None)
        self._connected = True
        self.counters["connects"] += 1
        log.info("%s: connected to %s (session present: %s)", self.client_id, self._where(), flags.session_present)
        for topic_filter, qos in self._subscriptions:
            client.subscribe(topic_filter, qos=qos)
        if self._on_connected is not None:
            self._guarded(self._on_connected)

    def _handle_disconnect(self, _client: paho.Client, _userdata: object, _flags: object,
                           reason: ReasonCode, _props: Properties | None) -> None:
        if self._connected and not self._stop.is_set():
            log.info("%s: disconnected: %s", self.client_id, reason)

    def _handle_message(self, _client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        try:
            self._on_message(msg.topic, msg.payload)
        except Exception as exc:
            # Not acknowledged: drop the connection so the broker redelivers the message when we
            # are back (the usual cause is a full or failing disk under the outbox).
            self.counters["callback_errors"] += 1
            self._fault = True
            if self._log_limit.allow(("message", type(exc).__name__)) is not None:
                log.exception("%s: cannot handle a message on %s: %s", self.client_id, msg.topic, exc)
            raise
