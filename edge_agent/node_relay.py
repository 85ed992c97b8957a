"""The cloud's downlink to the sensor nodes, relayed by their gateway: config, OTA manifests, OTA files.

The cloud publishes, retained, on the cloud broker (``contract.topics.gateway_downlink_filter``):
each node's config frame and OTA manifest frame, both signed with the *node's* key, and the OTA
files themselves, named by their SHA-256.  The gateway cannot check those signatures (node keys
stay in the cloud; the node checks them, and refuses and reports what is wrong), so it checks
what it can before relaying:

* the topic is this gateway's, and the node is one of its nodes: named in ``nodes.ids`` or heard
  by the intake.  A frame for a node not known yet is kept and relayed once the node is heard;
* the frame is a contract frame of the right kind for that node (``config`` or ``ota``, target
  the node, within the node frame size);
* a file is kept only if its bytes hash to its name (``edge_agent.ota_cache``).

What passes is republished retained on the LOCAL broker at ``ft/v1/node/<node>/config`` or
``.../ota``, byte for byte.  An OTA manifest is withheld until every file it names is cached, so a
node never starts a download the gateway cannot serve.  An empty retained payload from the cloud
clears the node's topic.  Restarts lose nothing: the cloud's retained messages come again on
every subscribe, the files are on disk, and the relay republishes on every local reconnect.

Threads: :meth:`NodeRelay.handle_downlink` runs on the uplink's thread (it owns the cloud
connection); publishing and retrying run on the relay's own local connection's thread; one lock
guards the relay's state between them.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Collection
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from contract import models, topics
from contract.telemetry import MAX_NODE_FRAME_BYTES, ContractError, unframe
from edge_agent.config import BrokerConfig
from edge_agent.logging_setup import LogLimiter
from edge_agent.mqtt import MqttLink
from edge_agent.ota_cache import BAD_HASH, NO_ROOM, STORED, OtaCache

log = logging.getLogger(__name__)

#: nodes whose downlink the relay keeps at once: bounds memory whatever arrives
MAX_NODES = 1024
CONFIG, OTA = "config", "ota"

RELAYED, HELD, CLEARED, UNCHANGED = "relayed", "held", "cleared", "unchanged"


class OtaFileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    path: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    size: Annotated[int, Field(ge=0)]


class OtaManifest(BaseModel):
    """The form of a node's OTA manifest (``firmware/ota.py``); its MAC and paths are the node's to check."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    v: Literal[1]
    k: Literal["ota"]
    target: models.Ident
    version: Annotated[int, Field(ge=1)]
    files: Annotated[list[OtaFileEntry], Field(min_length=1, max_length=32)]


