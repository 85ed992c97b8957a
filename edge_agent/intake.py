"""Node intake: signed frames from the gateway's local broker into the outbox, verbatim.

The gateway cannot verify node signatures (node keys stay in the cloud), so it checks what it
can — size, frame form, body form (``contract.models``), that the topic's node id is the body's
``dev`` — and keeps a bounded window of (ep, seq) -> digest per node to apply the duplicate rule
early: an identical repeat is counted and dropped (already captured), the same (ep, seq) with
other bytes is stored as a *conflict* item and forwarded, so the cloud dead-letters and alarms.
Everything else valid is captured exactly as the node sent it.

A frame is acknowledged to the broker only after its capture has committed: the handler runs
inside paho's message callback, and an exception there (a failing disk) leaves the message
unacknowledged for the broker to redeliver (see ``edge_agent.mqtt``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from contract import models, topics
from contract.telemetry import (
    CONFLICT,
    DUPLICATE,
    MAX_NODE_FRAME_BYTES,
    ContractError,
    classify,
    digest,
    unframe,
)
from edge_agent.config import IntakeConfig
from edge_agent.logging_setup import LogLimiter
from edge_agent.mqtt import MqttLink
from edge_agent.outbox import Outbox

log = logging.getLogger(__name__)

#: nodes whose sequence window and state are remembered (least recently heard forgotten first):
#: bounds memory when something on the farm network invents node ids
MAX_TRACKED_NODES = 256
#: digests of conflicting frames already forwarded: a replayed conflict is forwarded once
MAX_CONFLICTS_REMEMBERED = 4096

ACCEPTED = "accepted"
#: records a node sends when it refuses a config or an OTA manifest (``firmware/cycle.py``), value the reason
NODE_REFUSAL_RECORDS = ("config_refused", "ota_refused")
#: distinct refusal reasons kept per node
MAX_REFUSAL_KINDS = 32


@dataclass(slots=True)
class NodeState:
    """What the gateway knows of one node, for health: presence, last good frame, what it last said.

    Battery, RSSI and firmware come from the frame with the highest (ep, seq) seen, so a backlog
    drained after fresh frames does not put old values back.
    """

    presence: str = "unknown"  # birth, will, or unknown
    presence_at_ms: int | None = None
    last_good_ms: int | None = None
    rejected: int = 0
    fw: str | None = None  # the birth's sw; a frame's fw until a birth is heard
    fw_from_birth: bool = False
    build: int | None = None  # the firmware build the birth named (what the cloud's OTA jobs compare)
    last_key: tuple[int, int] | None = None  # (ep, seq) of the newest frame
    battery: float | None = None
    battery_unit: str | None = None
    rssi: float | None = None
    refused: dict[str, int] = field(default_factory=dict)  # "<record>.<reason>" -> count

    def note_frame(self, tel: models.Telemetry) -> None:
        for rec in tel.r:
            if rec.n in NODE_REFUSAL_RECORDS:
                kind = f"{rec.n}.{rec.value}"
                if kind in self.refused or len(self.refused) < MAX_REFUSAL_KINDS:
                    self.refused[kind] = self.refused.get(kind, 0) + 1
        key = (tel.ep, tel.seq)
        if self.last_key is not None and key < self.last_key:
            return
        self.last_key = key
        if not self.fw_from_birth:
            self.fw = tel.fw
        for rec in tel.r:
            if rec.n == "battery" and rec.v is not None:
                self.battery, self.battery_unit = float(rec.v), rec.u
            elif rec.n == "rssi" and rec.v is not None:
                self.rssi = float(rec.v)


class Intake:
    """Subscribes to node uplinks and states on the local broker; captures valid frames."""

    def __init__(
        self, cfg: IntakeConfig, outbox: Outbox, client_id: str, *, time_fn: Callable[[], float] = time.time
    ) -> None:
        self.cfg = cfg
        self._outbox = outbox
        self._time = time_fn
        self._windows: OrderedDict[str, OrderedDict[tuple[int, int], str]] = OrderedDict()
        self._nodes: OrderedDict[str, NodeState] = OrderedDict()
        self._nodes_lock = threading.Lock()  # node states are read by the health thread
        self._conflicts: OrderedDict[str, None] = OrderedDict()
        self._log_limit = LogLimiter(300.0)
        self.counters: Counter[str] = Counter()
        self.link = MqttLink(
            cfg.broker,
            client_id,
            on_message=self._on_message,
            subscriptions=[(topics.NODE_UPLINK_FILTER, 1), (topics.NODE_STATE_FILTER, 1)],
            tick_s=0.5,
            session_expiry_s=cfg.session_expiry_s,
            reconnect_min_s=0.5,
            reconnect_max_s=10.0,
        )

    def start(self) -> None:
        self.link.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.link.stop(timeout)

    def all_counters(self) -> dict[str, int]:
        return {**self.counters, **self.link.counters}

    def node_states(self) -> dict[str, NodeState]:
        with self._nodes_lock:
            return {node: replace(s, refused=dict(s.refused)) for node, s in self._nodes.items()}

    def heard_nodes(self) -> list[str]:
        """The nodes heard with a valid frame or birth/will (not only rejected ones), still remembered."""
        with self._nodes_lock:
            return [node for node, s in self._nodes.items() if s.last_good_ms is not None or s.presence != "unknown"]

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic.endswith("/state"):
            self.handle_state(topic, payload)
        else:
            self.handle_uplink(topic, payload)

    # -- node frames -----------------------------------------------------------------------

    def handle_uplink(self, topic: str, payload: bytes) -> str:
        """Check and capture one node frame; returns accepted, duplicate, conflict or a rejection reason."""
        try:
            node, _leaf = topics.parse_node_topic(topic)
        except ValueError:
            return self._reject("bad_topic", "?", topic)
        try:
            _mac, body = unframe(payload, MAX_NODE_FRAME_BYTES)
            tel = models.parse(body, expect="tel")
        except ContractError as exc:
            return self._reject(exc.reason, node, str(exc))
        if not isinstance(tel, models.Telemetry) or tel.dev != node:
            return self._reject("topic_mismatch", node, f"the body's dev is not the topic's node {node!r}")
        window = self._window(node)
        key = (tel.ep, tel.seq)
        body_digest = digest(body)
        verdict = classify(window.get(key), body_digest)
        if verdict == DUPLICATE or (verdict == CONFLICT and body_digest in self._conflicts):
            self.counters["duplicates"] += 1
            return DUPLICATE
        self._outbox.capture_frame(payload, "conflict" if verdict == CONFLICT else "node")
        if verdict == CONFLICT:
            self._conflicts[body_digest] = None
            if len(self._conflicts) > MAX_CONFLICTS_REMEMBERED:
                self._conflicts.popitem(last=False)
            self.counters["conflicts"] += 1
            if self._log_limit.allow(("conflict", node)) is not None:
                log.warning("node %s: (ep %d, seq %d) arrived again with other bytes; forwarded as a conflict",
                            node, tel.ep, tel.seq)
            return CONFLICT
        window[key] = body_digest
        while len(window) > self.cfg.replay_window:
            window.popitem(last=False)
        with self._nodes_lock:
            state = self._state(node)
            state.last_good_ms = int(self._time() * 1000)
            state.note_frame(tel)
        self.counters[ACCEPTED] += 1
        return ACCEPTED

    def _window(self, node: str) -> OrderedDict[tuple[int, int], str]:
        window = self._windows.get(node)
        if window is None:
            window = self._windows[node] = OrderedDict()
            if len(self._windows) > MAX_TRACKED_NODES:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(node)
        return window

    def _state(self, node: str) -> NodeState:
        """The node's state record (call with ``_nodes_lock`` held)."""
        state = self._nodes.get(node)
        if state is None:
            state = self._nodes[node] = NodeState()
            if len(self._nodes) > MAX_TRACKED_NODES:
                self._nodes.popitem(last=False)
        else:
            self._nodes.move_to_end(node)
        return state

    def _reject(self, reason: str, node: str, detail: str) -> str:
        self.counters[f"rejected.{reason}"] += 1
        if node != "?":
            with self._nodes_lock:
                self._state(node).rejected += 1
        held = self._log_limit.allow((reason, node))
        if held is not None:
            more = f" ({held} more since the last report)" if held else ""
            log.warning("node %s: rejected a message (%s): %s%s", node, reason, detail[:200], more)
        return reason

    # -- node presence ---------------------------------------------------------------------

    def handle_state(self, topic: str, payload: bytes) -> str:
        """Record a node's birth or will (a frame signed by the node; an empty payload clears it)."""
        try:
            node, _leaf = topics.parse_node_topic(topic)
        except ValueError:
            return self._reject("bad_topic", "?", topic)
        if not payload:
            with self._nodes_lock:
                self._nodes.pop(node, None)
            self.counters["states_cleared"] += 1
            return "cleared"
        try:
            _mac, body = unframe(payload, MAX_NODE_FRAME_BYTES)
            presence = models.parse(body)
        except ContractError as exc:
            return self._reject(f"state_{exc.reason}", node, str(exc))
        if not isinstance(presence, models.Presence) or presence.dev != node:
            return self._reject("state_mismatch", node, "not a birth/will of this node")
        with self._nodes_lock:
            state = self._state(node)
            state.presence, state.presence_at_ms = presence.k, presence.at
            if presence.k == "birth" and presence.sw:
                state.fw, state.fw_from_birth = presence.sw, True
            if presence.k == "birth" and presence.build is not None:
                state.build = presence.build
        self.counters["states"] += 1
        return presence.k
