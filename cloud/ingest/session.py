"""The ingest's MQTT session: broker URL, client and connection options for MQTT 5 and 3.1.1.

MQTT 5 (the default): a persistent session (``clean_start=False`` with a session expiry), a
Receive Maximum that bounds the unacknowledged messages the broker sends us, manual
acknowledgement, and a shared subscription so that several workers split the gateways' uplinks.
MQTT 3.1.1 (``?protocol=3.1.1``, for brokers such as amqtt that speak nothing newer): a
persistent session (``clean_session=False``) and a plain subscription — one worker only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from contract import topics

Protocol = Literal["5", "3.1.1"]


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    protocol: Protocol = "5"

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        """``mqtt[s]://[user[:password]@]host[:port][?protocol=5|3.1.1]``; ValueError names the part at fault."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"FIELDTRUST_MQTT_URL: scheme must be mqtt:// or mqtts://; got {url!r}")
        if not parts.hostname:
            raise ValueError(f"FIELDTRUST_MQTT_URL: no host in {url!r}")
        try:
            port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        except ValueError:
            raise ValueError(f"FIELDTRUST_MQTT_URL: bad port in {url!r}") from None
        query = parse_qs(parts.query)
        protocol = query.pop("protocol", ["5"])[-1]
        if protocol not in ("5", "3.1.1"):
            raise ValueError(f"FIELDTRUST_MQTT_URL: protocol must be 5 or 3.1.1; got {protocol!r}")
        if query:
            raise ValueError(f"FIELDTRUST_MQTT_URL: unknown options {', '.join(sorted(query))}")
        return cls(
            parts.hostname,
            port,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
            parts.scheme == "mqtts",
            protocol,  # type: ignore[arg-type]
        )

    def uplink_filter(self, group: str) -> str:
        """The subscription: shared among the ``group``'s workers on MQTT 5, plain on 3.1.1."""
        plain = topics.gateway_uplink_filter(shared=False)
        return plain if self.protocol == "3.1.1" else f"$share/{group}/{plain}"


def make_client(broker: BrokerUrl, client_id: str) -> paho.Client:
    """A paho client that acknowledges only when told to (``client.ack``)."""
    v5 = broker.protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        clean_session=None if v5 else False,
        manual_ack=True,
    )
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set()
    client.reconnect_delay_set(min_delay=0.2, max_delay=10)
    return client


def connect_async(client: paho.Client, broker: BrokerUrl, *, session_expiry_s: int, receive_maximum: int,
                  keepalive_s: int = 30) -> None:
    """Start connecting (the client's loop thread completes it and reconnects after losses)."""
    if broker.protocol == "3.1.1":
        client.connect_async(broker.host, broker.port, keepalive_s)
        return
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    props.ReceiveMaximum = receive_maximum
    client.connect_async(broker.host, broker.port, keepalive_s, clean_start=False, properties=props)