class DownlinkRefused(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def check_node_frame(node: str, leaf: str, frame: bytes) -> dict[str, int]:
    """The files (SHA-256 -> size) a valid frame for ``node`` needs (none for a config); else DownlinkRefused."""
    try:
        _mac, body = unframe(frame, MAX_NODE_FRAME_BYTES)
    except ContractError as exc:
        raise DownlinkRefused(exc.reason, str(exc)) from None
    if leaf == CONFIG:
        try:
            cfg = models.parse(body, expect="config")
        except ContractError as exc:
            raise DownlinkRefused(exc.reason, str(exc)) from None
        if not isinstance(cfg, models.Config) or cfg.target != node:
            raise DownlinkRefused("wrong_target", f"config for {getattr(cfg, 'target', None)!r}")
        return {}
    try:
        manifest = OtaManifest.model_validate_json(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise DownlinkRefused("bad_field", f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    if manifest.target != node:
        raise DownlinkRefused("wrong_target", f"OTA manifest for {manifest.target!r}")
    sizes: dict[str, int] = {}
    for entry in manifest.files:
        if sizes.setdefault(entry.sha256, entry.size) != entry.size:
            raise DownlinkRefused("bad_field", f"{entry.sha256} named with two sizes")
    return sizes


class NodeRelay:
    """Takes downlink messages from the uplink's cloud connection; publishes them on the local broker."""

    def __init__(
        self,
        tenant: str,
        gw: str,
        cache: OtaCache,
        local_broker: BrokerConfig,
        client_id: str,
        *,
        known_ids: Collection[str] = (),
        heard_nodes: Callable[[], Collection[str]] = lambda: (),
        tick_s: float = 1.0,
    ) -> None:
        self.tenant, self.gw = tenant, gw
        self.filters = topics.gateway_downlink_filter(tenant, gw)
        self.cache = cache
        self._known_ids = frozenset(known_ids)
        self._heard_nodes = heard_nodes
        self._lock = threading.Lock()
        self._wanted: dict[tuple[str, str], bytes] = {}  # what the cloud says now (b"": cleared)
        self._published: dict[tuple[str, str], bytes] = {}  # what this run put on the local broker
        self._needs: dict[str, dict[str, int]] = {}  # node -> files (sha -> size) of its current manifest
        self._log_limit = LogLimiter(300.0)
        self.counters: Counter[str] = Counter()
        self.link = MqttLink(
            local_broker,
            client_id,
            on_message=lambda _topic, _payload: None,  # publishes only
            on_connected=self._on_local_connected,
            on_tick=self.reconcile,
            tick_s=tick_s,
            session_expiry_s=3600,
            reconnect_min_s=0.5,
            reconnect_max_s=10.0,
        )

    def start(self) -> None:
        self.link.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.link.stop(timeout)

    def all_counters(self) -> dict[str, int]:
        with self._lock:
            waiting = sum(1 for (node, leaf), payload in self._wanted.items()
                          if leaf == OTA and payload and self._missing(node))
        return {**self.counters, **self.link.counters, "manifests_waiting": waiting,
                "cache_files": len(self.cache.names()), "cache_bytes": self.cache.total_bytes}

    def referenced_files(self) -> set[str]:
        with self._lock:
            return {sha for files in self._needs.values() for sha in files}

    # -- from the cloud (the uplink's thread) ----------------------------------------------

    def handle_downlink(self, topic: str, payload: bytes) -> str:
        """Take one downlink message; returns relayed, held, cleared, unchanged, stored… or a refusal reason."""
        try:
            tenant, gw, kind, name, leaf = topics.parse_gateway_downlink(topic)
        except ValueError:
            return self._refuse("bad_topic", topic, topic)
        if (tenant, gw) != (self.tenant, self.gw):
            return self._refuse("wrong_gateway", topic, topic)
        if kind == "file":
            return self._take_file(name, payload)
        return self._take_node_frame(name, leaf, payload)

    def _take_node_frame(self, node: str, leaf: str, payload: bytes) -> str:
        key = (node, leaf)
        if payload:
            try:
                files = check_node_frame(node, leaf, payload)
            except DownlinkRefused as exc:
                return self._refuse(f"{leaf}.{exc.reason}", node, str(exc))
        with self._lock:
            if self._wanted.get(key) == payload:
                return UNCHANGED
            nodes = {n for n, _ in self._wanted}
            if payload and node not in nodes and len(nodes) >= MAX_NODES:
                return self._refuse("too_many_nodes", node, f"more than {MAX_NODES} nodes with downlinks")
            self._wanted[key] = payload
            if leaf == OTA:
                if payload:
                    self._needs[node] = files
                else:
                    self._needs.pop(node, None)
            self.counters[f"{leaf}_received" if payload else f"{leaf}_clears_received"] += 1
            self._reconcile_locked()
            if not payload:
                return CLEARED if key not in self._wanted else HELD
            if self._published.get(key) == payload:
                return RELAYED
            missing = self._missing(node) if leaf == OTA else []
        if missing:
            log.info("node %s: OTA manifest withheld until %d file(s) are cached: %s", node, len(missing),
                     ", ".join(sha[:12] for sha in missing))
        return HELD

    def _take_file(self, sha: str, payload: bytes) -> str:
        if not payload:
            return UNCHANGED  # the cloud cleared a retained file; eviction takes care of the copy here
        try:
            outcome = self.cache.put(sha, payload, keep=self.referenced_files())
        except OSError as exc:
            return self._refuse("file.write_failed", sha, str(exc))
        if outcome == BAD_HASH:
            return self._refuse("file.bad_hash", sha, f"{len(payload)} bytes on the topic of {sha} hash otherwise")
        if outcome == NO_ROOM:
            return self._refuse("file.no_room", sha, f"{len(payload)} bytes do not fit in the OTA cache "
                                f"({self.cache.max_bytes} bytes) beside the files current manifests need")
        if outcome == STORED:
            self.counters["files_cached"] += 1
            with self._lock:
                self._reconcile_locked()
        return outcome

    def _refuse(self, reason: str, about: str, detail: str) -> str:
        self.counters[f"refused.{reason}"] += 1
        held = self._log_limit.allow((reason, about))
        if held is not None:
            more = f" ({held} more since the last report)" if held else ""
            log.warning("downlink for %s refused (%s): %s%s", about, reason, detail[:200], more)
        return reason

    # -- to the nodes (the local connection's thread, or the caller's) ---------------------

    def _on_local_connected(self) -> None:
        """The local broker may have lost its retained messages (a restart without persistence): send all again."""
        with self._lock:
            self._published.clear()
            self._reconcile_locked()

    def reconcile(self) -> None:
        """Publish whatever the cloud wants that is ready and not yet on the local broker."""
        with self._lock:
            self._reconcile_locked()

    def _missing(self, node: str) -> list[str]:
        return [sha for sha, size in self._needs.get(node, {}).items() if self.cache.size(sha) != size]

    def _reconcile_locked(self) -> None:
        if not self.link.connected:
            return
        known: set[str] | None = None
        for key, payload in list(self._wanted.items()):
            if self._published.get(key) == payload:
                continue
            node, leaf = key
            if payload:
                if known is None:
                    known = set(self._known_ids) | set(self._heard_nodes())
                if node not in known or (leaf == OTA and self._missing(node)):
                    continue
            if self.link.publish(topics.node(node, leaf), payload, qos=1, retain=True) is None:
                return  # offline again: the next connect or tick retries
            if payload:
                self._published[key] = payload
                self.counters[f"{leaf}_relayed"] += 1
            else:
                del self._wanted[key]
                self._published.pop(key, None)
                self.counters[f"{leaf}_cleared"] += 1
