"""The uplink: signed batches from the outbox to the cloud, deleted only on the cloud's receipt.

A broker's PUBACK only says the broker has the message, not that the cloud stored it; the
cloud's commit receipt (signed with this gateway's key, so nobody else can make the gateway
delete data) is the only thing that removes a batch from the outbox.  A batch is sealed and
stored *before* it is published, and re-sent with the same bytes until receipted, so the
delivery is at least once and the cloud's duplicate rule makes it exactly-once storage.

Everything here runs on the link's thread (receipts, the periodic tick, birth on connect, the
downlink for the gateway's nodes, handed to ``edge_agent.node_relay``, and the cloud's signed agent
update on the gateway's ``update`` topic, handed to ``edge_agent.updater.UpdateReceiver``), except
:meth:`Uplink.publish_health`, which goes through paho's thread-safe ``publish``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence

from contract import models, topics
from contract.telemetry import (
    BODY_OFFSET,
    MAX_BATCH_FRAME_BYTES,
    ContractError,
    encode_body,
    sign,
    verify,
)
from edge_agent.config import GatewayIdentity, UplinkConfig
from edge_agent.logging_setup import LogLimiter
from edge_agent.mqtt import MqttLink
from edge_agent.outbox import Item, Outbox

log = logging.getLogger(__name__)

#: how often the link thread looks at the outbox (new data, overdue receipts)
TICK_S = 0.1
#: a backlog is "large" above this many full batches; then newest and oldest batches alternate
BACKLOG_BATCHES = 2
#: bytes of an MQTT PUBLISH packet besides the topic and the payload (header, lengths, packet id)
PUBLISH_OVERHEAD = 16
_TAIL = b'],"nodes":[]}'


class Uplink:
    """Batches, signs, publishes and re-sends; applies receipts.  Owns the cloud MQTT link."""

    def __init__(
        self,
        gateway: GatewayIdentity,
        key: bytes,
        cfg: UplinkConfig,
        outbox: Outbox,
        *,
        sw: str,
        downlink: tuple[Sequence[str], Callable[[str, bytes], object]] | None = None,
        on_update: Callable[[bytes], object] | None = None,
        time_fn: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``downlink``: (topic filters, handler) for what the cloud sends the gateway's nodes
        (``edge_agent.node_relay``); ``on_update``: the handler of the gateway's ``update`` topic (the
        cloud's agent updates); both subscribed on this connection beside the receipts."""
        self.gw = gateway.id
        self.tenant = gateway.tenant
        self.ep = gateway.key_epoch
        self.cfg = cfg
        self._key = key
        self._outbox = outbox
        self._sw = sw
        self._time = time_fn
        self._monotonic = monotonic
        self._log_limit = LogLimiter(300.0)
        self._sent_at: dict[tuple[int, int], float] = {}  # this process's last send, monotonic
        self._pending_since: float | None = None
        self._newest_next = False
        self.counters = dict.fromkeys(
            (
                "batches_sent",
                "batches_resent",
                "receipts",
                "receipts_rejected",
                "receipt_bids_unknown",
                "items_confirmed",
                "health_sent",
                "health_skipped",
                "batches_too_large",
            ),
            0,
        )
        self.topic_up = topics.gateway(self.tenant, self.gw, "up")
        self.topic_receipt = topics.gateway(self.tenant, self.gw, "receipt")
        self.topic_health = topics.gateway(self.tenant, self.gw, "health")
        self.topic_state = topics.gateway(self.tenant, self.gw, "state")
        self.topic_update = topics.gateway(self.tenant, self.gw, "update")
        self._downlink = downlink[1] if downlink is not None else None
        self._on_update = on_update
        subscriptions = [(self.topic_receipt, 1)] + [(f, 1) for f in (downlink[0] if downlink else ())]
        if on_update is not None:
            subscriptions.append((self.topic_update, 1))
        self.link = MqttLink(
            cfg.broker,
            cfg.client_id or f"fieldtrust-gw-{self.gw}",
            on_message=self._on_message,
            subscriptions=subscriptions,
            on_connected=self._on_connected,
            on_tick=self._tick,
            will=self._will,
            tick_s=TICK_S,
            session_expiry_s=cfg.session_expiry_s,
            reconnect_min_s=cfg.reconnect_min_s,
            reconnect_max_s=cfg.reconnect_max_s,
            max_inflight=cfg.max_in_flight + 8,
        )

    def start(self) -> None:
        self.link.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.link.stop(timeout)

    @property
    def connected(self) -> bool:
        return self.link.connected

    def all_counters(self) -> dict[str, int]:
        return {**self.counters, **self.link.counters}

    def publish_health(self, frame: bytes) -> bool:
        """Send a signed heartbeat (QoS 0: a missed one is replaced by the next).  Thread-safe."""
        sent = self.link.publish(self.topic_health, frame, qos=0) is not None
        self.counters["health_sent" if sent else "health_skipped"] += 1
        return sent

    # -- presence --------------------------------------------------------------------------

    def _presence(self, kind: str) -> bytes:
        body = models.Presence(k=kind, gw=self.gw, at=int(self._time() * 1000), sw=self._sw)  # type: ignore[arg-type]
        return sign(self._key, body.model_dump_json(exclude_none=True).encode())

    def _will(self) -> tuple[str, bytes]:
        return self.topic_state, self._presence("will")

    def _on_connected(self) -> None:
        self.link.publish(self.topic_state, self._presence("birth"), qos=1, retain=True)

    # -- batches ---------------------------------------------------------------------------

    def _tick(self) -> None:
        now = self._monotonic()
        self._resend_overdue(now)
        self._send_new(now)

    def _resend_overdue(self, now: float) -> None:
        keys = self._outbox.batch_keys()
        live = set(keys)
        for gone in [k for k in self._sent_at if k not in live]:  # receipted or dropped
            del self._sent_at[gone]
        budget = self.cfg.max_in_flight
        for key in keys:
            last = self._sent_at.get(key)
            if last is not None and now - last < self.cfg.receipt_timeout_s:
                continue
            if budget == 0:
                break
            stored = self._outbox.batch(*key)
            if stored is None:
                continue
            if self._publish(stored.ep, stored.seq, stored.frame):
                counter = "batches_resent" if stored.attempts else "batches_sent"
                self.counters[counter] += 1
                budget -= 1

    def _send_new(self, now: float) -> None:
        while self._outbox.in_flight < self.cfg.max_in_flight and self._ready(now):
            backlog = self._outbox.pending > BACKLOG_BATCHES * self.cfg.batch_max_items
            newest_first = backlog and self._newest_next
            self._newest_next = backlog and not self._newest_next
            sealed = self._outbox.seal_batch(
                self.ep, self.cfg.batch_max_items, newest_first=newest_first, build=self.build_frame
            )
            if sealed is None:
                return
            if self._publish(sealed.ep, sealed.seq, sealed.frame):
                self.counters["batches_sent"] += 1

    def _ready(self, now: float) -> bool:
        """A batch is due when full (items or bytes) or when its oldest item waited long enough."""
        if self._outbox.pending == 0:
            self._pending_since = None
            return False
        if self._pending_since is None:
            self._pending_since = now
        return (
            self._outbox.pending >= self.cfg.batch_max_items
            or self._outbox.pending_bytes >= self.cfg.batch_max_bytes
            or now - self._pending_since >= self.cfg.batch_max_wait_s
        )

    def _max_frame(self) -> int:
        """The largest frame the broker accepts (its CONNACK says) and the contract allows."""
        limit = MAX_BATCH_FRAME_BYTES
        if self.link.max_packet_size is not None:
            limit = min(limit, self.link.max_packet_size - len(self.topic_up.encode()) - PUBLISH_OVERHEAD)
        return limit

    def _publish(self, ep: int, seq: int, frame: bytes) -> bool:
        if len(frame) > self._max_frame():
            # Sealed under a larger limit: sending it would only get us disconnected, again and again.
            self.counters["batches_too_large"] += 1
            self._sent_at[(ep, seq)] = self._monotonic()  # try again after the receipt timeout, not every tick
            if self._log_limit.allow("too_large") is not None:
                log.error("batch %d:%d (%d bytes) exceeds the broker's maximum packet size; it stays in the "
                          "outbox until the limit is raised or it is dropped as the oldest", ep, seq, len(frame))
            return False
        if self.link.publish(self.topic_up, frame, qos=1) is None:
            return False
        self._outbox.mark_sent(ep, seq)
        self._sent_at[(ep, seq)] = self._monotonic()
        return True

    def build_frame(self, seq: int, items: list[Item]) -> tuple[bytes, int]:
        """The signed batch frame for the leading items that fit in ``batch_max_bytes``.

        Telemetry bodies are spliced in as the JSON objects they are, and node frames as JSON
        strings, both without re-encoding what was captured; the header goes through
        ``encode_body`` like every other body.
        """
        header = encode_body(
            {
                "v": 1,
                "k": "batch",
                "gw": self.gw,
                "tenant": self.tenant,
                "ep": self.ep,
                "seq": seq,
                "sw": self._sw,
                "sent": int(self._time() * 1000),
            }
        )
        head = header[:-1] + b',"tel":['
        limit = min(self.cfg.batch_max_bytes, self._max_frame() - BODY_OFFSET - 1)
        size = len(head) + len(_TAIL)
        tel: list[bytes] = []
        nodes: list[bytes] = []
        n = 0
        for item in items:
            part = item.data if item.kind == "tel" else json.dumps(item.data.decode("utf-8")).encode()
            if n and size + len(part) + 1 > limit:
                break
            (tel if item.kind == "tel" else nodes).append(part)
            size += len(part) + 1
            n += 1
        body = head + b",".join(tel) + b'],"nodes":[' + b",".join(nodes) + b"]}"
        return sign(self._key, body), n

    # -- receipts --------------------------------------------------------------------------

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == self.topic_update and self._on_update is not None:
            self._on_update(payload)
        elif topic == self.topic_receipt or self._downlink is None:
            self._on_receipt(topic, payload)
        else:
            self._downlink(topic, payload)

    def _on_receipt(self, _topic: str, payload: bytes) -> None:
        try:
            receipt = models.parse(verify(payload, self._key, MAX_BATCH_FRAME_BYTES), expect="receipt")
            if not isinstance(receipt, models.Receipt) or receipt.gw != self.gw:
                raise ContractError("wrong_gateway", f"receipt for {getattr(receipt, 'gw', None)!r}")
        except ContractError as exc:
            self.counters["receipts_rejected"] += 1
            if self._log_limit.allow(exc.reason) is not None:
                log.warning("ignored a receipt that is not from our cloud: %s", exc)
            return
        keys: list[tuple[int, int]] = []
        for bid in receipt.bids:
            gw, _, rest = bid.partition(":")
            ep, _, seq = rest.partition(":")
            if gw == self.gw and ep.isdigit() and seq.isdigit():
                keys.append((int(ep), int(seq)))
        batches, items = self._outbox.confirm(keys)
        for key in keys:
            self._sent_at.pop(key, None)
        self.counters["receipts"] += 1
        self.counters["items_confirmed"] += items
        self.counters["receipt_bids_unknown"] += len(receipt.bids) - batches
