"""Gateways' heartbeats, births and wills in, fleet state out: verified like the ingest verifies uplinks.

Each message on ``ft/v1/<tenant>/gw/<gw>/health`` or ``.../state`` must be a frame signed with one of
the gateway's key epochs that are not revoked (heartbeats and presence bodies carry no epoch, so each
usable epoch is tried, newest first), its body must parse as the contract's Health or Presence, name
the topic's gateway, and the gateway must be registered in the topic's tenant.  Anything else is
counted by reason and dropped: health is not data, there is nothing to replay.

Besides ``ft.fleet_state`` (cloud.fleet.presence), a heartbeat feeds the node downlink's reported
state: a node's firmware build (the ``build`` its birth named and the gateway copied, else read from its
``fw`` for firmware older than that, see :func:`firmware_build`) goes to
:func:`cloud.store.downlink.record_node_report`, which completes its OTA job, and a new ``ota_refused``
count fails the node's unfinished OTA job with the refusal's reason.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg

from cloud.fleet import presence
from cloud.store import downlink
from cloud.store.registry import KeyCache
from contract import models, topics
from contract.telemetry import MAX_BATCH_FRAME_BYTES, ContractError, verify

log = logging.getLogger(__name__)

#: a node's build in its firmware string: "fw/17", "fw/0.3.0+17", "fw/0.3.0-b17"
_BUILD = re.compile(r"^(?:fw/)?(?:(\d+)|.*?(?:\+|-b)(\d+))$")
_OTA_REFUSED = "ota_refused."


def firmware_build(fw: str | None) -> int | None:
    """The build number a node's firmware string carries, or None (a plain "fw/0.2.0" names no build).

    Firmware whose birth names its ``build`` needs none of this; for older firmware, whose heartbeats carry
    its ``fw`` only, a bundle whose version is its build ("fw/17") or ends with it ("fw/0.3.0+17") is what
    lets OTA jobs complete from heartbeats.
    """
    if not fw:
        return None
    match = _BUILD.match(fw)
    if match is None:
        return None
    return int(match.group(1) or match.group(2))


class Refused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class FleetConsumer:
    """Handles one message at a time on its own connection (as ft_app, platform scope for its session)."""

    def __init__(self, conn: psycopg.Connection, kek: bytes, *, key_ttl_s: float = 30.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.conn = conn
        self._keys = KeyCache(kek, ttl_s=key_ttl_s, miss_ttl_s=5.0)
        self._clock = clock
        self.counts: Counter[str] = Counter()

    def handle(self, topic: str, payload: bytes) -> str:
        """Verify and store one message; returns "stored" or the refusal reason."""
        try:
            outcome = self._handle(topic, payload)
        except Refused as exc:
            outcome = exc.reason
            log.debug("fleet message on %s refused: %s", topic, exc)
        self.counts[outcome] += 1
        return outcome

    def _handle(self, topic: str, payload: bytes) -> str:
        try:
            tenant, gw, leaf = topics.parse_gateway_topic(topic)
        except ValueError as exc:
            raise Refused("bad_topic", str(exc)) from None
        if leaf not in ("health", "state"):
            raise Refused("bad_topic", f"not a health or state topic: {topic!r}")
        body = self._verified_body(tenant, gw, payload)
        try:
            message = models.parse(body)
        except ContractError as exc:
            raise Refused(exc.reason, exc.detail) from None
        expected = models.Health if leaf == "health" else models.Presence
        if not isinstance(message, expected):
            raise Refused("wrong_kind", f"{leaf} topic carries k={getattr(message, 'k', '?')!r}")
        if message.gw != gw:
            raise Refused("gateway_mismatch", f"the topic names gateway {gw!r}, the body {message.gw!r}")
        now = self._clock()
        with self.conn.transaction():
            if isinstance(message, models.Presence):
                presence.record_presence(self.conn, tenant, gw, message, now)
                return "stored"
            known = self._devices(tenant, sorted(message.devices))
            previous = self._refusals(known)
            presence.record_heartbeat(self.conn, tenant, gw, message, known, now)
            self._node_reports(tenant, message, known, previous)
        return "stored"

    def _verified_body(self, tenant: str, gw: str, payload: bytes) -> bytes:
        with self.conn.transaction():
            row = self.conn.execute("SELECT tenant_id FROM ft.gateways WHERE id = %s", (gw,)).fetchone()
            if row is None:
                raise Refused("unknown_gateway", f"gateway {gw!r} is not registered")
            if row[0] != tenant:
                raise Refused("tenant_mismatch", f"gateway {gw!r} is not registered in tenant {tenant!r}")
            epochs = [r[0] for r in self.conn.execute(
                "SELECT epoch FROM ft.keys WHERE owner_kind = 'gateway' AND owner_id = %s AND revoked_at IS NULL"
                " ORDER BY epoch DESC", (gw,))]
            for epoch in epochs:
                key = self._keys.get(self.conn, "gateway", gw, epoch, tenant=tenant)
                if key is None:
                    continue
                try:
                    return verify(payload, key, MAX_BATCH_FRAME_BYTES)
                except ContractError as exc:
                    if exc.reason != "bad_signature":
                        raise Refused(exc.reason, exc.detail) from None
        raise Refused("bad_signature", f"gateway {gw!r}: no usable key epoch verifies it")

    def _devices(self, tenant: str, named: list[str]) -> list[str]:
        if not named:
            return []
        rows = self.conn.execute("SELECT id FROM ft.devices WHERE tenant_id = %s AND id = ANY(%s)",
                                 (tenant, named)).fetchall()
        return [r[0] for r in rows]

    def _refusals(self, devices: list[str]) -> dict[str, dict[str, int]]:
        if not devices:
            return {}
        rows = self.conn.execute("SELECT subject_id, refused FROM ft.fleet_state WHERE subject_kind = 'device'"
                                 " AND subject_id = ANY(%s)", (devices,)).fetchall()
        return {r[0]: r[1] for r in rows}

    def _node_reports(self, tenant: str, health: models.Health, known: list[str],
                      previous: dict[str, dict[str, int]]) -> None:
        for dev in known:
            info = health.devices[dev]
            build = info.build if info.build is not None else firmware_build(info.fw)
            if build is not None:
                downlink.record_node_report(self.conn, tenant, dev, firmware_version=build)
            before = previous.get(dev, {})
            for kind, count in info.refused.items():
                if kind.startswith(_OTA_REFUSED) and count > before.get(kind, 0):
                    self._fail_unfinished_ota(tenant, dev, kind.removeprefix(_OTA_REFUSED))

    def _fail_unfinished_ota(self, tenant: str, dev: str, reason: str) -> None:
        row = self.conn.execute(
            "SELECT version FROM ft.ota_jobs WHERE tenant_id = %s AND device_id = %s"
            " AND status IN ('pending', 'published') ORDER BY id DESC LIMIT 1", (tenant, dev)).fetchone()
        if row is not None:
            downlink.fail_ota(self.conn, tenant, dev, row[0], f"refused by the node: {reason}")
