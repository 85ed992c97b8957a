"""A stand-in for the cloud ingest, for edge tests and the edge demo: verify, de-duplicate,
store, receipt.  (The real ingest lives in ``cloud.ingest``; this peer simulates it the way the
other modules of ``hardware`` simulate devices, so the edge can be tested on its own.)

It does what the contract asks of the real ingest and nothing more: checks the gateway's batch
signature, each node frame's own signature (with node keys it is given, as the cloud holds
them), applies the duplicate rule (``contract.telemetry.classify``) per (dev, ep, seq), keeps
what it stored in memory, and publishes a signed commit receipt per batch.  ``withhold = True``
makes it store without receipting (a cloud that crashed before its commit), so the gateway must
re-send.  It also records heartbeats and birth/will messages.  ``protocol`` is the MQTT version
its broker speaks ("5", or "3.1.1" for amqtt).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from contract import models, topics
from contract.telemetry import (
    CONFLICT,
    DUPLICATE,
    MAX_BATCH_FRAME_BYTES,
    ContractError,
    classify,
    digest,
    encode_body,
    peek,
    sign,
    verify,
)

Key = tuple[str, int, int]


@dataclass
class Stored:
    """What the peer committed: telemetry bodies by (dev, ep, seq), and where each came from."""

    bodies: dict[Key, bytes] = field(default_factory=dict)
    node_signed: set[Key] = field(default_factory=set)
    batches: set[str] = field(default_factory=set)


class CloudPeer:
    def __init__(
        self,
        host: str,
        port: int,
        tenant: str,
        gw: str,
        gw_key: bytes,
        node_keys: dict[str, bytes] | None = None,
        *,
        withhold: bool = False,
        protocol: Literal["5", "3.1.1"] = "5",
    ) -> None:
        self.host, self.port = host, port
        self.tenant, self.gw = tenant, gw
        self._gw_key = gw_key
        self.node_keys = dict(node_keys or {})
        self.withhold = withhold
        self.stored = Stored()
        self.counts: Counter[str] = Counter()
        self.health: list[models.Health] = []
        self.presence: list[models.Presence] = []
        self.receipted: list[str] = []
        self._cond = threading.Condition()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"cloud-peer-{uuid.uuid4().hex[:12]}",
            protocol=paho.MQTTv5 if protocol == "5" else paho.MQTTv311,
        )
        self._client.reconnect_delay_set(min_delay=0.1, max_delay=1)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._subscribed = threading.Event()
        self._client.on_subscribe = lambda *_a: self._subscribed.set()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> CloudPeer:
        self._client.connect(self.host, self.port, 30)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("cloud peer: no SUBACK")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> CloudPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, predicate: Callable[[CloudPeer], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate(self)`` holds; False on timeout (the caller asserts)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    def topic(self, leaf: str) -> str:
        return topics.gateway(self.tenant, self.gw, leaf)

    def values(self, dev: str, metric: str) -> list[float | int | str | bool | None]:
        """Values of ``metric`` stored for ``dev``, in sequence order."""
        out = []
        with self._cond:
            for key in sorted(k for k in self.stored.bodies if k[0] == dev):
                tel = models.parse(self.stored.bodies[key], expect="tel")
                assert isinstance(tel, models.Telemetry)
                out += [r.value for r in tel.r if r.n == metric]
        return out

    # -- MQTT --------------------------------------------------------------------------------

    def _on_connect(self, client: paho.Client, *_args: object) -> None:
        client.subscribe([(self.topic("up"), 1), (self.topic("health"), 0), (self.topic("state"), 1)])

    def _on_message(self, _client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        leaf = msg.topic.rsplit("/", 1)[-1]
        with self._cond:
            try:
                body = verify(msg.payload, self._gw_key, MAX_BATCH_FRAME_BYTES)
                parsed = models.parse(body)
            except ContractError as exc:
                self.counts[f"rejected_{leaf}_{exc.reason}"] += 1
            else:
                if leaf == "up" and isinstance(parsed, models.Batch):
                    self._store_batch(parsed, body)
                elif leaf == "health" and isinstance(parsed, models.Health):
                    self.health.append(parsed)
                elif leaf == "state" and isinstance(parsed, models.Presence):
                    self.presence.append(parsed)
                else:
                    self.counts[f"rejected_{leaf}_wrong_kind"] += 1
            self._cond.notify_all()

    def _store_batch(self, batch: models.Batch, body: bytes) -> None:
        bid = batch.batch_id
        self.counts["batches"] += 1
        if bid in self.stored.batches:
            self.counts["batch_redelivered"] += 1
        raw = json.loads(body)
        for obj in raw["tel"]:
            self._store_one((obj["dev"], obj["ep"], obj["seq"]), encode_body(obj), node_signed=False)
        for frame in batch.node_frames():
            try:
                obj, _ = peek(frame)
                node_body = verify(frame, self.node_keys[obj["dev"]])
            except KeyError:
                self.counts["node_unknown"] += 1
                continue
            except ContractError as exc:
                self.counts[f"node_{exc.reason}"] += 1
                continue
            self._store_one((obj["dev"], obj["ep"], obj["seq"]), node_body, node_signed=True)
        self.stored.batches.add(bid)
        if self.withhold:
            self.counts["receipts_withheld"] += 1
            return
        receipt = models.Receipt(k="receipt", gw=self.gw, at=int(time.time() * 1000), bids=[bid])
        frame = sign(self._gw_key, receipt.model_dump_json().encode())
        self._client.publish(self.topic("receipt"), frame, qos=1)
        self.receipted.append(bid)

    def _store_one(self, key: Key, body: bytes, *, node_signed: bool) -> None:
        known = self.stored.bodies.get(key)
        verdict = classify(digest(known) if known is not None else None, digest(body))
        if verdict == DUPLICATE:
            self.counts["duplicates"] += 1
        elif verdict == CONFLICT:
            self.counts["conflicts"] += 1  # the first stored version stays (dead-lettered, alarmed)
        else:
            self.stored.bodies[key] = body
            if node_signed:
                self.stored.node_signed.add(key)
            self.counts["stored"] += 1
