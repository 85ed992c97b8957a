"""Resilience to a sensor bus full of garbage: one device on an RS-485 line answering noise and broken CRCs.

A real edge agent polls three soil probes on one simulated RTU line (a pty, byte timing as on the
wire); the middle probe answers line noise or a corrupted CRC most of the time
(``hardware.faults``).  The agent's uplink sends to a real ingest worker and the database.  What
must hold: the errors are counted (CRC and frame errors at the bus master), the other probes on the
line keep their schedule, no value the probes never reported is stored (the noisy probe's failed
polls arrive as readings flagged with a communication error and no value), and the shared account
holds: every sample the agent captured is stored exactly once.
"""

from __future__ import annotations

import sqlite3
import time

import psycopg
import yaml
from support.accounting import account
from support.ingest import BUS_SPEC, register_site, running_worker, scalar, wait_until

from device_specs.registry import get_spec
from edge_agent.agent import Agent
from edge_agent.config import parse_config
from hardware.rtu_bus import RtuBusSimulator
from hardware.sim_device import SimulatedDevice

POLL_S = 0.3
MOISTURE = (11.5, 22.5, 33.5)  # what each probe reads; the middle one is the noisy one


def produced_by(outbox_path: str, devices: list[str]) -> dict[str, range]:
    """Device -> the sequence numbers the agent's outbox gave out (its persisted counters)."""
    with sqlite3.connect(outbox_path) as db:
        nexts = dict(db.execute("SELECT dev, next FROM seq_counter WHERE ep = 1").fetchall())
    return {dev: range(nexts.get(dev, 0)) for dev in devices}


def stored_values(url: str, dev: str, metric: str) -> list[float | None]:
    with psycopg.connect(url) as conn:
        return [v for (v,) in conn.execute("SELECT r.value FROM ft.readings r JOIN ft.metrics m ON m.id = r.metric_id "
                                           "WHERE r.device_id = %s AND m.name = %s", (dev, metric))]


def test_a_bus_full_of_garbage_is_counted_leaves_the_other_devices_alone_and_stores_nothing_bogus(
        shared_broker, fresh_db, tmp_path):
    site = register_site(fresh_db, bus_devices=3)
    probes = [SimulatedDevice(get_spec(BUS_SPEC), unit_id=unit, seed=unit) for unit in (1, 2, 3)]
    for probe, moisture in zip(probes, MOISTURE, strict=True):
        probe.pin("soil_moisture", moisture)
    noisy = probes[1]
    noisy.faults.garbage_rate = 0.3  # with the CRC errors: one answer in two spoilt
    noisy.faults.crc_error_rate = 0.3
    with RtuBusSimulator(probes, baud=9600, parity="E") as sim:
        bus = {"id": "rs485", "kind": "rtu", "port": sim.port, "baud": 9600, "parity": "E", "timeout_ms": 200,
               "retries": 1, "devices": [{"id": dev, "spec": BUS_SPEC, "unit": unit, "poll_interval_s": POLL_S}
                                         for dev, unit in zip(site.bus, (1, 2, 3), strict=True)]}
        settings = {
            "gateway": {"id": site.gw, "tenant": site.tenant, "key_hex": site.gw_key.hex(),
                        "data_dir": str(tmp_path)},
            "intake": {"enabled": False},
            "uplink": {"broker": {"host": shared_broker[0], "port": shared_broker[1]}, "batch_max_wait_s": 0.1,
                       "receipt_timeout_s": 2, "session_expiry_s": 60, "reconnect_min_s": 0.1,
                       "reconnect_max_s": 1},
            "buses": [bus],
        }
        cfg = parse_config(yaml.safe_dump(settings))
        agent = Agent(cfg, clock_synced=lambda: True)
        with running_worker(site.url, f"mqtt://{shared_broker[0]}:{shared_broker[1]}"):
            agent.start()
            run_s = 6.0
            try:
                time.sleep(run_s)
            finally:
                agent.stop()  # the outbox keeps what is not yet receipted; a second agent drains it below
            sched = agent.schedulers[0]
            bus_stats, health = sched.stats(), sched.device_health()
            # the same gateway restarted with its bus unplugged: only the uplink runs, and empties the outbox
            drain = Agent(parse_config(yaml.safe_dump({**settings, "buses": []})), clock_synced=lambda: True)
            drain.start()
            try:
                assert wait_until(lambda: drain.outbox.stats().depth == 0, 30), drain.outbox.stats()
            finally:
                drain.stop()
    produced = produced_by(str(cfg.outbox_path), site.bus)
    readings_per_sample = len(get_spec(BUS_SPEC).points)
    result = account(site.url, produced, readings_per_message=readings_per_sample)
    result.check()
    assert result.stored == result.produced
    # (the worker's own counters also see other gateways on the shared broker: ask the database about ours)
    assert scalar(site.url, "SELECT count(*) FROM ft.dead_letters WHERE gateway_id = %s", site.gw) == 0

    # counted: the noise was seen as noise, at the master
    assert bus_stats["crc_errors"] + bus_stats["frame_errors"] >= 5, bus_stats
    # the other probes kept their schedule: a sample every poll interval, every one good
    quiet = [site.bus[0], site.bus[2]]
    for dev in quiet:
        assert len(produced[dev]) >= run_s / POLL_S - 3, (dev, len(produced[dev]), bus_stats)
        assert health[dev].state == "ok"
    # nothing bogus: each probe's stored moisture is what it read, or no value at all (a flagged failed poll)
    for dev, moisture in zip(site.bus, MOISTURE, strict=True):
        values = stored_values(site.url, dev, "soil_moisture")
        assert values and set(values) <= {moisture, None}, (dev, set(values))
        if dev in quiet:
            assert None not in values
    noisy_values = stored_values(site.url, site.bus[1], "soil_moisture")
    assert MOISTURE[1] in noisy_values and None in noisy_values  # through now and then; failed polls flagged
