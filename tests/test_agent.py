"""The agent end to end: simulated devices and nodes in, the cloud peer out; faults and bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from support.nodes import Node
from support.waiting import wait_until

from device_specs.registry import get_spec
from edge_agent.agent import Agent
from edge_agent.config import parse_config
from edge_agent.outbox import Outbox
from fieldtrust import processes
from fieldtrust.services.mosquitto import PrivateMosquitto
from hardware.cloud_peer import CloudPeer
from hardware.rtu_bus import RtuBusSimulator
from hardware.sim_device import SimulatedDevice
from hardware.tcp_server import TcpSimulator

REPO = Path(__file__).resolve().parents[1]


def agent_config(ids, tmp_path: Path, cloud: tuple[str, int], local: PrivateMosquitto | None, **sections) -> dict:
    cfg = {
        "gateway": {"id": ids["gw"], "tenant": ids["tenant"], "key_hex": ids["key"].hex(), "data_dir": str(tmp_path)},
        "intake": {"enabled": local is not None, "session_expiry_s": 60,
                   "broker": {"host": local.host, "port": local.port} if local else {}},
        "uplink": {"broker": {"host": cloud[0], "port": cloud[1]}, "batch_max_wait_s": 0.1, "receipt_timeout_s": 2,
                   "session_expiry_s": 60, "reconnect_min_s": 0.1, "reconnect_max_s": 1},
        "health": {"interval_s": 0.5},
    }
    for name, section in sections.items():
        cfg[name] = {**cfg.get(name, {}), **section} if isinstance(section, dict) else section
    return cfg


def rtu_bus(port: str, *devices: tuple[str, str, int]) -> dict:
    return {"id": "rs485", "kind": "rtu", "port": port, "baud": 9600, "parity": "E", "timeout_ms": 200,
            "devices": [{"id": d, "spec": s, "unit": u, "poll_interval_s": 0.3} for d, s, u in devices]}


def peer_for(ids, broker, **kw) -> CloudPeer:
    return CloudPeer(broker[0], broker[1], ids["tenant"], ids["gw"], ids["key"],
                     node_keys={ids["node"]: ids["node_key"]}, **kw)


def device_seqs(peer: CloudPeer, dev: str) -> list[int]:
    return sorted(k[2] for k in peer.stored.bodies if k[0] == dev)


# -- configuration ------------------------------------------------------------------------------


def test_the_example_config_is_valid():
    data = yaml.safe_load((REPO / "examples" / "gateway.yaml").read_text())
    data["gateway"]["key_hex"] = "00" * 32  # the example points at /etc/fieldtrust/gateway.key
    del data["gateway"]["key_file"]
    cfg = parse_config(yaml.safe_dump(data), "examples/gateway.yaml")
    assert [b.id for b in cfg.buses] == ["field-rs485", "pump-house"] and cfg.outbox.overflow == "drop-oldest"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("gateway: [not, a, mapping", "not valid YAML"),
        ("gateway:\n  id: gw-1\n  tenant: t\n", "key_file or key_hex"),
        ("gateway: {id: 'gw 1', tenant: t, key_hex: '%s'}\n" % ("00" * 32), "gateway.id"),
        ("gateway: {id: gw-1, tenant: t, key_hex: '%s'}\nuplink: {max_in_flight: 0}\n" % ("00" * 32),
         "uplink.max_in_flight"),
        ("gateway: {id: gw-1, tenant: t, key_hex: '%s'}\nbuses: [{id: b, kind: rtu, port: /dev/x, "
         "devices: [{id: d, spec: no-such-sensor}]}]\n" % ("00" * 32), "buses[0].devices[0].spec"),
        ("gateway: {id: gw-1, tenant: t, key_hex: 'zz'}\n", "gateway.key"),
    ],
)
def test_a_bad_config_exits_2_naming_the_field(tmp_path, text, names):
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    proc = processes.spawn([sys.executable, "-m", "fieldtrust.cli.main", "edge", "run", "--config", str(path)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _out, err = proc.communicate(timeout=30)
    finally:
        processes.stop(proc)
    assert proc.returncode == 2, err
    assert names in err and "Traceback" not in err


# -- in-process agent ---------------------------------------------------------------------------


def test_readings_and_node_frames_arrive_at_the_cloud(shared_broker, private_broker, ids, tmp_path):
    soil = SimulatedDevice(get_spec("jxct-soil-7in1"), unit_id=1, seed=3)
    soil.pin("soil_moisture", 23.4)
    soil.pin("soil_temperature", -1.5)
    remote = SimulatedDevice(get_spec("jxct-soil-7in1"), unit_id=7, seed=3)
    remote.pin("soil_moisture", 12.5)
    with RtuBusSimulator([soil], baud=9600, parity="E") as sim, TcpSimulator([remote]) as tcp:
        buses = [rtu_bus(sim.port, ("soil-1", "jxct-soil-7in1", 1)),
                 {"id": "tcp", "kind": "tcp", "host": "127.0.0.1", "tcp_port": tcp.port,
                  "devices": [{"id": "soil-tcp", "spec": "jxct-soil-7in1", "unit": 7, "poll_interval_s": 0.3}]}]
        cfg = parse_config(yaml.safe_dump(agent_config(ids, tmp_path, shared_broker, private_broker, buses=buses)))
        agent = Agent(cfg, clock_synced=lambda: True)
        node = Node(private_broker, ids["node"], ids["node_key"])
        with peer_for(ids, shared_broker) as peer:
            agent.start()
            try:
                assert wait_until(lambda: agent.intake.link.connected)
                time.sleep(0.2)
                node.send_frames(range(5))
                assert peer.wait_for(lambda p: len(device_seqs(p, "soil-1")) >= 3 and len(p.stored.node_signed) == 5
                                     and len(device_seqs(p, "soil-tcp")) >= 3)
                assert peer.wait_for(lambda p: any(h.devices.get(ids["node"]) for h in p.health))
            finally:
                node.close()
                agent.stop()
    assert set(peer.values("soil-1", "soil_moisture")) == {23.4}
    assert set(peer.values("soil-1", "soil_temperature")) == {-1.5}
    assert set(peer.values("soil-tcp", "soil_moisture")) == {12.5}
    for dev in ("soil-1", "soil-tcp"):
        assert device_seqs(peer, dev) == list(range(len(device_seqs(peer, dev))))
    assert peer.stored.node_signed == {(ids["node"], 1, s) for s in range(5)}  # node signatures verify
    health = peer.health[-1]
    assert health.gw == ids["gw"] and health.devices["soil-1"].state == "ok"
    assert health.counters["intake.accepted"] == 5 and health.rss_mb and health.disk_free_mb


def test_a_full_outbox_drops_the_oldest_and_says_so_in_health(shared_broker, private_broker, ids, tmp_path):
    cfg = parse_config(yaml.safe_dump(agent_config(
        ids, tmp_path, shared_broker, private_broker, outbox={"max_bytes": 65536}, uplink={"receipt_timeout_s": 60})))
    agent = Agent(cfg, clock_synced=lambda: True)
    node = Node(private_broker, ids["node"], ids["node_key"])
    with peer_for(ids, shared_broker, withhold=True) as peer:
        agent.start()
        try:
            assert wait_until(lambda: agent.intake.link.connected)
            time.sleep(0.2)
            node.send_frames(range(400))  # ~250 bytes each: half as much again as the outbox may hold
            # every frame captured (kept or dropped) before the agent stops, however loaded the machine
            assert wait_until(lambda: agent.outbox.stats().captured == 400, timeout=30)
            assert peer.wait_for(lambda p: bool(p.health) and p.health[-1].outbox.dropped > 0, timeout=15)
        finally:
            node.close()
            agent.stop()
    last = peer.health[-1]
    assert last.counters["outbox.dropped"] == last.outbox.dropped
    assert last.outbox.bytes <= 65536
    box = Outbox(tmp_path / "outbox.db", 65536)
    stats = box.stats()
    box.close()
    assert stats.captured == 400 and stats.depth + stats.dropped == 400  # every capture is kept or counted


# -- the agent as a process ---------------------------------------------------------------------


def start_agent(config: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "FIELDTRUST_ASSUME_CLOCK_SYNCED": "1"}
    with log.open("ab") as out:
        return processes.spawn([sys.executable, "-m", "fieldtrust.cli.main", "edge", "run", "--config", str(config)],
                               stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def test_kill_9_mid_batch_then_restart_loses_nothing(shared_broker, private_broker, ids, tmp_path):
    soil = SimulatedDevice(get_spec("jxct-soil-7in1"), unit_id=1, seed=4)
    soil.pin("soil_moisture", 31.0)
    log = tmp_path / "agent.log"
    with RtuBusSimulator([soil], baud=9600, parity="E") as sim:
        config = tmp_path / "gateway.yaml"
        config.write_text(yaml.safe_dump(agent_config(
            ids, tmp_path, shared_broker, private_broker, buses=[rtu_bus(sim.port, ("soil-1", "jxct-soil-7in1", 1))])))
        node = Node(private_broker, ids["node"], ids["node_key"])
        with peer_for(ids, shared_broker, withhold=True) as peer:
            agent = start_agent(config, log)
            try:
                assert peer.wait_for(lambda p: any(x.k == "birth" for x in p.presence), timeout=20), log.read_text()
                time.sleep(0.5)  # the intake subscribes
                node.send_frames(range(20))
                assert peer.wait_for(lambda p: len(p.stored.node_signed) == 20 and p.counts["batches"] >= 3)
                processes.kill9(agent)  # batches in flight, none receipted
                node.send_frames(range(20, 30))  # queued by the local broker for the agent's session
                peer.withhold = False
                agent = start_agent(config, log)
                assert peer.wait_for(lambda p: len(p.stored.node_signed) == 30, timeout=20), log.read_text()
                seen = len(device_seqs(peer, "soil-1"))
                assert peer.wait_for(lambda p: len(device_seqs(p, "soil-1")) > seen + 2)
            finally:
                node.close()
                rc = processes.stop(agent)
            assert rc == 0, log.read_text()  # SIGTERM is a clean stop
            assert peer.wait_for(lambda p: p.presence[-1].k == "will")
    seqs = device_seqs(peer, "soil-1")
    assert seqs == list(range(len(seqs))), "a reading is missing"  # none lost across kill -9
    assert peer.counts["duplicates"] > 0  # the unreceipted batches came again: at-least-once
    assert peer.counts["conflicts"] == 0 and set(peer.values("soil-1", "soil_moisture")) == {31.0}
    box = Outbox(tmp_path / "outbox.db", 1 << 30)
    try:
        stats = box.stats()
        assert box.integrity_check() == "ok"
        # every capture is at the cloud or still in the outbox (which may also hold stored, unreceipted ones)
        assert 30 + len(seqs) <= stats.captured <= 30 + len(seqs) + stats.depth
    finally:
        box.close()


def test_the_log_file_rotates(tmp_path):
    import logging

    from edge_agent.config import LoggingConfig
    from edge_agent.logging_setup import setup_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging(LoggingConfig(level="INFO", file=tmp_path / "logs" / "edge.log", max_bytes=65536, backups=2))
        for i in range(3000):
            logging.getLogger("edge_agent.test").info("line %d %s", i, "x" * 60)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["edge.log", "edge.log.1", "edge.log.2"]  # bounded: older backups were removed
    assert all((tmp_path / "logs" / f).stat().st_size <= 65536 for f in files)
