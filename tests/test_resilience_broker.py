"""Resilience to the cloud broker going away: Mosquitto restarted while a gateway sends at a steady rate.

The broker is a private Mosquitto with the project's own settings (``deploy/mosquitto/gateway.conf``
with a cloud-sized packet limit) on a spare port, never the machine's shared one.  The gateway side
is the edge agent's outbox, filled by a capture thread at a steady rate, and its own uplink; the
cloud side a real ingest worker.  The scenario ends with the shared account: every reading captured
is stored exactly once.

:class:`SteadyCapture` is the steady producer the database scenarios reuse.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from support.accounting import account
from support.ingest import Site, make_uplink, register_site, running_worker, soil_body, wait_until
from test_ingest_faults import CLOUD_BROKER

from edge_agent.outbox import Outbox
from fieldtrust.services.mosquitto import PrivateMosquitto


class SteadyCapture:
    """A gateway's sensors: soil bodies captured into ``box`` at ``rate`` per second, round-robin over devices.

    ``produced`` holds device -> the sequence numbers the outbox gave (what the account expects).
    """

    def __init__(self, box: Outbox, devices: list[str], rate: float,
                 stamp: Callable[[], float] | None = None) -> None:
        """``stamp``: the clock the readings are stamped with (default: one second apart per seq, an hour ago)."""
        self.box = box
        self.stamp = stamp
        self.devices = devices
        self.interval = 1.0 / rate
        self.produced: dict[str, list[int]] = {dev: [] for dev in devices}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-capture", daemon=True)
        self.error: BaseException | None = None

    @property
    def count(self) -> int:
        return sum(len(seqs) for seqs in self.produced.values())

    def _run(self) -> None:
        next_at = time.monotonic()
        i = 0
        try:
            while not self._stop.is_set():
                dev = self.devices[i % len(self.devices)]
                bt_ms = None if self.stamp is None else int(self.stamp() * 1000)
                seq = self.box.capture_attested(dev, 1, lambda seq, dev=dev, bt=bt_ms: soil_body(dev, seq, bt))
                self.produced[dev].append(seq)
                i += 1
                next_at += self.interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # surfaced by stop(): a capture must never fail here
            self.error = exc

    def start(self) -> SteadyCapture:
        self._thread.start()
        return self

    def stop(self) -> dict[str, list[int]]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        assert self.error is None, f"capture failed: {self.error!r}"
        return self.produced


def cloud_broker(workdir: Path) -> PrivateMosquitto:
    return PrivateMosquitto(workdir, overrides=CLOUD_BROKER)


def test_mosquitto_restarted_during_steady_load_loses_nothing_and_stores_nothing_twice(fresh_db, tmp_path):
    site: Site = register_site(fresh_db)
    box = Outbox(tmp_path / "outbox.db", 64 << 20)
    with cloud_broker(tmp_path / "broker") as broker:
        mqtt_url = f"mqtt://{broker.host}:{broker.port}"
        up = make_uplink(site, box, broker.host, broker.port, batch_max_items=10, max_in_flight=20,
                         receipt_timeout_s=1.5)
        load = SteadyCapture(box, site.bus, rate=100)
        with running_worker(site.url, mqtt_url, f"ingest-{site.gw}", ingest_group=f"ingest-{uuid.uuid4().hex[:8]}"):
            up.start()
            load.start()
            try:
                assert wait_until(lambda: box.stats().confirmed >= 100, 20), (box.stats(), up.all_counters())
                for _ in range(2):  # twice: the second restart finds sessions the first one restored
                    broker.stop()  # SIGTERM: Mosquitto saves its sessions; both clients lose their connection
                    time.sleep(1.0)  # down for a while: the capture goes on into the outbox
                    assert wait_until(lambda: not up.connected, 5)
                    broker.start()
                    confirmed = box.stats().confirmed
                    assert wait_until(lambda c=confirmed: box.stats().confirmed > c + 50, 20), up.all_counters()
                produced = load.stop()
                assert wait_until(lambda: box.stats().depth == 0, 30), (box.stats(), up.all_counters())
            finally:
                load.stop()
                up.stop()
                box.close()
    assert up.all_counters()["connects"] >= 3  # it really lost the broker twice and came back each time
    result = account(site.url, produced, readings_per_message=2)
    result.check()
    assert result.stored == result.produced == load.count
