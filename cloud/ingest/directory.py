"""What the ingest must know about senders, cached: gateways' tenants, devices, keys, spec rules, metric ids.

Every message names a gateway, devices and key epochs; asking the database each time would cost
more than storing the readings.  Entries found are kept ``ttl_s``, misses ``miss_ttl_s`` (so a
device registered a moment ago is seen soon and a flood of unknown ids costs one query per id and
period).  A revoked key therefore stops verifying within ``ttl_s``.  Metric ids never change once
given, so they are kept for the life of the process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Literal

import psycopg

from cloud.ingest.validate import Rules, rules_for
from cloud.store import writes
from cloud.store.registry import KeyCache
from device_specs.registry import SpecError, get_spec

log = logging.getLogger(__name__)


class Directory:
    """Cached registry lookups over one autocommit connection (used by one thread)."""

    def __init__(self, conn: psycopg.Connection, kek: bytes, *, ttl_s: float = 30.0, miss_ttl_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.conn = conn
        self._ttl, self._miss_ttl = ttl_s, miss_ttl_s
        self._clock = clock
        self._keys = KeyCache(kek, ttl_s=ttl_s, miss_ttl_s=miss_ttl_s, clock=clock)
        self._gateways: dict[str, tuple[float, str | None]] = {}
        self._devices: dict[str, tuple[float, writes.DeviceInfo | None]] = {}
        self._rules: dict[str, Rules | None] = {}
        self._metrics: dict[tuple[str, str], int] = {}
        self.queries = 0

    def gateway_tenant(self, gateway_id: str) -> str | None:
        now = self._clock()
        hit = self._gateways.get(gateway_id)
        if hit is None or hit[0] <= now:
            self.queries += 1
            tenant = writes.gateway_tenants(self.conn, [gateway_id]).get(gateway_id)
            hit = (now + (self._ttl if tenant else self._miss_ttl), tenant)
            self._gateways[gateway_id] = hit
        return hit[1]

    def devices(self, device_ids: Iterable[str]) -> dict[str, writes.DeviceInfo]:
        """The registered devices among ``device_ids`` (one query for all those not cached)."""
        now = self._clock()
        wanted = set(device_ids)
        stale = [d for d in wanted if (hit := self._devices.get(d)) is None or hit[0] <= now]
        if stale:
            self.queries += 1
            found = writes.devices(self.conn, stale)
            for d in stale:
                info = found.get(d)
                self._devices[d] = (now + (self._ttl if info else self._miss_ttl), info)
        out = {}
        for d in wanted:
            info = self._devices[d][1]
            if info is not None:
                out[d] = info
        return out

    def key(self, owner_kind: Literal["gateway", "device"], owner_id: str, epoch: int, tenant: str) -> bytes | None:
        return self._keys.get(self.conn, owner_kind, owner_id, epoch, tenant=tenant)

    def missing_key_reason(self, owner_kind: Literal["gateway", "device"], owner_id: str, epoch: int) -> str:
        """``revoked_key`` or ``unknown_key``: asked only when a message fails, so not cached."""
        self.queries += 1
        return f"{writes.key_state(self.conn, owner_kind, owner_id, epoch)}_key"

    def rules(self, spec_key: str | None) -> Rules | None:
        """Unit and range per metric from the device's spec; None without a spec this installation knows."""
        if spec_key is None:
            return None
        if spec_key not in self._rules:
            try:
                self._rules[spec_key] = rules_for(get_spec(spec_key))
            except SpecError as exc:
                log.warning("device spec %r is not known here: its readings are stored unchecked (%s)", spec_key, exc)
                self._rules[spec_key] = None
        return self._rules[spec_key]

    @property
    def metric_ids(self) -> dict[tuple[str, str], int]:
        """Known (metric, unit) -> id; :meth:`metric_id` registers a pair that is not in it."""
        return self._metrics

    def metric_id(self, name: str, unit: str) -> int:
        if (name, unit) not in self._metrics:
            self.queries += 1
            self._metrics.update(writes.metric_ids(self.conn, [(name, unit)]))
        return self._metrics[(name, unit)]
