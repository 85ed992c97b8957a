"""The broker the project starts for itself: Mosquitto when installed, else amqtt (MQTT 3.1.1),
and the gateway agent and the cloud peer working over either (the demo on amqtt: tests/test_demo.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import psutil
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from support.nodes import Node
from support.readings import SW, capture_reading
from support.waiting import wait_until

from contract import models, topics
from contract.telemetry import sign
from device_specs.registry import get_spec
from edge_agent.agent import Agent
from edge_agent.config import BrokerConfig, GatewayIdentity, UplinkConfig, parse_config
from edge_agent.outbox import Outbox
from edge_agent.uplink import Uplink
from fieldtrust import processes
from fieldtrust.services.amqtt_broker import AmqttBroker
from fieldtrust.services.broker import BROKER_ENV, choose_kind, start_local_broker
from fieldtrust.services.mosquitto import PrivateMosquitto
from hardware.cloud_peer import CloudPeer
from hardware.rtu_bus import RtuBusSimulator
from hardware.sim_device import SimulatedDevice

REPO = Path(__file__).resolve().parents[1]
V311 = "3.1.1"


@pytest.fixture(scope="module")
def amqtt(tmp_path_factory):
    """A private amqtt for this module (node topics are the same for every gateway)."""
    with AmqttBroker(tmp_path_factory.mktemp("amqtt")) as broker:
        yield broker


def peer_for(ids, broker: AmqttBroker, **kw) -> CloudPeer:
    return CloudPeer(broker.host, broker.port, ids["tenant"], ids["gw"], ids["key"],
                     node_keys={ids["node"]: ids["node_key"]}, protocol=broker.protocol, **kw)


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for init to reap it has exited too)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def agent_config(ids, tmp_path: Path, broker: AmqttBroker, rtu_port: str) -> dict:
    link = {"host": broker.host, "port": broker.port, "protocol": broker.protocol}
    return {
        "gateway": {"id": ids["gw"], "tenant": ids["tenant"], "key_hex": ids["key"].hex(), "data_dir": str(tmp_path)},
        "buses": [{"id": "rs485", "kind": "rtu", "port": rtu_port, "baud": 9600, "parity": "E", "timeout_ms": 200,
                   "devices": [{"id": "soil-1", "spec": "jxct-soil-7in1", "unit": 1, "poll_interval_s": 0.3}]}],
        "intake": {"broker": link},
        "uplink": {"broker": link, "batch_max_wait_s": 0.1, "receipt_timeout_s": 2,
                   "reconnect_min_s": 0.1, "reconnect_max_s": 1},
        "health": {"interval_s": 0.5},
    }


def make_uplink(ids, box: Outbox, broker: AmqttBroker, **cfg) -> Uplink:
    gateway = GatewayIdentity(id=ids["gw"], tenant=ids["tenant"], key_hex=ids["key"].hex())
    link = BrokerConfig(host=broker.host, port=broker.port, protocol=broker.protocol)
    ucfg = UplinkConfig(broker=link, batch_max_wait_s=0.05, reconnect_min_s=0.1, reconnect_max_s=0.5, **cfg)
    return Uplink(gateway, ids["key"], ucfg, box, sw=SW)


def soil_seqs(peer: CloudPeer) -> list[int]:
    with peer._cond:
        return sorted(k[2] for k in peer.stored.bodies if k[0] == "soil-1")


# -- choosing and running the broker ------------------------------------------------------------


def test_mosquitto_is_chosen_when_on_the_path_and_amqtt_when_not(tmp_path, monkeypatch):
    monkeypatch.delenv(BROKER_ENV, raising=False)
    with start_local_broker(tmp_path / "mq") as broker:
        assert isinstance(broker, PrivateMosquitto) and broker.protocol == "5"
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without the mosquitto binary
    assert choose_kind() == "amqtt"


def test_the_environment_forces_amqtt_and_a_bad_value_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv(BROKER_ENV, "amqtt")
    with start_local_broker(tmp_path / "a") as broker:
        assert isinstance(broker, AmqttBroker) and broker.protocol == V311
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:6]}",
                             protocol=paho.MQTTv311)
        client.connect(broker.host, broker.port)
        client.loop_start()
        try:
            assert wait_until(client.is_connected, 5)
        finally:
            client.disconnect()
            client.loop_stop()
    monkeypatch.setenv(BROKER_ENV, "rabbitmq")
    with pytest.raises(ValueError, match=f"{BROKER_ENV} must be one of auto, mosquitto, amqtt; got 'rabbitmq'"):
        start_local_broker(tmp_path / "b")


def test_the_amqtt_process_ends_on_stop_and_with_its_parent(tmp_path):
    broker = AmqttBroker(tmp_path / "own").start()
    pid = broker.pid
    assert pid is not None and not gone(pid)
    broker.stop()
    assert gone(pid) and not broker.running

    # a parent that starts amqtt and then dies by SIGKILL (no clean-up runs in it)
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from fieldtrust.services.amqtt_broker import AmqttBroker
        broker = AmqttBroker(Path({str(tmp_path / 'orphan')!r})).start()
        print(broker.pid, flush=True)
        time.sleep(60)
    """)
    parent = processes.spawn([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=REPO)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not gone(child)
        processes.kill9(parent)
        assert wait_until(lambda: gone(child), 10), "amqtt outlived its parent"
    finally:
        processes.stop(parent)


def test_a_bad_amqtt_start_fails_with_its_log(tmp_path, amqtt):
    with pytest.raises(RuntimeError, match=r"amqtt did not start \(exit code 1\)"):
        AmqttBroker(tmp_path / "taken", port=amqtt.port).start()  # the port is in use


def test_a_client_gets_the_retained_messages_of_its_own_subscriptions_only(amqtt):
    tag = uuid.uuid4().hex[:8]
    got: list[str] = []

    def connect(name: str, subscribe: str | None) -> paho.Client:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{tag}", protocol=paho.MQTTv311)
        client.on_message = lambda _c, _u, msg: got.append(f"{name}:{msg.topic}")
        client.connect(amqtt.host, amqtt.port)
        client.loop_start()
        if subscribe is not None:
            client.subscribe(subscribe, 1)
        return client

    holder = connect("holder", f"t/{tag}/a/+")  # the broker now holds a filter matching the retained message
    publisher = connect("publisher", None)
    publisher.publish(f"t/{tag}/a/state", b"birth", qos=1, retain=True).wait_for_publish(5)
    assert wait_until(lambda: f"holder:t/{tag}/a/state" in got)
    stranger = connect("stranger", f"t/{tag}/b/+")
    try:
        time.sleep(0.5)  # room for a wrong delivery
        publisher.publish(f"t/{tag}/b/state", b"birth", qos=1, retain=True).wait_for_publish(5)
        assert wait_until(lambda: f"stranger:t/{tag}/b/state" in got)
        assert not any(g.startswith("stranger:") and "/a/" in g for g in got), got
    finally:
        for leaf in ("a", "b"):  # clear what this test retained
            publisher.publish(f"t/{tag}/{leaf}/state", b"", qos=1, retain=True).wait_for_publish(5)
        for client in (holder, publisher, stranger):
            client.disconnect()
            client.loop_stop()


# -- the agent over MQTT 3.1.1 ------------------------------------------------------------------


def test_gateway_readings_and_node_frames_reach_the_cloud_over_mqtt_311(amqtt, ids, tmp_path):
    soil = SimulatedDevice(get_spec("jxct-soil-7in1"), unit_id=1, seed=5)
    soil.pin("soil_moisture", 27.5)
    with RtuBusSimulator([soil], baud=9600, parity="E") as sim:
        cfg = parse_config(yaml.safe_dump(agent_config(ids, tmp_path, amqtt, sim.port)))
        agent = Agent(cfg, clock_synced=lambda: True)
        node = Node(amqtt, ids["node"], ids["node_key"])  # MQTT 3.1.1, as the firmware speaks
        with peer_for(ids, amqtt) as peer:
            agent.start()
            try:
                assert agent.intake is not None and wait_until(lambda: agent.intake.link.connected)
                node.send_frames(range(5))
                assert peer.wait_for(lambda p: len(p.stored.node_signed) == 5 and len(soil_seqs(p)) >= 3)
                assert peer.wait_for(lambda p: any(h.devices.get(ids["node"]) for h in p.health))
                assert wait_until(lambda: agent.uplink.counters["items_confirmed"] >= 8)  # receipts came back
            finally:
                node.close()
                agent.stop()
    assert set(peer.values("soil-1", "soil_moisture")) == {27.5}
    assert peer.stored.node_signed == {(ids["node"], 1, s) for s in range(5)}  # node signatures verify
    assert peer.counts["conflicts"] == 0 and agent.uplink.link.max_packet_size is None  # 3.1.1: no CONNACK limit
    assert any(p.k == "birth" and p.gw == ids["gw"] for p in peer.presence)


def test_an_agent_restart_over_mqtt_311_loses_nothing(amqtt, ids, tmp_path):
    soil = SimulatedDevice(get_spec("jxct-soil-7in1"), unit_id=1, seed=6)
    with RtuBusSimulator([soil], baud=9600, parity="E") as sim:
        cfg = parse_config(yaml.safe_dump(agent_config(ids, tmp_path, amqtt, sim.port)))
        node = Node(amqtt, ids["node"], ids["node_key"])  # MQTT 3.1.1, as the firmware speaks
        with peer_for(ids, amqtt) as peer:
            agent = Agent(cfg, clock_synced=lambda: True)
            agent.start()
            try:
                assert agent.intake is not None and wait_until(lambda: agent.intake.link.connected)
                time.sleep(0.5)  # the intake subscribes on CONNACK: frames sent before its SUBACK would have no taker
                node.send_frames(range(5))
                assert peer.wait_for(lambda p: len(p.stored.node_signed) == 5 and len(soil_seqs(p)) >= 2, timeout=30)
            finally:
                agent.stop()
            # the agent is away: amqtt queues these for its persistent intake session
            node.send_frames(range(5, 12))
            agent = Agent(cfg, clock_synced=lambda: True)
            agent.start()
            try:
                assert peer.wait_for(lambda p: len(p.stored.node_signed) == 12, timeout=15), peer.counts
                before = len(soil_seqs(peer))
                assert peer.wait_for(lambda p: len(soil_seqs(p)) >= before + 2)
                for scheduler in agent.schedulers:  # no new readings: let the outbox drain
                    scheduler.stop()
                assert wait_until(lambda: agent.outbox.stats().depth == 0), agent.outbox.stats()
            finally:
                node.close()
                agent.stop()
    assert any(p.k == "will" for p in peer.presence)  # the first agent's clean stop announced it
    assert peer.stored.node_signed == {(ids["node"], 1, s) for s in range(12)}
    seqs = soil_seqs(peer)
    assert seqs == list(range(len(seqs)))  # gateway readings continue across the restart without a gap
    assert peer.counts["conflicts"] == 0


def test_receipts_sent_while_the_uplink_is_away_arrive_when_it_returns(amqtt, ids, tmp_path):
    box = Outbox(tmp_path / "outbox.db", 1 << 20)
    try:
        for i in range(3):
            capture_reading(box, "soil-1", float(i))
        with peer_for(ids, amqtt, withhold=True) as peer:
            up = make_uplink(ids, box, amqtt, receipt_timeout_s=60)
            up.start()
            try:
                assert peer.wait_for(lambda p: p.counts["batches"] == 1)
            finally:
                up.stop()
            assert peer.wait_for(lambda p: any(x.k == "will" for x in p.presence))  # 3.1.1 clean stop
            receipt = models.Receipt(k="receipt", gw=ids["gw"], at=1, bids=[models.batch_id(ids["gw"], 1, 0)])
            frame = sign(ids["key"], receipt.model_dump_json().encode())
            peer._client.publish(topics.gateway(ids["tenant"], ids["gw"], "receipt"), frame, qos=1).wait_for_publish(5)
            up = make_uplink(ids, box, amqtt, receipt_timeout_s=60)  # the peer still withholds: only the queued
            up.start()                                                 # receipt can empty the outbox
            try:
                assert wait_until(lambda: box.stats().depth == 0), (up.all_counters(), box.stats())
            finally:
                up.stop()
        assert up.counters["receipts"] == 1 and box.stats().confirmed == 3
    finally:
        box.close()
