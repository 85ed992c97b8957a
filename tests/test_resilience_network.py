"""Resilience to a long network cut between a gateway and the cloud, on an accelerated clock.

The link is a TCP proxy the test cuts (open connections dropped, new ones refused) between the
agent's uplink and the cloud broker.  The agent's outbox and uplink run on a clock 2000 times
faster than the wall clock (their ``time_fn``/``monotonic`` seams, with the uplink's timeouts
scaled to match), and the sensors are stamped with it: eight seconds of cut are four and a half
hours of backlog, one reading a minute per device.  When the link returns, the backlog must drain
oldest first (per device, in sequence order), fresh readings must reach the cloud while it
drains rather than after it, and the shared account must hold: every reading stored exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from support.accounting import account
from support.ingest import Site, register_site, running_worker, wait_until
from support.tcp_proxy import TcpProxy
from test_resilience_broker import SteadyCapture

from edge_agent.config import BrokerConfig, GatewayIdentity, UplinkConfig
from edge_agent.outbox import BatchBuilder, Outbox, SealedBatch
from edge_agent.uplink import Uplink

FACTOR = 2000.0  # agent seconds per wall-clock second
HOUR = 3600.0


class AcceleratedClock:
    """Wall-clock and monotonic time running ``factor`` times faster, from ``start`` (epoch seconds)."""

    def __init__(self, start: float, factor: float) -> None:
        self.start, self.factor = start, factor
        self._t0 = time.monotonic()

    def monotonic(self) -> float:
        return (time.monotonic() - self._t0) * self.factor

    def time(self) -> float:
        return self.start + self.monotonic()


class RecordingOutbox(Outbox):
    """The real outbox, noting in which order and direction it sealed batches (what the uplink chose)."""

    def __init__(self, path: Path, max_bytes: int, *, time_fn: Callable[[], float]) -> None:
        super().__init__(path, max_bytes, time_fn=time_fn)
        self.sealed: list[tuple[int, bool]] = []  # (batch seq, newest first), in sealing order

    def seal_batch(self, ep: int, max_items: int, *, newest_first: bool, build: BatchBuilder) -> SealedBatch | None:
        sealed = super().seal_batch(ep, max_items, newest_first=newest_first, build=build)
        if sealed is not None:
            self.sealed.append((sealed.seq, newest_first))
        return sealed


def accelerated_uplink(site: Site, box: Outbox, proxy: TcpProxy, clock: AcceleratedClock) -> Uplink:
    """The agent's uplink through ``proxy``, its timings those of a real gateway's on the fast clock."""
    gateway = GatewayIdentity(id=site.gw, tenant=site.tenant, key_hex=site.gw_key.hex())
    cfg = UplinkConfig(broker=BrokerConfig(host=proxy.host, port=proxy.port), batch_max_items=10, max_in_flight=20,
                       batch_max_wait_s=0.05 * FACTOR, receipt_timeout_s=1.5 * FACTOR, session_expiry_s=60,
                       reconnect_min_s=0.1, reconnect_max_s=0.5)  # reconnecting runs on the wall clock
    return Uplink(gateway, site.gw_key, cfg, box, sw="edge/test", time_fn=clock.time, monotonic=clock.monotonic)


def stored_messages(url: str, devices: list[str]) -> list[tuple[str, int, int, float]]:
    """(device, seq, gateway batch seq, received_at epoch seconds) of every stored message of ``devices``."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT device_id, seq, batch_id, extract(epoch FROM received_at) FROM ft.messages "
                            "WHERE device_id = ANY(%s)", (devices,)).fetchall()
    return [(dev, seq, int(bid.rsplit(":", 1)[1]), float(at)) for dev, seq, bid, at in rows]


def test_a_long_cut_builds_hours_of_backlog_that_drains_oldest_first_without_starving_fresh_data(
        shared_broker, fresh_db, tmp_path):
    site = register_site(fresh_db)
    clock = AcceleratedClock(time.time() - 2 * 24 * HOUR, FACTOR)  # two days ago: every stamp stays in the past
    box = RecordingOutbox(tmp_path / "outbox.db", 64 << 20, time_fn=clock.time)
    load = SteadyCapture(box, site.bus, rate=100, stamp=clock.time)  # two devices, each every 40 agent seconds
    with TcpProxy(shared_broker) as proxy, running_worker(site.url, f"mqtt://{shared_broker[0]}:{shared_broker[1]}"):
        up = accelerated_uplink(site, box, proxy, clock)
        up.start()
        load.start()
        try:
            assert wait_until(lambda: box.stats().confirmed >= 100, 20), (box.stats(), up.all_counters())
            proxy.cut()
            at_cut = {dev: len(seqs) for dev, seqs in load.produced.items()}
            confirmed, cut_at = box.stats().confirmed, clock.time()
            assert wait_until(lambda: not up.connected, 5)
            time.sleep(8.0)  # four and a half hours on the agent's clock
            stats = box.stats()
            assert stats.confirmed == confirmed and not up.connected and up.all_counters()["connect_failures"] > 0
            assert stats.oldest_ms is not None and clock.time() * 1000 - stats.oldest_ms >= 4 * HOUR * 1000, stats
            assert clock.time() - cut_at >= 4 * HOUR
            proxy.restore()
            at_restore = {dev: len(seqs) for dev, seqs in load.produced.items()}
            backlog = {dev: range(at_cut[dev], at_restore[dev]) for dev in site.bus}
            assert sum(map(len, backlog.values())) >= 600  # hours of one-a-minute readings
            assert wait_until(lambda: box.stats().confirmed >= sum(at_restore.values()), 40), box.stats()
            produced = load.stop()
            assert wait_until(lambda: box.stats().depth == 0, 30), (box.stats(), up.all_counters())
        finally:
            load.stop()
            up.stop()
            box.close()
    assert proxy.accepted >= 2  # connected before the cut and again after it
    result = account(site.url, produced, readings_per_message=2)
    result.check()
    assert result.stored == result.produced == load.count

    stored = stored_messages(site.url, site.bus)
    # Oldest first: the batches the uplink sealed oldest-first carry each device's backlog in sequence order.
    oldest_first = [seq for seq, newest in box.sealed if not newest]
    position = {batch: i for i, batch in enumerate(oldest_first)}
    for dev in site.bus:
        front = sorted((position[batch], seq) for d, seq, batch, _ in stored if d == dev and batch in position)
        seqs = [seq for _, seq in front]
        assert seqs == sorted(seqs), f"{dev}: oldest-first batches out of order"
        assert set(backlog[dev]) & set(seqs), f"{dev}: none of the backlog went oldest first"
    # Not starved: fresh readings (captured after the link came back) were stored while the backlog drained.
    backlog_at = sorted(at for d, seq, _, at in stored if seq in backlog[d])
    first_fresh = min(at for d, seq, _, at in stored if seq >= at_restore[d])
    still_draining = sum(1 for at in backlog_at if at > first_fresh)
    assert still_draining >= len(backlog_at) // 4, (still_draining, len(backlog_at))
