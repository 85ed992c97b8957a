"""Publishers on a gateway's local broker: a sensor node sending signed frames, or any client sending bytes."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from contract import topics
from fieldtrust.services.broker import LocalBroker
from support.readings import node_frame


class Publisher:
    """A connected paho client speaking the broker's MQTT version (``broker.protocol``); :meth:`close` it."""

    def __init__(self, broker: LocalBroker, client_id: str | None = None) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}",
                                  protocol=paho.MQTTv5 if broker.protocol == "5" else paho.MQTTv311)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the broker's acknowledgement."""
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Node(Publisher):
    """Sensor node ``node`` publishing frames signed with ``key`` on its up topic."""

    def __init__(self, broker: LocalBroker, node: str, key: bytes) -> None:
        super().__init__(broker, client_id=f"{node}-{uuid.uuid4().hex[:4]}")
        self.node, self.key = node, key

    def send_frames(self, seqs: Iterable[int], value: float = 21.5) -> None:
        """One frame per sequence number, all published before waiting for their acknowledgements."""
        sent = [self.client.publish(topics.node(self.node, "up"), node_frame(self.key, self.node, seq, value), qos=1)
                for seq in seqs]
        for info in sent:
            info.wait_for_publish(5)
